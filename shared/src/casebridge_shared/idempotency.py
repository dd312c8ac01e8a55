"""``Idempotency-Key`` on creating POSTs: the same key with the same body creates once.

The created row keeps the key and a fingerprint of the request (``request_hash``),
under a unique constraint on (scope, author, key) that the service declares: a retry
finds the row and answers it again with ``Idempotent-Replayed: true``; the same key
with another body is a 422 (the client reused a key by mistake); two requests with the
same key at the same moment meet at the constraint and the loser gets a 409 to retry.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Header, Response

from casebridge_shared.openapi import IDEMPOTENT_REPLAYED
from casebridge_shared.problems import Unprocessable

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
_FIELD = "header.Idempotency-Key"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_KEY_HEADER,
        min_length=1,
        max_length=200,
        description="Retry-safe creation: the same key with the same body answers the first result again "
        "(with Idempotent-Replayed: true) instead of creating another; with another body it is a 422",
    ),
]
"""The optional ``Idempotency-Key`` request header of a creating POST."""


def request_hash(*parts: str) -> str:
    """A fingerprint of what a request asks for, kept with the row it created."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\x00")  # ("ab", "c") and ("a", "bc") differ
    return digest.hexdigest()


def check_same_request(earlier_hash: str | None, this_hash: str, what: str) -> None:
    """422 when a key is reused for a different request: never answer another's result."""
    if earlier_hash != this_hash:
        raise Unprocessable(f"this Idempotency-Key was already used with a different {what}", field=_FIELD)


def mark_replayed(response: Response, replayed: bool) -> None:
    if replayed:
        response.headers[IDEMPOTENT_REPLAYED] = "true"
