"""Attachment files: the shared upload checks (casebridge_shared.uploads) into the service's
object store (casebridge_shared.storage: local files or S3, chosen in bootstrap.py).

Kept as a module of its own so case-handling's code names its storage in one place.
"""

from __future__ import annotations

from casebridge_shared.storage import download_response
from casebridge_shared.uploads import CHUNK, MAGIC, StoredFile, media_type_of, safe_file_name, store

__all__ = ["CHUNK", "MAGIC", "StoredFile", "download_response", "media_type_of", "safe_file_name", "store"]
