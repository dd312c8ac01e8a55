"""Optimistic concurrency over HTTP: ``ETag`` carries the version, ``If-Match`` checks it."""

from __future__ import annotations

from casebridge_shared.problems import PreconditionFailed, PreconditionRequired


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version(if_match: str | None, *, required: bool = True) -> int | None:
    """The version the client last saw, from ``If-Match`` (``"3"``, ``W/"3"`` or ``3``)."""
    if if_match is None or not if_match.strip():
        if required:
            raise PreconditionRequired(
                "send If-Match with the ETag from your last read of this resource",
                field="header.If-Match",
            )
        return None
    value = if_match.strip()
    if value == "*":
        return None
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    try:
        return int(value)
    except ValueError as exc:
        raise PreconditionFailed(
            f"If-Match {if_match!r} is not an ETag of this resource", field="header.If-Match"
        ) from exc


def check_version(current: int, expected: int | None) -> None:
    if expected is not None and expected != current:
        raise PreconditionFailed(
            f"the resource is at version {current}, you sent {expected}; reload and retry",
            field="header.If-Match",
            current_version=current,
        )
