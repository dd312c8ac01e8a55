"""Data classification of event fields (issue 27, section 6; docs/events/classification.md).

Every field of every published payload declares one level, in the code, as
``Annotated[str, PERSONAL]``: the level lands in the generated JSON Schemas and
the AsyncAPI document as the annotation ``x-classification``, which consumers
and a DPO can read without the code. An annotation, not a constraint: changing
it is not a breaking change (``casebridge contracts compat`` ignores it).

The levels follow the GDPR's own distinctions (Art. 4(1) personal data, Art. 4(5)
pseudonymisation, Art. 9/10 special categories and criminal data) plus the two
non-personal levels every information-security policy has, ordered from least
to most protected so that an object is as protected as its most protected part.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo

KEYWORD = "x-classification"


class Classification(StrEnum):
    """One level; the order of declaration is the order of protection."""

    # Meant for anyone: the catalog, the journal's signed checkpoints.
    PUBLIC = "public"
    # Operational data about things (ids of orders, cases, files; statuses; times): not
    # personal on its own, but a store that joins it to a person inherits that level.
    INTERNAL = "internal"
    # An identifier of a person (user, customer, staff) that names nobody without
    # Casebridge's tables: still personal data under the GDPR (Recital 26).
    PSEUDONYMOUS = "pseudonymous"
    # Identifies a person directly: name, email, phone, IP address, user agent.
    PERSONAL = "personal"
    # Free text and file names about a client's legal matter: may reveal special categories
    # (Art. 9), criminal offences (Art. 10) and is covered by legal professional privilege.
    SENSITIVE_PERSONAL = "sensitive-personal"

    @property
    def rank(self) -> int:
        return list(Classification).index(self)


def classified(level: Classification) -> FieldInfo:
    """A field annotation that writes ``level`` into the field's JSON Schema."""
    info: FieldInfo = Field(json_schema_extra={KEYWORD: level.value})
    return info


PUBLIC = classified(Classification.PUBLIC)
INTERNAL = classified(Classification.INTERNAL)
PSEUDONYMOUS = classified(Classification.PSEUDONYMOUS)
PERSONAL = classified(Classification.PERSONAL)
SENSITIVE_PERSONAL = classified(Classification.SENSITIVE_PERSONAL)


def highest(levels: Any) -> Classification:
    """The most protected of ``levels`` (``PUBLIC`` for none)."""
    found = [Classification(level) for level in levels]
    return max(found, key=lambda level: level.rank, default=Classification.PUBLIC)
