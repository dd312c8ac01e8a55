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


OWNER_ONLY_UMASK = 0o077


def owner_only_umask() -> None:
    """Files and directories this process creates from now on are its owner's alone (0600/0700).

    Called where a service's process starts (api, worker, operator commands): SQLite databases,
    their WAL files, key files and uploads under ``var/`` hold customer data and secrets.
    """
    os.umask(OWNER_ONLY_UMASK)


def owner_only_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if missing (its directory 0700), or take group and other
    access away from it and its SQLite companions (``-wal``, ``-shm``, ``-journal``) if present.

    SQLite creates its WAL and journal files with the database file's mode, so a database made
    0600 here stays owner-only whatever the umask.
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for candidate in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        with contextlib.suppress(FileNotFoundError):
            mode = candidate.stat().st_mode & 0o777
            if mode & 0o077:
                candidate.chmod(mode & 0o700)
