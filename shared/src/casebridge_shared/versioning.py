"""Optimistic concurrency over HTTP: ``ETag`` carries the version, ``If-Match`` checks it.

Routes take the version the client last saw as a dependency, never by parsing the
header themselves::

    async def update_order(..., version: IfMatchRequired) -> Any:   # 428 without it
    async def claim_case(..., version: IfMatch) -> Any:             # no check without it

``IfMatchRequired`` declares the header required in the OpenAPI; its absence is
answered 428 Precondition Required as problem+json (not FastAPI's 422: see
:func:`casebridge_shared.problems.install_problem_handlers`). A tag that names no
version of the resource, or a stale one, is answered 412 Precondition Failed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Response, status

from casebridge_shared.params import INT32_MAX
from casebridge_shared.problems import PreconditionFailed, PreconditionRequired

IF_MATCH_HEADER = "If-Match"
IF_NONE_MATCH_HEADER = "If-None-Match"
_FIELD = "header.If-Match"
_DESCRIPTION = (
    'The ETag from your last read of this resource (`"3"`; `W/"3"` and `3` are accepted too), '
    "or `*` for whatever version it is at. A stale one is answered 412 Precondition Failed."
)


def etag(version: int) -> str:
    return f'"{version}"'


def parse_entity_tag(value: str, *, allow_any: bool = True) -> int | None:
    """The version an ``If-Match`` value names: ``"3"``, ``W/"3"`` (weak) or a bare ``3``.

    ``*`` (any current version) gives None, i.e. no check, where ``allow_any``.
    Anything else is not an ETag this server hands out: 412, as a stale one.
    """
    text = value.strip()
    if text == "*" and allow_any:
        return None
    # The ETags we send are strong, but a proxy may weaken them (RFC 9110 8.8.1): the
    # version is the same, so a weak tag is compared as if it were strong.
    if text.startswith("W/"):
        text = text[2:]
    if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
        text = text[1:-1]
    # No version passes INTEGER's range (a larger number would fail in SQL, not here).
    if text.isascii() and text.isdigit() and int(text) <= INT32_MAX:
        return int(text)
    raise PreconditionFailed(f"If-Match {value!r} is not an ETag of this resource", field=_FIELD)


def expected_version(if_match: str | None, *, required: bool = True) -> int | None:
    """The version the client last saw, from an ``If-Match`` value (None: not sent)."""
    if if_match is None or not if_match.strip():
        if required:
            raise PreconditionRequired(
                "send If-Match with the ETag from your last read of this resource",
                field=_FIELD,
            )
        return None
    return parse_entity_tag(if_match)


async def _if_match_required(
    # Required here, so the OpenAPI says so; a request without it gets 428, not 422
    # (the problem handlers turn that one missing-header error into PreconditionRequired).
    if_match: Annotated[str, Header(alias=IF_MATCH_HEADER, description=_DESCRIPTION)],
) -> int | None:
    return expected_version(if_match, required=True)


async def _if_match_optional(
    if_match: Annotated[str | None, Header(alias=IF_MATCH_HEADER, description=_DESCRIPTION)] = None,
) -> int | None:
    return expected_version(if_match, required=False)


IfMatchRequired = Annotated[int | None, Depends(_if_match_required)]
"""The version from ``If-Match``, which the route requires (428 without it; None for ``*``)."""

IfMatch = Annotated[int | None, Depends(_if_match_optional)]
"""The version from ``If-Match`` where sent (None: not sent or ``*``, the write is not checked)."""


def check_version(current: int, expected: int | None) -> None:
    if expected is not None and expected != current:
        raise PreconditionFailed(
            f"the resource is at version {current}, you sent {expected}; reload and retry",
            field=_FIELD,
            current_version=current,
        )


IfNoneMatch = Annotated[
    str | None,
    Header(
        alias=IF_NONE_MATCH_HEADER,
        max_length=1000,
        description="The ETags of the copies you hold: if the resource is still at one of them, "
        "the answer is 304 Not Modified with no body",
    ),
]
"""The optional ``If-None-Match`` of a conditional GET (see :func:`not_modified`)."""


def not_modified(if_none_match: str | None, version: int) -> Response | None:
    """304 Not Modified (with the ETag) when the client's copy is at ``version``; else None.

    Weak comparison (RFC 9110 13.1.2): ``W/"3"`` matches ``"3"``. A tag that is not
    one of ours simply does not match: the client gets the resource.
    """
    if if_none_match is None:
        return None
    current = etag(version)
    for tag in if_none_match.split(","):
        text = tag.strip()
        if text.startswith("W/"):
            text = text[2:]
        if text == "*" or text == current:
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": current})
    return None
