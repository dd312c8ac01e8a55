"""Every relative link in the Markdown docs points at a file that exists (ADR renumbering,
moved docs): a newcomer following a link must not land on nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")
DOCS = sorted(
    p for p in [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("deploy/**/*.md")] if p.is_file()
)


def relative_targets(doc: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # absolute URLs and in-page anchors
        targets.append(target.split("#", 1)[0])
    return targets


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_in_the_docs_resolves(doc: Path) -> None:
    missing = [t for t in relative_targets(doc) if t and not (doc.parent / t).exists()]
    assert not missing, f"{doc.relative_to(ROOT)} links to missing files: {missing}"


def test_the_link_check_sees_a_broken_link(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("[gone](adr/0000-gone.md) [web](https://example.org) [here](#top)\n")
    assert relative_targets(doc) == ["adr/0000-gone.md"]
