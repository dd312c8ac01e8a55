"""Request field types: integers bounded to what the database columns hold, PATCH fields that cannot be null.

A bare ``int`` accepts ``99999999999999999999``, which no SQL integer column
holds: SQLite raises ``OverflowError`` and PostgreSQL a ``DataError`` while
binding it, i.e. a 500. These types bound the value at the edge instead, so
such input gets a 422 naming the field, and the OpenAPI documents the range.
Use them for every integer that reaches SQL (ids, indexes, offsets, versions).
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from annotated_types import Ge, Le
from pydantic import BeforeValidator
from pydantic.json_schema import SkipJsonSchema

T = TypeVar("T")

INT32_MAX = 2**31 - 1
"""The largest value of an ``INTEGER`` column (PostgreSQL's ``int4``)."""

JSON_INT_MAX = 2**53 - 1
"""The largest integer JSON carries exactly (RFC 8785, JavaScript), below ``BIGINT``'s 2**63 - 1.

Positions and offsets are written into journal entries and read by browsers: they
stay within this, which no real table reaches.
"""

Int32Id = Annotated[int, Ge(1), Le(INT32_MAX)]
"""The id of a row keyed by an ``INTEGER`` autoincrement column."""

Int32Count = Annotated[int, Ge(0), Le(INT32_MAX)]
"""A sequence number or version kept in an ``INTEGER`` column (0 allowed)."""

BigIndex = Annotated[int, Ge(0), Le(JSON_INT_MAX)]
"""A position compared with ``BIGINT`` columns: journal indexes, offsets."""

BigSize = Annotated[int, Ge(1), Le(JSON_INT_MAX)]
"""A size of at least one compared with ``BIGINT`` columns: tree sizes."""


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("may be left out, but not null: this field cannot be empty")
    return value


Omittable = Annotated[T | SkipJsonSchema[None], BeforeValidator(_not_null)]
"""A PATCH field that may be left out (then it keeps its value) but not sent as ``null``.

For a field whose column cannot be empty: ``null`` gets a 422 naming the field,
and the OpenAPI says the field is not nullable. Constraints go on the inner type,
e.g. ``Omittable[Annotated[str, Field(min_length=1)]] = None``.
"""
