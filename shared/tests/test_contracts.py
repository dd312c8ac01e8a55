"""The generated event contracts: up to date on disk, complete, valid, and true to the wire.

No PyPI package ships the official AsyncAPI 3.0 JSON Schema, so the document is
checked against ``ASYNCAPI_3_SUBSET`` below: the rules of the official schema
(required fields, closed objects, id patterns, the Kafka message binding) for
every object this generator writes, plus the cross-reference rules the JSON
Schema cannot express (every ``$ref`` resolves, an operation's messages belong
to its channel).
"""

from __future__ import annotations

import copy
import importlib
import json
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from pydantic import create_model
from sqlalchemy import MetaData, select
from typer.testing import CliRunner

from casebridge_shared import contracts
from casebridge_shared.db import Database, utcnow
from casebridge_shared.events import (
    CLOUDEVENTS_CONTENT_TYPE,
    DEFAULT_DATASCHEMA_BASE,
    CloudEvent,
    EventPayload,
    dataschema_uri,
)
from casebridge_shared.outbox import UnitOfWork, outbox_tables
from casebridge_shared.settings import ServiceSettings
from order_intake.orders.events import CustomerContactData, OrderPlaced, ProductSnapshotData

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events"
ORDER_PLACED = "casebridge.orders.order-placed.v1"


@pytest.fixture(scope="module")
def all_contracts() -> list[contracts.EventContract]:
    return contracts.discover()


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DOCS / contracts.ASYNCAPI_FILE).read_text(encoding="utf-8"))
    return document


