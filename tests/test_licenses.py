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
