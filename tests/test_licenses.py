"""No GPL-family dependency: the project is Apache-2.0 (pinned set = constraints.txt)."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPYLEFT = re.compile(r"\b(A|L)?GPL|GNU (Affero |Lesser |Library )?General Public", re.IGNORECASE)


def _pinned() -> list[str]:
    names = []
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            names.append(line.split("==", 1)[0].split("[", 1)[0].split(";", 1)[0].strip())
    return names


def license_of(name: str) -> str:
    meta = metadata(name)
    parts = [meta.get("License-Expression") or "", (meta.get("License") or "").splitlines()[0:1]]
    text = " ".join(p if isinstance(p, str) else " ".join(p) for p in parts)
    classifiers = [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    return (text + " " + " ".join(classifiers)).strip()


def test_license_check_recognises_gpl() -> None:
    assert COPYLEFT.search("License :: OSI Approved :: GNU General Public License v3 (GPLv3)")
    assert COPYLEFT.search("LGPL-2.1-or-later")
    assert not COPYLEFT.search("Apache-2.0 OR BSD-3-Clause")


def test_no_dependency_is_gpl_licensed() -> None:
    pinned = _pinned()
    assert len(pinned) > 30, "constraints.txt pins the whole dependency tree"
    offenders, unknown = [], []
    for name in pinned:
        try:
            text = license_of(name)
        except PackageNotFoundError:
            continue  # pinned for another platform only
        if not text:
            unknown.append(name)
        elif COPYLEFT.search(text):
            offenders.append(f"{name}: {text}")
    assert not offenders, offenders
    assert not unknown, f"no license metadata, check by hand: {unknown}"


def test_vendored_docs_viewers_are_permissively_licensed() -> None:
    """Swagger UI and ReDoc, vendored for the offline docs pages (issue 26): each served file
    sits next to its package's licence (Apache-2.0 or MIT), the licence texts and the bundles'
    third-party notices name no GPL-family licence, and the README lists every file."""
    from casebridge_shared.web import DOCS_ASSET_FILES, DOCS_ASSETS

    readme = (DOCS_ASSETS / "README.md").read_text()
    for name in DOCS_ASSET_FILES:
        path = DOCS_ASSETS / name
        assert path.is_file(), name
        assert path.name in readme, f"{name} is not in docs_assets/README.md"
        if path.parent == DOCS_ASSETS:
            continue  # ours (swagger-init.js), Apache-2.0 like the project
        licence = (path.parent / "LICENSE").read_text()
        assert re.search(r"Apache License|The MIT License", licence), path.parent
        assert not COPYLEFT.search(licence), path.parent
        notices = path.with_name(path.name + ".LICENSE.txt")
        if notices.exists():
            assert not COPYLEFT.search(notices.read_text()), notices
