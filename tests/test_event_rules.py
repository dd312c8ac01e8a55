"""Issue 25: the consumers' rules for events stay in step with the producers.

Each consumer trusts, for each event type it handles, exactly the source of the
service whose contract publishes that type; and the limits its reader models put
on order, catalog and case fields are the ones the producer's API (or, for what
no request sets, its column) puts on the same fields: a longer value can only
come from a broken or forged producer.
"""

from __future__ import annotations

from typing import Any, get_args

import pytest
from annotated_types import MaxLen
from pydantic import BaseModel

from case_handling.cases.models import (
    AssignRequest,
    Attachment,
    CancelRequest,
    Case,
    CommunicationCreate,
    SolutionCreate,
)
from case_handling.intake import events as case_readers
from casebridge_shared.contracts import discover
from casebridge_shared.events import service_source
from casebridge_shared.inbox import EventConsumer
from customer_ledger.customers import events as ledger_readers
from notifier.notifications import events as notifier_readers
from order_intake.catalog.models import ProductCreate
from order_intake.identity.models import CustomerRegistration, User
from order_intake.orders.models import OrderCancel, OrderCreate
from order_intake.progress import events as intake_readers


def test_each_consumer_trusts_for_each_type_exactly_the_service_whose_contract_publishes_it(
    service_consumers: dict[str, EventConsumer],
) -> None:
    publisher = {c.event_type: c.publisher for c in discover()}
    for service, consumer in service_consumers.items():
        handled = set(consumer.handlers)
        assert handled, service
        assert set(consumer.sources) == handled, f"{service}: every handled type has an owner, no more"
        for event_type in handled:
            assert event_type in publisher, f"{service} handles {event_type}, which no contract publishes"
            assert consumer.sources[event_type] == service_source(publisher[event_type]), (
                f"{service} trusts {consumer.sources[event_type]} for {event_type}, "
                f"but {publisher[event_type]} publishes it"
            )
            assert publisher[event_type] != service, f"{service} consumes its own {event_type}"


def _models_within(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and every model its fields hold (lists, optionals, unions included)."""
    found: list[type[BaseModel]] = []
    pending: list[Any] = [model]
    while pending:
        candidate = pending.pop()
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            if candidate in found:
                continue
            found.append(candidate)
            pending.extend(field.annotation for field in candidate.model_fields.values())
        else:
            pending.extend(get_args(candidate))
    return found


def test_every_consumer_reads_with_models_that_ignore_added_fields(
    service_consumers: dict[str, EventConsumer],
) -> None:
    """Issue 27: a producer may add a field to any payload (docs/events); no consumer refuses it."""
    for service, consumer in service_consumers.items():
        for event_type in consumer.handlers:
            reader = consumer.payload_models.get(event_type)
            assert reader is not None, f"{service} reads {event_type} without a reader model of its own"
            for model in _models_within(reader):
                assert model.model_config.get("extra", "ignore") == "ignore", (
                    f"{service}: {model.__name__} (in {event_type}) refuses fields it does not know"
                )


def max_length(model: type[BaseModel], name: str) -> int | None:
    lengths = [m.max_length for m in model.model_fields[name].metadata if isinstance(m, MaxLen)]
    return lengths[0] if lengths else None


def column_length(model: Any, name: str) -> int:
    return int(model.__table__.c[name].type.length)


CASE_READERS = (intake_readers.CaseEvent, notifier_readers.CaseEvent, ledger_readers.CaseProgress)

# (reader model, field) -> the limit order-intake's API (or, for e-mail, its column) has.
API_LIMITS: list[tuple[type[BaseModel], str, int | None]] = [
    *(
        (reader, "description", max_length(OrderCreate, "description"))
        for reader in (case_readers.OrderState, case_readers.OrderCancelled, ledger_readers.OrderState)
    ),
    (case_readers.OrderCancelled, "reason", max_length(OrderCancel, "reason")),
    *(
        (reader, name, max_length(ProductCreate, name))
        for reader in (case_readers.ProductSnapshot, case_readers.ProductState)
        for name in ("title", "description", "deliverables", "category", "currency")
    ),
    (ledger_readers.OrderedProduct, "title", max_length(ProductCreate, "title")),
    (ledger_readers.OrderedProduct, "category", max_length(ProductCreate, "category")),
    *(
        (reader, name, max_length(CustomerRegistration, name))
        for reader in (case_readers.CustomerContact, ledger_readers.OrderingCustomer)
        for name in ("full_name", "phone")
    ),
    *(
        (reader, "email", column_length(User, "email"))
        for reader in (case_readers.CustomerContact, ledger_readers.OrderingCustomer)
    ),
    # case events, against case-handling's API and columns
    *(
        (reader, name, column_length(Case, column))
        for reader in CASE_READERS
        for name, column in (("case_id", "id"), ("order_id", "order_id"), ("customer_id", "customer_id"))
    ),
    *(
        (reader, "status", column_length(Case, "status"))
        for reader in (notifier_readers.CaseEvent, ledger_readers.CaseProgress)
    ),
    *(
        (reader, "product_title", column_length(Case, "product_title"))
        for reader in (intake_readers.CaseOpened, notifier_readers.CaseOpened, ledger_readers.CaseProgress)
    ),
    (notifier_readers.CaseOpened, "product_category", column_length(Case, "product_category")),
    *(
        (reader, "assignee_name", max_length(AssignRequest, "assignee_name"))
        for reader in (intake_readers.CaseAssigned, notifier_readers.CaseAssigned, CASE_READERS[2])
    ),
    (notifier_readers.CaseAssigned, "assignee_id", max_length(AssignRequest, "assignee_id")),
    (notifier_readers.CaseAssigned, "assigned_by", column_length(Case, "assignee_id")),
    (notifier_readers.SolutionProposed, "proposed_by", column_length(Case, "assignee_id")),
    (notifier_readers.CaseCancelled, "assignee_id", column_length(Case, "assignee_id")),
    (
        intake_readers.CommunicationRecorded,
        "customer_visible_summary",
        max_length(CommunicationCreate, "summary"),
    ),
    *(
        (reader, "solution_summary", max_length(SolutionCreate, "summary"))
        for reader in (
            intake_readers.SolutionProposed,
            notifier_readers.SolutionProposed,
            ledger_readers.CaseProgress,
        )
    ),
    (intake_readers.SolutionProposed, "solution_text", max_length(SolutionCreate, "text")),
    *(
        (reader, "reason", max_length(CancelRequest, "reason"))
        for reader in (intake_readers.CaseCancelled, notifier_readers.CaseCancelled, CASE_READERS[2])
    ),
    (intake_readers.AttachmentAdded, "file_name", column_length(Attachment, "file_name")),
    (intake_readers.AttachmentAdded, "media_type", column_length(Attachment, "media_type")),
]


@pytest.mark.parametrize(
    ("reader", "name", "limit"),
    API_LIMITS,
    ids=[f"{r.__module__}.{r.__name__}.{n}" for r, n, _ in API_LIMITS],
)
def test_reader_models_limit_order_and_catalog_fields_as_order_intake_s_api_does(
    reader: type[BaseModel], name: str, limit: int | None
) -> None:
    assert limit is not None
    assert max_length(reader, name) == limit
