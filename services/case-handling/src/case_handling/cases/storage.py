"""Attachment files on disk: the shared upload checks and storage (casebridge_shared.uploads).

Kept as a module of its own so case-handling's code names its storage in one place.
"""

from __future__ import annotations

from casebridge_shared.uploads import (
    CHUNK,
    MAGIC,
    StoredFile,
    media_type_of,
    path_of,
    remove,
    safe_file_name,
    store,
)

__all__ = ["CHUNK", "MAGIC", "StoredFile", "media_type_of", "path_of", "remove", "safe_file_name", "store"]
