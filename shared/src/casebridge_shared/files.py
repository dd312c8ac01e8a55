"""Users' files: names that show what they are, and no active content posing as text.

- ``clean_file_name``: the last path segment, NFC, without Unicode control and format
  characters (categories Cc, Cf, incl. the bidi overrides U+202A-U+202E and isolates
  U+2066-U+2069 that make ``invoice\u202efdp.png`` show as ``invoicegnp.pdf``; also
  Cs, Co, Cn and the line/paragraph separators). The name a download offers is what
  the file is called, in the order it is written.
- ``active_content``: whether a file's first bytes are markup a browser would run or
  render (HTML, XML, SVG, script), for types that do not announce their content with
  magic bytes (``text/plain``). Such a file is refused, not stored.
"""

from __future__ import annotations

import re
import unicodedata

# Media types that run in a browser: never accepted as attachments, whatever the settings say.
ACTIVE_MEDIA_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/javascript",
        "application/javascript",
        "application/ecmascript",
        "text/ecmascript",
        "application/x-shockwave-flash",
    }
)

_SEPARATORS = re.compile(r"[/\\]+")
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# WHATWG MIME sniffing's HTML patterns (a tag name then a space or ">"), XML, SVG and a
# few more tags browsers act on, looked for at the start and anywhere in the first bytes.
_ACTIVE_START = re.compile(
    rb"^<(!doctype\s+html|html|head|script|iframe|h1|div|font|table|a|style|title|b|body|br|p|"
    rb"svg|\?xml|!--|meta|link|object|embed|form|img|xsl:|math)[\s>/]",
    re.IGNORECASE,
)
_ACTIVE_ANYWHERE = re.compile(
    rb"<(script|html|svg|iframe|object|embed|body|meta\s+http-equiv|\?xml|!doctype)[\s>/]|javascript:",
    re.IGNORECASE,
)
SNIFF_BYTES = 1024
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def clean_file_name(raw: str | None) -> str:
    """``raw`` without its path and without characters that hide or reorder what it shows
    (may be empty: the caller decides what a nameless file is called)."""
    name = unicodedata.normalize("NFC", raw or "")
    name = "".join(ch for ch in name if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    name = _SEPARATORS.split(name)[-1]
    return name.strip(" .")[-255:]


def active_content(head: bytes) -> bool:
    """The first bytes of a file (``SNIFF_BYTES``) are HTML, XML, SVG or script."""
    text = head[:SNIFF_BYTES]
    for bom in _BOMS:
        if text.startswith(bom):
            text = text[len(bom) :]
            break
    if text.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00<\x00" in text or b"<\x00" in text[:4]:
        # UTF-16: look at it with the zero bytes taken out.
        text = text.replace(b"\x00", b"")
    stripped = text.lstrip(b" \t\r\n\x0c")
    return bool(_ACTIVE_START.match(stripped) or _ACTIVE_ANYWHERE.search(text))
