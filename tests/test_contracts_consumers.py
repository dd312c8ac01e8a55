"""Issue 28: every consumer reads whatever the producer's published schema allows.

The producers' JSON Schemas (``casebridge contracts``, generated from their
``EventPayload`` models, the files under docs/events/schemas) are the contract;
the consumers read with tolerant ``EventReader`` models of their own. For each
event type a service consumes, events are built from the producer's schema alone
(only the required fields with every nullable one null; every optional field as
well; each enum value; and an unknown field in every object, as a newer producer
may add) and put through the consumer's own decoding, source check and reader
model, as its worker would before applying them. A reader that asks for more
than the schema promises, or something else, fails here before it dead-letters
a real event.

test_event_rules.py checks the readers' sources and limits against the producers;
shared/tests/test_contracts.py checks the schemas themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from jsonschema import Draft202012Validator

from casebridge_shared.contracts import EventContract, discover, event_schema
from casebridge_shared.events import service_source
from casebridge_shared.inbox import EventConsumer

SAMPLE_TIME = "2026-12-07T10:00:00+00:00"
UNKNOWN_FIELD = "added_by_a_newer_producer"

# Fields whose published schema says only "a string" while the consumers hold them
# to what the producer's API accepts (ADR-0025: an event cannot smuggle in what the
# API refuses) and the producer's model always sends: a decimal, an ISO 4217 code,
# a hex SHA-256. Publishing those constraints would tighten the schemas, a contract
# change for the next release (ADR-0037); until then the samples use such values.
API_VALUES: dict[str, str] = {
    "price": "12.50",
    "currency": "EUR",
    "sha256": "0123456789abcdef" * 4,
}


@dataclass(frozen=True)
class Shape:
    """Which of the payloads a schema allows to build."""

    optional: bool  # every optional property as well, not only the required ones
    nulls: bool  # a nullable value as null rather than as a value
    unknown: bool  # an extra property in every object, as a newer producer may add
    pick: int = 0  # which enum value (and which branch of a union) to take


REQUIRED_ONLY = Shape(optional=False, nulls=True, unknown=False)
EVERY_FIELD = Shape(optional=True, nulls=False, unknown=False)
WITH_UNKNOWN_FIELDS = Shape(optional=True, nulls=False, unknown=True)


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    assert ref.startswith("#/$defs/"), ref  # the generator only writes local references
    resolved: dict[str, Any] = root["$defs"][ref.removeprefix("#/$defs/")]
    return resolved


def sample(node: dict[str, Any], root: dict[str, Any], shape: Shape, name: str = "") -> Any:
    """A value ``node`` (a JSON Schema in ``root``, of property ``name``) accepts, built as ``shape`` says."""
    node = _resolve(node, root)
    if "const" in node:
        return node["const"]
    if "enum" in node:
        values: list[Any] = node["enum"]
        return values[shape.pick % len(values)]
    if "anyOf" in node:
        branches = [_resolve(b, root) for b in node["anyOf"]]
        values_of = [b for b in branches if b.get("type") != "null"]
        if shape.nulls and len(values_of) < len(branches):
            return None
        return sample(values_of[shape.pick % len(values_of)], root, shape, name)
    kind = node.get("type")
    if kind == "object":
        return _object(node, root, shape)
    if kind == "array":
        return [sample(node["items"], root, shape)] if shape.optional else []
    if kind == "string":
        if node.get("format") == "date-time":
            return SAMPLE_TIME
        return API_VALUES.get(name, "s")
    if kind == "integer":
        return max(int(node.get("minimum", 1)), 1)
    if kind == "number":
        return max(float(node.get("minimum", 1.5)), 1.5)
    if kind == "boolean":
        return shape.pick % 2 == 0
    if kind == "null":
        return None
    raise AssertionError(f"no sample for the schema {node}: teach sample() this keyword")


def _object(node: dict[str, Any], root: dict[str, Any], shape: Shape) -> dict[str, Any]:
    properties: dict[str, Any] = node.get("properties", {})
    required = set(node.get("required", ()))
    value = {
        name: sample(schema, root, shape, name)
        for name, schema in properties.items()
        if shape.optional or name in required
    }
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and shape.optional:  # a map such as product attributes
        value["key"] = sample(extra, root, shape)
    if shape.unknown and not isinstance(extra, dict):
        value[UNKNOWN_FIELD] = {"nested": [1, "two"]}
    return value


def event_from_schema(contract: EventContract, shape: Shape) -> dict[str, Any]:
    """A whole CloudEvent of ``contract``'s type, built from its published schema alone."""
    schema = event_schema(contract)
    event = sample(schema, schema, shape)
    assert isinstance(event, dict)
    # The schema says "a string"; the producer's own source is what a consumer trusts.
    event["source"] = service_source(contract.publisher)
    return event


