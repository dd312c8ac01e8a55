"""Key files created on first start, safely when a service's api and worker start together.

A key (VAPID, journal signing, webhook sealing) lives in a file beside the
database, mode 0600. Both processes of a service may find it missing at the same
moment: each writes its candidate to a temporary file and links it into place,
which succeeds for exactly one of them; the others read the winner's complete
file. A plain ``O_EXCL`` create let the loser either fail or read a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def read_or_create(path: Path, make: Callable[[], bytes]) -> tuple[bytes, bool]:
    """The file's content, creating it with ``make()`` if missing; and whether this call created it."""
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(make())
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return path.read_bytes(), False
        return path.read_bytes(), True
    finally:
        os.unlink(temporary)