def _schema_file(event_type: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((DOCS / "schemas" / f"{event_type}.json").read_text(encoding="utf-8"))
    return schema


# --- the files on disk are what the code generates -------------------------------------------------


def test_files_on_disk_match_the_code() -> None:
    changes = contracts.differences(DOCS)
    if changes:
        report = "\n".join(c.describe() + "\n" + "\n".join(c.diff[:30]) for c in changes)
        pytest.fail(f"docs/events is out of date; run `casebridge contracts write`:\n{report}")


def test_a_changed_payload_model_makes_the_check_fail(
    tmp_path: Path, all_contracts: list[contracts.EventContract]
) -> None:
    contracts.write(tmp_path, all_contracts)
    assert contracts.differences(tmp_path, all_contracts) == []

    # The same event type with one more field, as if someone edited OrderPlaced.
    changed = create_model("OrderPlaced", __base__=OrderPlaced, coupon=(str, ...))
    edited = [
        contracts.EventContract(changed, c.publisher) if c.payload is OrderPlaced else c
        for c in all_contracts
    ]
    differences = contracts.differences(tmp_path, edited)
    assert {(d.path, d.kind) for d in differences} == {
        ("asyncapi.yaml", "changed"),
        (f"schemas/{ORDER_PLACED}.json", "changed"),
    }
    assert any('"coupon"' in line for d in differences for line in d.diff)


def test_cli_write_then_check(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "events"

    result = runner.invoke(contracts.cli, ["check", "--out", str(out)])
    assert result.exit_code == 1
    assert "missing: asyncapi.yaml" in result.output

    result = runner.invoke(contracts.cli, ["write", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "asyncapi.yaml").is_file()
    result = runner.invoke(contracts.cli, ["check", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output

    schema = out / "schemas" / f"{ORDER_PLACED}.json"
    schema.write_text(schema.read_text().replace('"order_id"', '"orderId"'))
    (out / "schemas" / "casebridge.orders.order-removed.v1.json").write_text("{}\n")
    (out / "README.md").write_text("hand-written, not the generator's\n")
    result = runner.invoke(contracts.cli, ["check", "--out", str(out)])
    assert result.exit_code == 1
    assert f"changed: schemas/{ORDER_PLACED}.json" in result.output
    assert "stale:   schemas/casebridge.orders.order-removed.v1.json" in result.output
    assert '+        "order_id"' in result.output  # the diff itself is shown
    assert "README.md" not in result.output

    result = runner.invoke(contracts.cli, ["write", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not (out / "schemas" / "casebridge.orders.order-removed.v1.json").exists()
    assert (out / "README.md").exists()
    assert runner.invoke(contracts.cli, ["check", "--out", str(out)]).exit_code == 0


def test_module_runs_as_a_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "casebridge_shared.contracts", "check", "--out", str(DOCS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- every event type is documented ----------------------------------------------------------------


def _service_packages() -> set[str]:
    """Top-level packages of the installed services (their ``casebridge.api`` entry points)."""
    return {ep.value.split(":")[0].split(".")[0] for ep in entry_points(group="casebridge.api")}


def _import_all_event_modules() -> None:
    """Import every ``*.events`` module of every service, listed in its contracts module or not."""
    for package_name in sorted(_service_packages()):
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if info.name.endswith(".events"):
                importlib.import_module(info.name)


def _is_test_code(module: str) -> bool:
    parts = module.split(".")
    return any(p in ("tests", "conftest") or p.startswith("test_") for p in parts)


def test_every_registered_event_type_is_discovered(all_contracts: list[contracts.EventContract]) -> None:
    _import_all_event_modules()
    registered = {t for t, cls in EventPayload.registry.items() if not _is_test_code(cls.__module__)}
    discovered = {c.event_type for c in all_contracts}
    assert registered - discovered == set(), "add the events module to the service's contracts module"
    assert discovered <= set(EventPayload.registry)
    assert {c.publisher for c in all_contracts} >= {"order-intake"}
    assert ORDER_PLACED in discovered


def test_order_intake_publishes_catalog_orders_and_identity(
    all_contracts: list[contracts.EventContract],
) -> None:
    topics = {c.topic for c in all_contracts if c.publisher == "order-intake"}
    assert topics == {"casebridge.catalog.v1", "casebridge.orders.v1", "casebridge.identity.v1"}


def test_every_event_type_has_a_schema_and_a_message_on_its_channel(
    all_contracts: list[contracts.EventContract], asyncapi: dict[str, Any]
) -> None:
    on_disk = {p.name.removesuffix(".json") for p in (DOCS / "schemas").glob("*.json")}
    assert on_disk == {c.event_type for c in all_contracts}
    channels_by_address = {ch["address"]: (cid, ch) for cid, ch in asyncapi["channels"].items()}
    for c in all_contracts:
        schema = _schema_file(c.event_type)
        assert schema["properties"]["type"]["const"] == c.event_type
        data = schema["properties"]["data"]
        assert data == {"$ref": f"#/$defs/{c.payload.__name__}", "x-classification": data["x-classification"]}

        cid, channel = channels_by_address[c.topic]
        assert channel["messages"][c.payload.__name__] == {"$ref": f"#/components/messages/{c.event_type}"}
        message = asyncapi["components"]["messages"][c.event_type]
        assert message["summary"] == c.summary
        assert message["contentType"] == CLOUDEVENTS_CONTENT_TYPE
        assert message["payload"] == {"$ref": f"#/components/schemas/{c.event_type}"}
        assert message["bindings"]["kafka"]["key"]["type"] == "string"

        sending = [
            op
            for op in asyncapi["operations"].values()
            if op["channel"] == {"$ref": f"#/channels/{cid}"}
            and {"$ref": f"#/channels/{cid}/messages/{c.payload.__name__}"} in op["messages"]
        ]
        assert len(sending) == 1
        assert sending[0]["action"] == "send"
        assert c.publisher in sending[0]["title"]
    # Channels only for topics that have events, each described.
    assert set(channels_by_address) == {c.topic for c in all_contracts}
    assert all(ch["description"] for ch in asyncapi["channels"].values())


def test_the_readme_names_every_topic_and_event_type(all_contracts: list[contracts.EventContract]) -> None:
    readme = (DOCS / "README.md").read_text(encoding="utf-8")
    missing = sorted({f"`{c.topic}`" for c in all_contracts} | {f"`{c.event_type}`" for c in all_contracts})
    assert [name for name in missing if name not in readme] == [], "docs/events/README.md is hand-written"


# --- the AsyncAPI document is structurally valid AsyncAPI 3.0.0 ------------------------------------

_EXT = {"^x-[\\w\\d\\.\\x2d_]+$": {}}
_ID = "^[A-Za-z0-9_\\-]+$"
_COMPONENT_KEY = "^[\\w\\d\\.\\-_]+$"


def _closed(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "patternProperties": _EXT,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


_STR: dict[str, Any] = {"type": "string"}
_REF = _closed({"$ref": {"type": "string", "format": "uri-reference"}}, ["$ref"])
_SCHEMA_OR_REF: dict[str, Any] = {"type": "object"}  # schemas are checked separately, as draft-07

ASYNCAPI_3_SUBSET: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "definitions": {
        "info": _closed(
            {
                "title": _STR,
                "version": _STR,
                "description": _STR,
                "termsOfService": {"type": "string", "format": "uri"},
                "contact": {"type": "object"},
                "license": _closed({"name": _STR, "url": {"type": "string", "format": "uri"}}, ["name"]),
                "tags": {"type": "array"},
                "externalDocs": {"type": "object"},
            },
            ["title", "version"],
        ),
        "server": _closed(
            {
                "host": {"type": "string", "pattern": "^[^/:]+(:[0-9]+)?$"},  # host[:port], no scheme
                "pathname": _STR,
                "title": _STR,
                "summary": _STR,
                "description": _STR,
                "protocol": {"enum": ["kafka", "kafka-secure"]},
                "protocolVersion": _STR,
                "variables": {"type": "object"},
                "security": {"type": "array"},
                "tags": {"type": "array"},
                "externalDocs": {"type": "object"},
                "bindings": {"type": "object"},
            },
            ["host", "protocol"],
        ),
        "channel": _closed(
            {
                "address": {"type": ["string", "null"]},
                "messages": {
                    "type": "object",
                    "propertyNames": {"pattern": _ID},
                    "additionalProperties": {"$ref": "#/definitions/reference"},
                },
                "title": _STR,
                "summary": _STR,
                "description": _STR,
                "servers": {"type": "array", "items": {"$ref": "#/definitions/reference"}},
                "parameters": {"type": "object"},
                "tags": {"type": "array"},
                "externalDocs": {"type": "object"},
                "bindings": {"type": "object"},
            }
        ),
        "operation": _closed(
            {
                "action": {"enum": ["send", "receive"]},
                "channel": {"$ref": "#/definitions/reference"},
                "title": _STR,
                "summary": _STR,
                "description": _STR,
                "security": {"type": "array"},
                "tags": {"type": "array"},
                "externalDocs": {"type": "object"},
                "bindings": {"type": "object"},
                "traits": {"type": "array"},
                "messages": {"type": "array", "items": {"$ref": "#/definitions/reference"}},
                "reply": {"type": "object"},
            },
            ["action", "channel"],
        ),
        "message": _closed(
            {
                "headers": _SCHEMA_OR_REF,
                "payload": _SCHEMA_OR_REF,
                "correlationId": {"type": "object"},
                "contentType": _STR,
                "name": _STR,
                "title": _STR,
                "summary": _STR,
                "description": _STR,
                "tags": {"type": "array"},
                "externalDocs": {"type": "object"},
                "bindings": _closed(
                    {
                        "kafka": _closed(
                            {
                                "key": _SCHEMA_OR_REF,
                                "schemaIdLocation": {"enum": ["header", "payload"]},
                                "schemaIdPayloadEncoding": _STR,
                                "schemaLookupStrategy": _STR,
                                "bindingVersion": {"enum": ["0.4.0", "0.3.0"]},
                            }
                        )
                    }
                ),
                "examples": {"type": "array"},
                "deprecated": {"type": "boolean"},
                "traits": {"type": "array"},
            }
        ),
        "reference": _REF,
    },
    **_closed(
        {
            "asyncapi": {"const": "3.0.0"},
            "id": {"type": "string", "format": "uri"},
            "info": {"$ref": "#/definitions/info"},
            "servers": {
                "type": "object",
                "propertyNames": {"pattern": _ID},
                "additionalProperties": {"$ref": "#/definitions/server"},
            },
            "defaultContentType": _STR,
            "channels": {
                "type": "object",
                "propertyNames": {"pattern": _ID},
                "additionalProperties": {"$ref": "#/definitions/channel"},
            },
            "operations": {
                "type": "object",
                "propertyNames": {"pattern": _ID},
                "additionalProperties": {"$ref": "#/definitions/operation"},
            },
            "components": _closed(
                {
                    "schemas": {
                        "type": "object",
                        "propertyNames": {"pattern": _COMPONENT_KEY},
                        "additionalProperties": {"type": "object"},
                    },
                    "messages": {
                        "type": "object",
                        "propertyNames": {"pattern": _COMPONENT_KEY},
                        "additionalProperties": {"$ref": "#/definitions/message"},
                    },
                }
            ),
        },
        ["asyncapi", "info"],
    ),
}

# AsyncAPI's default schema format is a superset of JSON Schema draft-07: no 2019-09/2020-12 keywords.
_NEWER_KEYWORDS = {
    "$defs",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "prefixItems",
    "dependentRequired",
    "dependentSchemas",
    "unevaluatedProperties",
    "unevaluatedItems",
    "minContains",
    "maxContains",
}


def _walk(node: Any, path: str = "#") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}/{i}")


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: only local references are used"
    node: Any = document
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and token in node, f"{ref} does not resolve"
        node = node[token]
    return node


def test_asyncapi_document_has_the_required_shape(asyncapi: dict[str, Any]) -> None:
    jsonschema.Draft7Validator.check_schema(ASYNCAPI_3_SUBSET)
    validator = jsonschema.Draft7Validator(ASYNCAPI_3_SUBSET, format_checker=jsonschema.FormatChecker())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(asyncapi)]
    assert errors == []

    assert asyncapi["info"]["title"] == "Casebridge events"
    assert asyncapi["info"]["license"]["name"] == "Apache-2.0"
    assert asyncapi["servers"]["kafka"] == asyncapi["servers"]["kafka"] | {
        "host": "127.0.0.1:19092",
        "protocol": "kafka",
    }
    assert "embedded" in asyncapi["servers"]["kafka"]["description"]


def test_the_subset_rejects_what_asyncapi_3_rejects(asyncapi: dict[str, Any]) -> None:
    """The structural schema is not vacuous: typical mistakes fail it."""
    validator = jsonschema.Draft7Validator(ASYNCAPI_3_SUBSET)
    channel_id = next(iter(asyncapi["channels"]))
    op_id = next(iter(asyncapi["operations"]))
    message_id = next(iter(asyncapi["components"]["messages"]))
    broken: list[dict[str, Any]] = [
        asyncapi | {"asyncapi": "2.6.0"},
        {k: v for k, v in asyncapi.items() if k != "info"},
        asyncapi | {"servers": {"kafka": {"url": "kafka://127.0.0.1:19092", "protocol": "kafka"}}},
        asyncapi | {"channels": {"bad.id": asyncapi["channels"][channel_id]}},
        asyncapi | {"channels": {channel_id: asyncapi["channels"][channel_id] | {"publish": {}}}},
        asyncapi | {"operations": {op_id: asyncapi["operations"][op_id] | {"action": "publish"}}},
        asyncapi | {"operations": {op_id: {"action": "send"}}},
        asyncapi
        | {
            "components": asyncapi["components"]
            | {
                "messages": {
                    message_id: {"payload": {}, "bindings": {"kafka": {"key": {}, "bindingVersion": "9"}}}
                }
            }
        },
    ]
    for document in broken:
        assert not validator.is_valid(document)


def test_asyncapi_references_resolve_and_operations_use_their_channels_messages(
    asyncapi: dict[str, Any],
) -> None:
    refs = [
        (path, node["$ref"]) for path, node in _walk(asyncapi) if isinstance(node, dict) and "$ref" in node
    ]
    assert refs
    for _path, ref in refs:
        _resolve(asyncapi, ref)
    for op_id, op in asyncapi["operations"].items():
        channel_ref = op["channel"]["$ref"]
        assert re.fullmatch(r"#/channels/[^/]+", channel_ref), op_id
        assert op["messages"], f"{op_id} sends no message"
        for message in op["messages"]:
            # AsyncAPI 3: an operation's messages MUST be a subset of its channel's messages.
            assert message["$ref"].startswith(channel_ref + "/messages/"), (op_id, message)
    for cid, channel in asyncapi["channels"].items():
        for name, ref in channel["messages"].items():
            message = _resolve(asyncapi, ref["$ref"])
            assert message["name"] == name, cid


def test_asyncapi_schemas_are_draft_07(asyncapi: dict[str, Any]) -> None:
    for name, schema in asyncapi["components"]["schemas"].items():
        jsonschema.Draft7Validator.check_schema(schema)
        # Keys of a "properties" map are property names, not keywords.
        keywords = {
            key
            for path, node in _walk(schema)
            if isinstance(node, dict) and not path.endswith("/properties")
            for key in node
        }
        assert not (keywords & _NEWER_KEYWORDS), (name, keywords & _NEWER_KEYWORDS)


# --- the schemas describe the real wire format -----------------------------------------------------


async def _emit_order_placed(tmp_path: Path, **unit_options: Any) -> dict[str, Any]:
    """An OrderPlaced CloudEvent made by ``UnitOfWork.emit``, as committed to the outbox."""
    metadata = MetaData()
    tables = outbox_tables(metadata)
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'outbox.sqlite3'}")
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        now = utcnow()
        payload = OrderPlaced(
            order_id="ord-1",
            customer=CustomerContactData(
                customer_id="usr-1", full_name="Carla Customer", email="carla@example.org", phone=None
            ),
            product=ProductSnapshotData(
                product_id="prd-1",
                title="Contract review",
                description="A lawyer reviews your contract.",
                deliverables=["Written review"],
                category="contracts",
                price=Decimal("199.00"),
                currency="EUR",
                version=3,
            ),
            description="Please review my lease.",
            status="placed",
            version=1,
            created_at=now,
            updated_at=now,
        )
        async with UnitOfWork(db, tables, "/casebridge/order-intake", **unit_options) as uow:
            event = uow.emit(payload, key="ord-1", version=1)
            await uow.commit()
        async with db.session() as session:
            row = (await session.execute(select(tables.outbox.c.payload, tables.outbox.c.message_key))).one()
        assert row.message_key == event.partitionkey == "ord-1"
        wire: dict[str, Any] = json.loads(row.payload)
        return wire
    finally:
        await db.dispose()


@pytest.fixture
async def emitted_order_placed(tmp_path: Path) -> dict[str, Any]:
    return await _emit_order_placed(tmp_path)


def _validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_every_schema_file_is_valid_draft_2020_12(all_contracts: list[contracts.EventContract]) -> None:
    for c in all_contracts:
        schema = _schema_file(c.event_type)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)


def test_a_real_event_validates_against_its_schema(emitted_order_placed: dict[str, Any]) -> None:
    event = emitted_order_placed
    assert event["type"] == ORDER_PLACED
    assert event["data"]["customer"]["phone"] is None
    validator = _validator(_schema_file(ORDER_PLACED))
    assert [e.message for e in validator.iter_errors(event)] == []
    # ... and it round-trips through the model consumers use.
    assert isinstance(CloudEvent.model_validate(event).payload(), OrderPlaced)


def test_a_real_event_validates_against_the_asyncapi_payload(
    emitted_order_placed: dict[str, Any], asyncapi: dict[str, Any]
) -> None:
    message = asyncapi["components"]["messages"][ORDER_PLACED]
    schema = {"$ref": message["payload"]["$ref"], "components": asyncapi["components"]}
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    assert [e.message for e in validator.iter_errors(emitted_order_placed)] == []


def test_broken_events_do_not_validate(emitted_order_placed: dict[str, Any]) -> None:
    validator = _validator(_schema_file(ORDER_PLACED))

    missing_field = json.loads(json.dumps(emitted_order_placed))
    del missing_field["data"]["order_id"]
    errors = list(validator.iter_errors(missing_field))
    assert errors and any("'order_id' is a required property" in e.message for e in errors)

    nested_missing = json.loads(json.dumps(emitted_order_placed))
    del nested_missing["data"]["product"]["price"]
    assert not validator.is_valid(nested_missing)

    wrong_type = emitted_order_placed | {"type": "casebridge.orders.order-updated.v1"}
    assert not validator.is_valid(wrong_type)

    no_key = {k: v for k, v in emitted_order_placed.items() if k != "partitionkey"}
    assert not validator.is_valid(no_key)

    negative_version = emitted_order_placed | {"aggregateversion": -1}
    assert not validator.is_valid(negative_version)

    null_subject = emitted_order_placed | {"subject": None}  # absent when unset, never null
    assert not validator.is_valid(null_subject)


# --- open for additions ------------------------------------------------------------------------------


def test_an_added_field_in_data_is_valid_under_the_published_schema(
    emitted_order_placed: dict[str, Any], asyncapi: dict[str, Any]
) -> None:
    """docs/events promises that adding a field is safe: validators of the schema must accept it."""
    added = copy.deepcopy(emitted_order_placed)
    added["data"]["coupon"] = "SPRING"
    added["data"]["product"]["tax_rate"] = "0.19"
    added["data"]["customer"]["locale"] = "de"
    validator = _validator(_schema_file(ORDER_PLACED))
    assert [e.message for e in validator.iter_errors(added)] == []
    message = asyncapi["components"]["messages"][ORDER_PLACED]
    in_asyncapi = {"$ref": message["payload"]["$ref"], "components": asyncapi["components"]}
    assert jsonschema.Draft7Validator(in_asyncapi).is_valid(added)
    # ... while a field the schema names still has to have its type.
    added["data"]["customer"]["email"] = 42
    assert not validator.is_valid(added)


def test_no_published_schema_closes_an_object(all_contracts: list[contracts.EventContract]) -> None:
    for c in all_contracts:
        closed = [
            path
            for path, node in _walk(_schema_file(c.event_type))
            if isinstance(node, dict) and node.get("additionalProperties") is False
        ]
        assert closed == [], c.event_type


def test_producer_models_stay_strict_and_consumers_read_past_added_fields() -> None:
    now = utcnow()
    fields: dict[str, Any] = {
        "order_id": "ord-1",
        "customer": {"customer_id": "usr-1", "full_name": "C", "email": "c@example.org", "phone": None},
        "product": {
            "product_id": "prd-1",
            "title": "T",
            "description": "D",
            "deliverables": [],
            "category": "contracts",
            "price": "1.00",
            "currency": "EUR",
            "version": 1,
        },
        "description": "x",
        "status": "placed",
        "version": 1,
        "created_at": now.isoformat(),
        "updated_at": now.isoformat(),
    }
    with pytest.raises(ValueError, match="coupon"):
        OrderPlaced.model_validate(fields | {"coupon": "SPRING"})  # a producer cannot send it by mistake
    event = CloudEvent(
        id="e-1",
        source="/casebridge/order-intake",
        type=ORDER_PLACED,
        time=now,
        partitionkey="ord-1",
        aggregateversion=1,
        data=fields | {"coupon": "SPRING", "customer": fields["customer"] | {"locale": "de"}},
    )
    payload = event.payload()  # a consumer with the registered model: tolerant
    assert isinstance(payload, OrderPlaced)
    assert payload.order_id == "ord-1" and payload.customer.email == "c@example.org"
    with pytest.raises(ValueError, match="email"):  # only unknown fields are dropped
        CloudEvent.model_validate(
            event.model_dump() | {"data": event.data | {"customer": fields["customer"] | {"email": 1}}}
        ).payload()


# --- dataschema --------------------------------------------------------------------------------------


def test_every_schema_is_named_by_the_dataschema_of_its_events(
    all_contracts: list[contracts.EventContract],
) -> None:
    for c in all_contracts:
        schema = _schema_file(c.event_type)
        uri = dataschema_uri(c.event_type)
        assert uri == f"{DEFAULT_DATASCHEMA_BASE}{c.event_type}.json"
        assert schema["$id"] == uri
        assert schema["properties"]["dataschema"]["format"] == "uri"
        assert schema["properties"]["dataschema"]["examples"] == [uri]


def test_an_emitted_event_names_its_schema(emitted_order_placed: dict[str, Any]) -> None:
    assert emitted_order_placed["dataschema"] == _schema_file(ORDER_PLACED)["$id"]
    validator = _validator(_schema_file(ORDER_PLACED))
    assert validator.is_valid(emitted_order_placed)
    assert not validator.is_valid(emitted_order_placed | {"dataschema": 42})
    assert not validator.is_valid(emitted_order_placed | {"dataschema": None})  # absent when unset
    # An absolute URI (CloudEvents: dataschema is a URI, not a reference).
    parts = urlsplit(emitted_order_placed["dataschema"])
    assert parts.scheme == "https" and parts.netloc and parts.path.endswith(f"/{ORDER_PLACED}.json")


async def test_the_dataschema_base_is_a_setting(tmp_path: Path) -> None:
    settings = ServiceSettings(environment="test", event_schema_base_url="https://schemas.example.org/cb")
    assert settings.event_schema_base_url == "https://schemas.example.org/cb/"
    assert ServiceSettings(environment="test").event_schema_base_url == DEFAULT_DATASCHEMA_BASE
    with pytest.raises(ValueError, match="event_schema_base_url"):
        ServiceSettings(environment="test", event_schema_base_url="file:///etc/schemas/")
    event = await _emit_order_placed(tmp_path, schema_base=settings.event_schema_base_url)
    assert event["dataschema"] == f"https://schemas.example.org/cb/{ORDER_PLACED}.json"
    assert _validator(_schema_file(ORDER_PLACED)).is_valid(event)


# --- compatibility with the released schemas ---------------------------------------------------------

RELEASED = DOCS / contracts.RELEASED_DIR
CASE_OPENED = "casebridge.cases.case-opened.v1"


def test_the_current_schemas_are_compatible_with_the_last_release(
    all_contracts: list[contracts.EventContract],
) -> None:
    released = contracts.released_schemas(RELEASED)
    assert set(released) >= {ORDER_PLACED, CASE_OPENED}
    assert (RELEASED / contracts.RELEASED_VERSION_FILE).read_text().strip()
    breaks = contracts.compatibility(released, contracts.current_schemas(all_contracts))
    assert [b.describe() for b in breaks] == [], "a breaking change: publish a new event type instead"


def _data_def(schema: dict[str, Any], name: str) -> dict[str, Any]:
    definition: dict[str, Any] = schema["$defs"][name]
    return definition


def _breaks_after(event_type: str, edit: Any) -> list[tuple[str, str]]:
    released = _schema_file(event_type)
    current = copy.deepcopy(released)
    edit(current)
    return [(b.path, b.kind) for b in contracts.schema_breaks(event_type, released, current)]


def _status_enum(schema: dict[str, Any]) -> list[str]:
    values: list[str] = _data_def(schema, "CaseOpened")["properties"]["status"]["enum"]
    return values


def test_the_checker_catches_each_kind_of_breaking_change() -> None:
    def remove_field(s: dict[str, Any]) -> None:
        del _data_def(s, "CustomerContactData")["properties"]["email"]
        _data_def(s, "CustomerContactData")["required"].remove("email")

    def change_type(s: dict[str, Any]) -> None:
        _data_def(s, "OrderPlaced")["properties"]["version"] = {"type": "string"}

    def make_nullable(s: dict[str, Any]) -> None:
        _data_def(s, "OrderPlaced")["properties"]["description"] = {
            "anyOf": [{"type": "string"}, {"type": "null"}]
        }

    def change_format(s: dict[str, Any]) -> None:
        del _data_def(s, "OrderPlaced")["properties"]["created_at"]["format"]

    def new_required(s: dict[str, Any]) -> None:
        _data_def(s, "OrderPlaced")["properties"]["coupon"] = {"type": "string"}
        _data_def(s, "OrderPlaced")["required"].append("coupon")

    def no_longer_required(s: dict[str, Any]) -> None:
        _data_def(s, "ProductSnapshotData")["required"].remove("price")

    def close(s: dict[str, Any]) -> None:
        _data_def(s, "ProductSnapshotData")["additionalProperties"] = False

    def tighten(s: dict[str, Any]) -> None:
        _data_def(s, "OrderPlaced")["properties"]["description"]["maxLength"] = 10
        s["properties"]["aggregateversion"]["minimum"] = 1

    def change_const(s: dict[str, Any]) -> None:
        s["properties"]["type"]["const"] = "casebridge.orders.order-placed.v2"

    def change_item_type(s: dict[str, Any]) -> None:
        _data_def(s, "ProductSnapshotData")["properties"]["deliverables"]["items"] = {"type": "integer"}

    assert _breaks_after(ORDER_PLACED, remove_field) == [("data.customer.email", "field removed")]
    assert _breaks_after(ORDER_PLACED, change_type) == [("data.version", "type changed")]
    assert _breaks_after(ORDER_PLACED, make_nullable) == [("data.description", "type changed")]
    assert _breaks_after(ORDER_PLACED, change_format) == [("data.created_at", "type changed")]
    assert _breaks_after(ORDER_PLACED, new_required) == [("data.coupon", "new required field")]
    assert _breaks_after(ORDER_PLACED, no_longer_required) == [
        ("data.product.price", "field no longer required")
    ]
    assert _breaks_after(ORDER_PLACED, close) == [("data.product", "closed to additions")]
    assert sorted(_breaks_after(ORDER_PLACED, tighten)) == [
        ("aggregateversion", "constraint tightened"),
        ("data.description", "constraint tightened"),
    ]
    assert _breaks_after(ORDER_PLACED, change_const) == [("type", "value changed")]
    assert _breaks_after(ORDER_PLACED, change_item_type) == [("data.product.deliverables[]", "type changed")]
    assert _breaks_after(CASE_OPENED, lambda s: _status_enum(s).remove("cancelled")) == [
        ("data.status", "enum value removed")
    ]
    assert _breaks_after(CASE_OPENED, lambda s: _status_enum(s).append("on_hold")) == [
        ("data.status", "enum value added")
    ]
    removed = contracts.compatibility({ORDER_PLACED: _schema_file(ORDER_PLACED)}, {})
    assert [(b.event_type, b.kind) for b in removed] == [(ORDER_PLACED, "event type removed")]


def test_additions_are_compatible() -> None:
    def add_optional_fields(s: dict[str, Any]) -> None:
        _data_def(s, "OrderPlaced")["properties"]["coupon"] = {"type": "string"}
        _data_def(s, "CustomerContactData")["properties"]["locale"] = {"type": "string"}
        s["properties"]["newextension"] = {"type": "string"}

    def loosen(s: dict[str, Any]) -> None:
        del s["properties"]["aggregateversion"]["minimum"]
        _data_def(s, "OrderPlaced")["description"] = "reworded"

    assert _breaks_after(ORDER_PLACED, add_optional_fields) == []
    assert _breaks_after(ORDER_PLACED, loosen) == []
    released = {ORDER_PLACED: _schema_file(ORDER_PLACED)}
    with_new_type = released | {CASE_OPENED: _schema_file(CASE_OPENED)}
    assert contracts.compatibility(released, with_new_type) == []


def test_cli_compat_and_release(tmp_path: Path, all_contracts: list[contracts.EventContract]) -> None:
    runner = CliRunner()
    result = runner.invoke(contracts.cli, ["compat"])
    assert result.exit_code == 0, result.output
    assert "compatible with release" in result.output

    out = tmp_path / "events"
    result = runner.invoke(contracts.cli, ["compat", "--out", str(out)])
    assert result.exit_code == 2 and "no released schemas" in result.output

    contracts.release(out, all_contracts)
    snapshot = out / contracts.RELEASED_DIR / "schemas" / f"{ORDER_PLACED}.json"
    assert json.loads(snapshot.read_text()) == _schema_file(ORDER_PLACED)
    # A release that had a field the code no longer sends:
    released = json.loads(snapshot.read_text())
    _data_def(released, "OrderPlaced")["properties"]["coupon"] = {"type": "string"}
    _data_def(released, "OrderPlaced")["required"].append("coupon")
    snapshot.write_text(json.dumps(released))
    result = runner.invoke(contracts.cli, ["compat", "--out", str(out)])
    assert result.exit_code == 1
    assert f"{ORDER_PLACED}: field removed at data.coupon" in result.output
    assert "1 breaking change(s)" in result.output

    result = runner.invoke(contracts.cli, ["release", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert runner.invoke(contracts.cli, ["compat", "--out", str(out)]).exit_code == 0
