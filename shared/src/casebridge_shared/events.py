"""The event contract: CloudEvents 1.0, published in structured JSON mode.

Payloads are pydantic models subclassing :class:`EventPayload`. Each names its
CloudEvents ``type`` and its topic; subclasses register themselves so the
JSON Schemas and the AsyncAPI document can be generated from the code.

Every event names the published JSON Schema of its type in ``dataschema``
(:func:`dataschema_uri`). Our producers send structured mode; consumers also
read binary mode (:func:`binary_mode_attributes`), as other producers may send it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
# Where the published schemas live: ``<base><event type>.json``, the same names as
# docs/events/schemas. A stable name, not necessarily a fetchable one: consumers
# look schemas up by it; ``event_schema_base_url`` points it at where an operator
# serves them instead.
DEFAULT_DATASCHEMA_BASE = "https://casebridge.dev/events/schemas/"

_M = TypeVar("_M", bound=BaseModel)

CATALOG_TOPIC = "casebridge.catalog.v1"
ORDERS_TOPIC = "casebridge.orders.v1"
CASES_TOPIC = "casebridge.cases.v1"
IDENTITY_TOPIC = "casebridge.identity.v1"
LEDGER_CHECKPOINTS_TOPIC = "casebridge.ledger-checkpoints.v1"

TOPIC_DESCRIPTIONS: dict[str, str] = {
    CATALOG_TOPIC: "Legal products: created, updated, archived. Key: product id.",
    ORDERS_TOPIC: (
        "Orders with a snapshot of the product: placed, updated, cancelled, completed. Key: order id."
    ),
    CASES_TOPIC: "Cases worked by staff on the case-handling platform. Key: case id.",
    IDENTITY_TOPIC: "Users and logins issued by order-intake. Key: user id.",
    LEDGER_CHECKPOINTS_TOPIC: "Signed checkpoints of the customer-ledger journal.",
}


SOURCE_PREFIX = "/casebridge/"


def service_source(service: str) -> str:
    """The CloudEvents ``source`` a service's events carry, e.g. ``/casebridge/order-intake``."""
    return f"{SOURCE_PREFIX}{service}"


def published_by(service: str, *event_types: str) -> dict[str, str]:
    """``{event type: source}`` for event types that only ``service`` may publish.

    A consumer declares with it which source it trusts for each type it handles
    (the producing service's contract, ``docs/events``, names the publisher).
    """
    return dict.fromkeys(event_types, service_source(service))


def dataschema_uri(event_type: str, base: str = DEFAULT_DATASCHEMA_BASE) -> str:
    """The CloudEvents ``dataschema`` of ``event_type``: the URI of its published JSON Schema."""
    return f"{base}{event_type}.json"


class EventPayload(BaseModel):
    """Base of every event payload (the CloudEvent ``data``).

    Strict when built (``extra="forbid"``): a producer cannot send a field the
    contract does not name. The published schemas stay open for additions anyway
    (``casebridge_shared.contracts``), and consumers read with :func:`read_payload`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: ClassVar[str]
    topic: ClassVar[str]
    summary: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[EventPayload]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        event_type = cls.__dict__.get("event_type")
        if event_type is not None:
            if event_type in EventPayload.registry and EventPayload.registry[event_type] is not cls:
                raise TypeError(f"event type {event_type} registered twice")
            EventPayload.registry[event_type] = cls


class EventReader(BaseModel):
    """A consumer's own view of another service's event payload (a tolerant reader).

    Services never import each other's code; a consumer declares the fields it
    uses and ignores the rest, so a producer may add fields without breaking it.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 envelope with our extensions.

    ``partitionkey`` is the CloudEvents partitioning extension (= Kafka key,
    the aggregate id); ``aggregateversion`` lets consumers drop stale events;
    ``traceparent`` and ``tracestate`` are the CloudEvents distributed-tracing extension:
    the W3C trace context of the span that emitted it (the request's, or the span in which a
    consumer applied the event that caused it), which the relay also sends as Kafka headers.
    """

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    subject: str | None = None
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = None
    partitionkey: str
    aggregateversion: int = Field(ge=0)
    traceparent: str | None = None
    tracestate: str | None = None
    data: dict[str, Any]

    def to_bytes(self) -> bytes:
        """Compact UTF-8 JSON, absent optional attributes left out.

        pydantic's serializer rather than ``json.dumps`` of a dump: much less CPU
        (see ADR-0017), and text outside ASCII is sent as UTF-8 rather than as
        ``\\u`` escapes (the same JSON value).
        """
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> CloudEvent:
        return cls.model_validate_json(raw)

    def payload(self) -> EventPayload:
        """The typed payload, fields this code does not know ignored; ``LookupError`` for an unknown type."""
        model = EventPayload.registry.get(self.type)
        if model is None:
            raise LookupError(f"unknown event type {self.type!r}")
        return read_payload(model, self.data)


# CloudEvents Kafka protocol binding, binary mode: each attribute a ``ce_<name>``
# header (UTF-8), ``datacontenttype`` the ``content-type`` header, ``data`` the value.
BINARY_MODE_PREFIX = "ce_"
KAFKA_CONTENT_TYPE_HEADER = "content-type"


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or a ``+json`` type, parameters (``; charset=utf-8``) aside."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def binary_mode_attributes(headers: Sequence[tuple[str, bytes]], key: bytes | None) -> dict[str, Any] | None:
    """The CloudEvent attributes of a binary-mode Kafka record, or None if it is not one.

    The binding's rule: a ``content-type`` of ``application/cloudevents...`` is
    structured mode (what our producers send: the value is the whole event),
    whatever other headers say; otherwise a ``ce_specversion`` header makes it
    binary mode. The record key stands in for ``partitionkey`` when no header
    carries it (the binding's key mapping). ``data`` is not included: it is the
    record value.
    """
    named = {name.lower(): value for name, value in headers}
    content_type = named.get(KAFKA_CONTENT_TYPE_HEADER)
    if content_type is not None and content_type.lower().startswith(b"application/cloudevents"):
        return None
    if f"{BINARY_MODE_PREFIX}specversion" not in named:
        return None
    attributes: dict[str, Any] = {
        name.removeprefix(BINARY_MODE_PREFIX): value.decode("utf-8", errors="replace")
        for name, value in named.items()
        if name.startswith(BINARY_MODE_PREFIX) and value is not None
    }
    attributes.pop("data", None)  # not an attribute: the data is the value
    if content_type is not None:
        text = content_type.decode("utf-8", errors="replace")
        # Our envelope names JSON one way; a JSON type with parameters is still JSON.
        attributes["datacontenttype"] = "application/json" if is_json_media_type(text) else text
    if "partitionkey" not in attributes and key is not None:
        attributes["partitionkey"] = key.decode("utf-8", errors="replace")
    return attributes


def read_payload(model: type[_M], data: dict[str, Any]) -> _M:
    """``data`` validated as ``model``, ignoring fields the model does not declare (a tolerant reader).

    For the strict producer models (:class:`EventPayload`): a newer producer may
    have added a field this consumer's copy of the model does not have yet. Only
    unknown fields are dropped; any other error stands.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        if not errors or any(e["type"] != "extra_forbidden" for e in errors):
            raise
        trimmed = copy.deepcopy(data)
        for error in errors:
            _drop(trimmed, error["loc"])
        return model.model_validate(trimmed)


def _drop(data: Any, loc: Sequence[int | str]) -> None:
    *parents, last = loc
    node = data
    for step in parents:
        node = node[step]
    if isinstance(node, dict):
        node.pop(last, None)
