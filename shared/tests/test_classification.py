"""Every field of every published event is classified, and docs/events/classification.md says so.

The levels are declared on the payload models (casebridge_shared.classification)
and reach the generated schemas as ``x-classification``; these tests walk the
schemas (on disk, generated now, and the AsyncAPI components) so that a field
added without a level, however deep, fails the suite.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Annotated, Any, ClassVar

import pytest
import yaml
from pydantic import BaseModel

from casebridge_shared import contracts
from casebridge_shared.classification import (
    INTERNAL,
    KEYWORD,
    PERSONAL,
    Classification,
)
from casebridge_shared.events import CATALOG_TOPIC, IDENTITY_TOPIC, ORDERS_TOPIC, EventPayload

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events"
ORDER_PLACED = "casebridge.orders.order-placed.v1"
LEVELS = {level.value for level in Classification}
RANK = {level.value: level.rank for level in Classification}


@pytest.fixture(scope="module")
def all_contracts() -> list[contracts.EventContract]:
    return contracts.discover()


def _on_disk() -> dict[str, dict[str, Any]]:
    return {
        path.name.removesuffix(".json"): json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((DOCS / contracts.SCHEMAS_DIR).glob("*.json"))
    }


def _unclassified(schema: dict[str, Any]) -> list[str]:
    return [path for path, level in contracts.field_classifications(schema) if level not in LEVELS]


# --- every field has a level -------------------------------------------------------------------------


def test_every_field_of_every_published_event_is_classified(
    all_contracts: list[contracts.EventContract],
) -> None:
    generated = contracts.current_schemas(all_contracts)
    on_disk = _on_disk()
    assert set(on_disk) == set(generated)
    for event_type in generated:
        for schema in (generated[event_type], on_disk[event_type]):
            fields = contracts.field_classifications(schema)
            assert any(path.startswith("data.") for path, _ in fields), event_type
            assert _unclassified(schema) == [], f"{event_type}: fields without a known {KEYWORD}"


def test_every_field_in_the_asyncapi_document_is_classified() -> None:
    document = yaml.safe_load((DOCS / contracts.ASYNCAPI_FILE).read_text(encoding="utf-8"))
    components: dict[str, Any] = document["components"]["schemas"]
    messages = document["components"]["messages"]
    assert messages
    for event_type in messages:
        walked = contracts._classified(components[event_type], "", components, ())
        assert any(path.startswith("data.") for path, _ in walked)
        assert [path for path, level in walked if level not in LEVELS] == [], event_type


class _Line(BaseModel):
    sku: Annotated[str, INTERNAL]
    note: str  # no level: must be found


class _Probe(EventPayload):
    topic: ClassVar[str] = ORDERS_TOPIC  # type: ignore[misc]

    lines: Annotated[list[_Line], INTERNAL]
    owner: Annotated[_Line, PERSONAL]
    tags: list[str]
    named: Annotated[str | None, PERSONAL]


# Set after the class exists, so that the probe is not registered as a published event type.
_Probe.event_type = "casebridge.test.probe.v1"  # type: ignore[misc]


def test_the_walk_finds_a_missing_level_in_nested_objects_and_arrays() -> None:
    schema = contracts.event_schema(contracts.EventContract(_Probe, "test"))
    assert sorted(_unclassified(schema)) == ["data.lines[].note", "data.owner.note", "data.tags"]
    levels = dict(contracts.field_classifications(schema))
    assert levels["data.owner"] == "personal" and levels["data.named"] == "personal"
    assert levels["data"] == "personal"  # as protected as its most protected field
    assert levels["partitionkey"] == "pseudonymous"
    assert _Probe.event_type not in EventPayload.registry


def test_an_object_is_at_least_as_protected_as_each_of_its_fields(
    all_contracts: list[contracts.EventContract],
) -> None:
    for event_type, schema in contracts.current_schemas(all_contracts).items():
        levels = {path: level for path, level in contracts.field_classifications(schema) if level}
        for path, level in levels.items():
            parent = re.sub(r"(\[\])?\.[^.]+$", "", path) if "." in path else None
            if parent is not None:
                assert RANK[levels[parent]] >= RANK[level], f"{event_type}: {parent} below {path}"


# Field names that are personal data wherever they appear (a guard against a wrong level).
_PERSONAL_NAMES = re.compile(r"(^|\.)(email|full_name|phone|author_name|assignee_name|client_ip|user_agent)$")
_SENSITIVE_NAMES = re.compile(
    r"^data\.(description|body|reason|solution_text|solution_summary|customer_visible_summary|file_name)$"
)


def test_names_that_are_personal_data_are_classified_so(
    all_contracts: list[contracts.EventContract],
) -> None:
    seen_sensitive = 0
    for c in all_contracts:
        for path, level in contracts.field_classifications(contracts.event_schema(c)):
            assert level is not None
            if _PERSONAL_NAMES.search(path):
                assert RANK[level] >= RANK["personal"], f"{c.event_type}: {path} is {level}"
            # Free text about a matter; the catalog's are public, a failed login's reason is a code.
            if _SENSITIVE_NAMES.search(path) and c.topic not in (CATALOG_TOPIC, IDENTITY_TOPIC):
                assert level == "sensitive-personal", f"{c.event_type}: {path} is {level}"
                seen_sensitive += 1
    assert seen_sensitive > 10
    order = dict(contracts.field_classifications(contracts.current_schemas(all_contracts)[ORDER_PLACED]))
    assert order["data.customer.email"] == "personal"
    assert order["data.customer.customer_id"] == "pseudonymous"
    assert order["data.description"] == "sensitive-personal"
    assert order["data.product.title"] == "public"
    assert order["data"] == "sensitive-personal"


# --- an annotation, not a contract change ------------------------------------------------------------


def _without_annotations(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_annotations(v) for k, v in node.items() if k != KEYWORD}
    if isinstance(node, list):
        return [_without_annotations(v) for v in node]
    return node


def test_adding_or_changing_a_classification_is_not_a_breaking_change() -> None:
    current = json.loads((DOCS / "schemas" / f"{ORDER_PLACED}.json").read_text(encoding="utf-8"))
    bare = _without_annotations(current)
    assert bare != current
    assert contracts.schema_breaks(ORDER_PLACED, bare, current) == []  # added (as at this change)
    assert contracts.schema_breaks(ORDER_PLACED, current, bare) == []  # removed
    changed = copy.deepcopy(current)
    changed["$defs"]["CustomerContactData"]["properties"]["email"][KEYWORD] = "public"
    changed["$defs"]["OrderPlaced"]["properties"]["customer"][KEYWORD] = "internal"  # beside a $ref
    assert contracts.schema_breaks(ORDER_PLACED, current, changed) == []
    # The checker still sees a real change next to the annotation.
    changed["$defs"]["CustomerContactData"]["properties"]["email"]["type"] = "integer"
    assert [(b.path, b.kind) for b in contracts.schema_breaks(ORDER_PLACED, current, changed)] == [
        ("data.customer.email", "type changed")
    ]


# --- the document ------------------------------------------------------------------------------------


def test_the_table_in_classification_md_is_what_the_code_says(
    all_contracts: list[contracts.EventContract],
) -> None:
    text = (DOCS / contracts.CLASSIFICATION_FILE).read_text(encoding="utf-8")
    assert text.count(contracts.TABLE_BEGIN) == 1 and text.count(contracts.TABLE_END) == 1
    table = contracts.classification_table(all_contracts)
    assert contracts.with_table(text, table) == text, "run `casebridge contracts write`"
    for c in all_contracts:
        assert f"| `{c.event_type}` |" in table
    assert "`customer.email`" in text and "`client_ip`" in text
    for level in Classification:
        assert f"| `{level.value}` |" in text, f"{level.value} is not explained"
    assert "(classification.md)" in (DOCS / "README.md").read_text(encoding="utf-8")


def test_a_stale_table_is_reported_and_rewritten(
    tmp_path: Path, all_contracts: list[contracts.EventContract]
) -> None:
    out = tmp_path / "events"
    contracts.write(out, all_contracts)
    assert not (out / contracts.CLASSIFICATION_FILE).exists()  # hand-written: never created
    shutil.copy(DOCS / contracts.CLASSIFICATION_FILE, out / contracts.CLASSIFICATION_FILE)
    assert contracts.differences(out, all_contracts) == []
    doc = out / contracts.CLASSIFICATION_FILE
    doc.write_text(doc.read_text(encoding="utf-8").replace("`customer.email`, ", ""), encoding="utf-8")
    stale = contracts.differences(out, all_contracts)
    assert [(d.path, d.kind) for d in stale] == [(contracts.CLASSIFICATION_FILE, "changed")]
    assert [d.path for d in contracts.write(out, all_contracts)] == [contracts.CLASSIFICATION_FILE]
    original = (DOCS / contracts.CLASSIFICATION_FILE).read_text(encoding="utf-8")
    assert doc.read_text(encoding="utf-8") == original
