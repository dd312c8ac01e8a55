"""Users' uploads (staff attachments, customers' order files): streamed into the service's
object store (casebridge_shared.storage: local files or S3) while hashing, never held in
memory whole.

The store keeps a file only once it is complete and within the limits; anything that
goes wrong on the way (too large, wrong type, the client gone) leaves nothing behind.

File names lose their path and their control and format characters (a
right-to-left override makes ``x\u202efdp.png`` show as ``xgnp.pdf``). Active
content is refused (415): media types a browser runs (HTML, SVG, XML, script)
whatever the settings allow, a name whose extension says so, and a file declared
as something without magic bytes (``text/plain``) whose first bytes are markup.
Downloads are always attachments, with ``nosniff`` and a sandboxing policy.

Moved here from case-handling's ``cases/storage.py`` so order-intake's customer files
get exactly the same checks (issue 26: "size and type limits as for staff uploads").
``field`` names the form field in the problems (``body.file`` for staff, ``body.files``
for customers).
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import UploadFile

from casebridge_shared.db import new_id
from casebridge_shared.files import ACTIVE_MEDIA_TYPES, SNIFF_BYTES, active_content, clean_file_name
from casebridge_shared.problems import PayloadTooLarge, Unprocessable, UnsupportedMediaType
from casebridge_shared.storage import ObjectStore, ObjectTooLarge, chunks_of

CHUNK = 1024 * 1024
# What staff and customers may upload unless a service's settings say otherwise.
DEFAULT_UPLOAD_TYPES = (
    "application/pdf",
    "image/png",
    "image/jpeg",
    "text/plain",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/msword",
)
DEFAULT_UPLOAD_MAX_BYTES = 20 * 1024 * 1024
# What the first bytes of a file must be for the media types we can recognise;
# a file that claims to be a PDF and is not is refused.
MAGIC: dict[str, tuple[bytes, ...]] = {
    "application/pdf": (b"%PDF-",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": (b"PK\x03\x04",),
    "application/msword": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",),
}


@dataclass(frozen=True)
class StoredFile:
    storage_key: str
    file_name: str
    media_type: str
    size: int
    sha256: str


def safe_file_name(raw: str | None, field: str = "body.file") -> str:
    """The name to show and offer on download: no path, no control or format characters."""
    name = clean_file_name(raw)
    if not name:
        raise Unprocessable("the file needs a name", field=field)
    return name


def media_type_of(upload: UploadFile, file_name: str, allowed: list[str], field: str = "body.file") -> str:
    declared = (upload.content_type or "").split(";", 1)[0].strip().lower()
    if not declared or declared == "application/octet-stream":
        declared = (mimetypes.guess_type(file_name)[0] or "application/octet-stream").lower()
    named = (mimetypes.guess_type(file_name)[0] or "").lower()
    if declared in ACTIVE_MEDIA_TYPES or named in ACTIVE_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"active content ({declared if declared in ACTIVE_MEDIA_TYPES else named}) is not accepted",
            field=field,
        )
    if declared not in allowed:
        raise UnsupportedMediaType(
            f"files of type {declared} are not accepted; allowed: {', '.join(allowed)}",
            field=field,
        )
    return declared


async def store(
    upload: UploadFile, objects: ObjectStore, *, max_bytes: int, allowed: list[str], field: str = "body.file"
) -> StoredFile:
    file_name = safe_file_name(upload.filename, field)
    media_type = media_type_of(upload, file_name, allowed, field)
    key = new_id()
    try:
        written = await objects.put(key, _checked(upload, media_type, field), max_bytes=max_bytes)
    except ObjectTooLarge as exc:
        raise PayloadTooLarge(f"the file exceeds the limit of {max_bytes} bytes", field=field) from exc
    return StoredFile(key, file_name, media_type, written.size, written.sha256)


async def _checked(upload: UploadFile, media_type: str, field: str) -> AsyncIterator[bytes]:
    """The upload's chunks; raising at the end (empty, not what it claims) makes the store keep nothing."""
    head = b""
    size = 0
    async for chunk in chunks_of(upload.read, CHUNK):
        size += len(chunk)
        if len(head) < SNIFF_BYTES:
            head += chunk[: SNIFF_BYTES - len(head)]
        yield chunk
    if size == 0:
        raise Unprocessable("the file is empty", field=field)
    magic = MAGIC.get(media_type)
    if magic is not None and not head.startswith(magic):
        raise UnsupportedMediaType(f"the file's content is not {media_type}", field=field)
    if magic is None and active_content(head):
        raise UnsupportedMediaType(
            f"the file is declared {media_type} but its content is markup (HTML, XML, SVG or "
            "script), which is not accepted",
            field=field,
        )