def record(event: dict[str, Any]) -> ConsumerRecord[bytes, bytes]:
    value = json.dumps(event).encode()
    return ConsumerRecord(
        topic=str(event["type"]),
        partition=0,
        offset=0,
        timestamp=0,
        timestamp_type=0,
        key=b"s",
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value),
        headers=(),
    )


def enum_count(node: Any) -> int:
    """The most values any enum in a schema has (each is sampled once)."""
    if isinstance(node, dict):
        own = len(node["enum"]) if isinstance(node.get("enum"), list) else 1
        return max([own, *(enum_count(v) for v in node.values())])
    if isinstance(node, list):
        return max([1, *(enum_count(v) for v in node)])
    return 1


CONTRACTS = discover()
SHAPES = {"required": REQUIRED_ONLY, "every-field": EVERY_FIELD, "unknown-fields": WITH_UNKNOWN_FIELDS}
CASES = [(c, name) for c in CONTRACTS for name in SHAPES]


def consumers_of(event_type: str, consumers: dict[str, EventConsumer]) -> dict[str, EventConsumer]:
    return {service: c for service, c in consumers.items() if event_type in c.handlers}


def read_as_the_consumer_does(consumer: EventConsumer, event: dict[str, Any]) -> Any:
    """The steps the consumer's worker takes before it applies an event (no database needed)."""
    decoded = consumer._decode(record(event))
    assert consumer._handler_for(decoded) is not None
    return consumer._payload(decoded)


def test_every_consumed_event_type_has_a_published_schema(
    service_consumers: dict[str, EventConsumer],
) -> None:
    published = {c.event_type for c in CONTRACTS}
    consumed = {t for c in service_consumers.values() for t in c.handlers}
    assert consumed, "no consumer handles anything: the consumers were not built"
    assert consumed <= published, f"consumed but never published: {sorted(consumed - published)}"


@pytest.mark.parametrize(("contract", "shape_name"), CASES, ids=[f"{c.event_type}-{n}" for c, n in CASES])
def test_each_consumer_reads_what_the_producer_s_schema_allows(
    contract: EventContract, shape_name: str, service_consumers: dict[str, EventConsumer]
) -> None:
    schema = event_schema(contract)
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    readers = consumers_of(contract.event_type, service_consumers)
    shape = SHAPES[shape_name]
    for pick in range(enum_count(schema) if shape is EVERY_FIELD else 1):
        event = event_from_schema(contract, replace(shape, pick=pick))
        # The sample must be one the producer may send, or this test proves nothing.
        errors = [e.message for e in validator.iter_errors(event)]
        assert errors == [], f"sample {event} is not valid under {contract.event_type}: {errors}"
        for service, consumer in readers.items():
            try:
                read_as_the_consumer_does(consumer, event)
            except Exception as exc:
                pytest.fail(f"{service} refuses a valid {contract.event_type} ({shape_name}): {exc}\n{event}")


def test_every_value_held_to_the_producer_s_api_is_a_field_of_a_published_schema() -> None:
    """No stale entry in API_VALUES: each names a string field some producer publishes."""
    names = set()
    for contract in CONTRACTS:
        for definition in event_schema(contract).get("$defs", {}).values():
            names |= {n for n, s in definition.get("properties", {}).items() if s.get("type") == "string"}
    assert set(API_VALUES) <= names


def test_an_unknown_field_is_really_sent_and_really_ignored(
    service_consumers: dict[str, EventConsumer],
) -> None:
    """The tolerant-reader cases above carry the unknown field into ``data`` and its objects."""
    contract = next(c for c in CONTRACTS if c.event_type == "casebridge.orders.order-placed.v1")
    event = event_from_schema(contract, WITH_UNKNOWN_FIELDS)
    assert event[UNKNOWN_FIELD] and event["data"][UNKNOWN_FIELD] and event["data"]["customer"][UNKNOWN_FIELD]
    payload = read_as_the_consumer_does(service_consumers["case-handling"], event)
    assert UNKNOWN_FIELD not in payload.model_dump()
    assert payload.order_id == event["data"]["order_id"]


def test_a_payload_the_schema_refuses_is_refused_by_the_consumer(
    service_consumers: dict[str, EventConsumer],
) -> None:
    """The check above can fail: a required field left out is a poison event for the reader."""
    contract = next(c for c in CONTRACTS if c.event_type == "casebridge.orders.order-placed.v1")
    event = event_from_schema(contract, REQUIRED_ONLY)
    del event["data"]["order_id"]
    with pytest.raises(Exception, match="order_id"):
        read_as_the_consumer_does(service_consumers["case-handling"], event)
