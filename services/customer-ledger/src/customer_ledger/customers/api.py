"""Routes: customer records for departments and admin, and a customer's own progress (B2-B7).

Reads answer with the fields the reader's grant shows (so their schema is the
full record with fields possibly left out); writes answer with the record as
written. Every read and write is journaled before the answer goes out.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, create_model

from casebridge_shared.auth import CurrentUser, Department, Principal, Role, require_roles
from casebridge_shared.idempotency import Answer, Idempotent, create_once_with_others
from casebridge_shared.openapi import ETAG, IDEMPOTENT_REPLAYED, NOT_MODIFIED, response_headers
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.pagination import Page, PageDep
from casebridge_shared.problems import PROBLEM_RESPONSES
from casebridge_shared.versioning import IfMatch, IfNoneMatch, etag, not_modified
from customer_ledger.customers import service
from customer_ledger.customers.models import (
    Association,
    AssociationCreate,
    BulkRecord,
    BulkRecorded,
    Customer,
    CustomerCreate,
    CustomerUpdate,
    Demand,
    DemandCreate,
    DemandUpdate,
    HandOff,
    Payment,
    PaymentCorrection,
    PaymentCreate,
    ProgressCorrection,
    ProgressCreate,
    ProgressEntry,
    Removal,
)
from customer_ledger.db import idempotent_requests
from customer_ledger.deps import ContainerDep, WritesDep
from customer_ledger.grants.models import KEY_FIELDS

router = APIRouter(tags=["customers"], responses=PROBLEM_RESPONSES)

Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
CustomerId = Annotated[str, Path(max_length=36)]
SHAPED = "Fields outside the reader's grant are left out."


def _json(content: Any, status_code: int = status.HTTP_200_OK) -> JSONResponse:
    return JSONResponse(content, status_code=status_code)


def _shaped(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` as the OpenAPI documents a read: a field grant may leave out all but the key fields."""
    fields: dict[str, Any] = {
        name: (info.annotation, ... if name in KEY_FIELDS else None)
        for name, info in model.model_fields.items()
    }
    shaped: type[BaseModel] = create_model(f"{model.__name__}Read", **fields)
    return shaped


CustomerRead = _shaped(Customer)


@router.get(
    "/customers",
    summary="Customers the reader may see",
    response_model=None,
    responses={200: {"description": SHAPED, "model": Page[CustomerRead]}},  # type: ignore[valid-type]
)
async def list_customers(
    reader: CurrentUser,
    writes: WritesDep,
    page: PageDep,
    stage: Annotated[Department | None, Query(description="Only customers held by this department")] = None,
) -> JSONResponse:
    items, total = await writes.run(
        lambda uow: service.list_customers(
            uow.session, reader, stage=stage.value if stage else None, limit=page.limit, offset=page.offset
        )
    )
    return _json({"items": items, "total": total, "limit": page.limit, "offset": page.offset})


# Every creating POST answers a retry with its Idempotency-Key again (casebridge_shared.idempotency).
REPLAYABLE = response_headers(201, IDEMPOTENT_REPLAYED)
# Demands, progress entries and payments change: their answers carry their version.
REPLAYABLE_VERSIONED = response_headers(201, IDEMPOTENT_REPLAYED, ETAG)


@router.post(
    "/customers",
    status_code=201,
    response_model=Customer,
    summary="Register a customer",
    responses=REPLAYABLE,
)
async def create_customer(
    writer: CurrentUser,
    body: CustomerCreate,
    writes: WritesDep,
    container: ContainerDep,
    idempotent: Idempotent,
) -> Any:
    """A department's new customer is theirs (held and associated); admin's go to the default department."""
    department = container.settings.new_customer_department.value

    async def create(uow: UnitOfWork) -> Answer:
        customer = await service.create_customer(uow.session, writer, body, default_department=department)
        return Answer.of(201, customer)

    claim = idempotent.claim(idempotent_requests, writer.subject, body)
    return (await create_once_with_others(writes, claim, create)).response()


@router.get(
    "/customers/{customer_id}",
    summary="One customer",
    response_model=None,
    responses={
        200: {"description": SHAPED, "model": CustomerRead, **response_headers(200, ETAG)[200]},
        **NOT_MODIFIED,
    },
)
async def get_customer(
    customer_id: CustomerId, reader: CurrentUser, writes: WritesDep, if_none_match: IfNoneMatch = None
) -> Response:
    customer, version = await writes.run(lambda uow: service.read_customer(uow.session, reader, customer_id))
    unchanged = not_modified(if_none_match, version)
    if unchanged is not None:
        return unchanged
    answer = _json(customer)
    answer.headers[ETAG] = etag(version)
    return answer


@router.patch(
    "/customers/{customer_id}",
    response_model=Customer,
    summary="Change a customer's data",
    responses=response_headers(200, ETAG),
)
async def update_customer(
    customer_id: CustomerId,
    body: CustomerUpdate,
    writer: CurrentUser,
    writes: WritesDep,
    response: Response,
    version: IfMatch,
) -> Customer:
    customer = await writes.run(
        lambda uow: service.update_customer(uow.session, writer, customer_id, body, version)
    )
    response.headers[ETAG] = etag(customer.version)
    return customer


@router.post(
    "/customers/{customer_id}/handoff",
    response_model=Customer,
    summary="Hand the customer to the next department (sales → finance → process → technical → after_sales)",
    responses=response_headers(200, ETAG),
)
async def hand_off_customer(
    customer_id: CustomerId,
    body: HandOff,
    writer: CurrentUser,
    writes: WritesDep,
    response: Response,
    version: IfMatch,
) -> Customer:
    customer = await writes.run(lambda uow: service.hand_off(uow.session, writer, customer_id, body, version))
    response.headers[ETAG] = etag(customer.version)
    return customer


def _list_route(table: str, model: type[Any], summary: str) -> None:
    async def list_rows(customer_id: CustomerId, reader: CurrentUser, writes: WritesDep) -> JSONResponse:
        rows = await writes.run(lambda uow: service.list_of_customer(uow.session, reader, customer_id, table))
        return _json(rows)

    router.add_api_route(
        f"/customers/{{customer_id}}/{table}",
        list_rows,
        methods=["GET"],
        summary=summary,
        response_model=None,
        responses={200: {"description": SHAPED, "model": list[_shaped(model)]}},  # type: ignore[misc]
        name=f"list_{table}",
    )


_list_route("demands", Demand, "The customer's demands")
_list_route("associations", Association, "Which departments see the customer")
_list_route("progress", ProgressEntry, "The customer's project progress, oldest first")
_list_route("payments", Payment, "Payments recorded by finance")


@router.post(
    "/customers/{customer_id}/demands",
    status_code=201,
    responses=REPLAYABLE_VERSIONED,
    response_model=Demand,
    summary="Register a demand",
)
async def add_demand(
    customer_id: CustomerId,
    body: DemandCreate,
    writer: CurrentUser,
    writes: WritesDep,
    idempotent: Idempotent,
) -> Any:
    async def create(uow: UnitOfWork) -> Answer:
        demand = await service.add_demand(uow.session, writer, customer_id, body)
        return Answer.of(201, demand, ETag=etag(demand.version))

    claim = idempotent.claim(idempotent_requests, writer.subject, body)
    return (await create_once_with_others(writes, claim, create)).response()


@router.patch(
    "/customers/{customer_id}/demands/{demand_id}",
    response_model=Demand,
    summary="Change a demand",
    responses=response_headers(200, ETAG),
)
async def update_demand(
    customer_id: CustomerId,
    demand_id: Annotated[str, Path(max_length=36)],
    body: DemandUpdate,
    writer: CurrentUser,
    writes: WritesDep,
    response: Response,
    version: IfMatch,
) -> Demand:
    demand = await writes.run(
        lambda uow: service.update_demand(uow.session, writer, customer_id, demand_id, body, version)
    )
    response.headers[ETAG] = etag(demand.version)
    return demand


@router.post(
    "/customers/{customer_id}/progress",
    status_code=201,
    responses=REPLAYABLE_VERSIONED,
    response_model=ProgressEntry,
    summary="Record project progress (finance, process, admin)",
)
async def add_progress(
    customer_id: CustomerId,
    body: ProgressCreate,
    writer: CurrentUser,
    writes: WritesDep,
    idempotent: Idempotent,
) -> Any:
    async def create(uow: UnitOfWork) -> Answer:
        progress = await service.add_progress(uow.session, writer, customer_id, body)
        return Answer.of(201, progress, ETag=etag(progress.version))

    claim = idempotent.claim(idempotent_requests, writer.subject, body)
    return (await create_once_with_others(writes, claim, create)).response()


@router.post(
    "/customers/{customer_id}/payments",
    status_code=201,
    responses=REPLAYABLE_VERSIONED,
    response_model=Payment,
    summary="Record a payment (finance, admin)",
)
async def add_payment(
    customer_id: CustomerId,
    body: PaymentCreate,
    writer: CurrentUser,
    writes: WritesDep,
    idempotent: Idempotent,
) -> Any:
    async def create(uow: UnitOfWork) -> Answer:
        payment = await service.add_payment(uow.session, writer, customer_id, body)
        return Answer.of(201, payment, ETag=etag(payment.version))

    claim = idempotent.claim(idempotent_requests, writer.subject, body)
    return (await create_once_with_others(writes, claim, create)).response()


@router.post(
    "/bulk",
    status_code=201,
    response_model=BulkRecorded,
    summary="Record many demands, progress entries and payments at once (all or none)",
    responses=REPLAYABLE,
)
async def record_many(
    body: BulkRecord, writer: CurrentUser, writes: WritesDep, container: ContainerDep, idempotent: Idempotent
) -> Any:
    """For imports (a bank statement's payments, another system's stage changes).

    Each operation is checked and journaled as its own POST would be (its own entry,
    its own change record); the first one refused refuses the request, naming its index.
    An import retried with its Idempotency-Key records nothing again: the whole batch is
    one request, kept with one answer.
    """
    at_most = container.settings.bulk_max_operations

    async def create(uow: UnitOfWork) -> Answer:
        items = await service.record_many(uow.session, writer, body.operations, at_most=at_most)
        return Answer.of(201, BulkRecorded(items=items))

    claim = idempotent.claim(idempotent_requests, writer.subject, body)
    return (await create_once_with_others(writes, claim, create)).response()


@router.patch(
    "/customers/{customer_id}/progress/{entry_id}",
    response_model=ProgressEntry,
    summary="Correct a progress entry (admin; reason required)",
    responses=response_headers(200, ETAG),
)
async def correct_progress(
    customer_id: CustomerId,
    entry_id: Annotated[str, Path(max_length=36)],
    body: ProgressCorrection,
    admin: Admin,
    writes: WritesDep,
    response: Response,
    version: IfMatch,
) -> ProgressEntry:
    entry = await writes.run(
        lambda uow: service.correct_progress(uow.session, admin, customer_id, entry_id, body, version)
    )
    response.headers[ETAG] = etag(entry.version)
    return entry


@router.patch(
    "/customers/{customer_id}/payments/{payment_id}",
    response_model=Payment,
    summary="Correct a payment (associated finance, admin; reason required)",
    responses=response_headers(200, ETAG),
)
async def correct_payment(
    customer_id: CustomerId,
    payment_id: Annotated[str, Path(max_length=36)],
    body: PaymentCorrection,
    writer: CurrentUser,
    writes: WritesDep,
    response: Response,
    version: IfMatch,
) -> Payment:
    payment = await writes.run(
        lambda uow: service.correct_payment(uow.session, writer, customer_id, payment_id, body, version)
    )
    response.headers[ETAG] = etag(payment.version)
    return payment


@router.post(
    "/customers/{customer_id}/associations",
    status_code=201,
    responses=REPLAYABLE,
    response_model=Association,
    summary="Let a department see the customer (admin)",
)
async def add_association(
    customer_id: CustomerId, body: AssociationCreate, admin: Admin, writes: WritesDep, idempotent: Idempotent
) -> Any:
    async def create(uow: UnitOfWork) -> Answer:
        return Answer.of(201, await service.add_association(uow.session, admin, customer_id, body))

    claim = idempotent.claim(idempotent_requests, admin.subject, body)
    return (await create_once_with_others(writes, claim, create)).response()


@router.delete(
    "/customers/{customer_id}/associations/{department}",
    status_code=204,
    summary="Stop a department seeing the customer (admin; reason required)",
)
async def remove_association(
    customer_id: CustomerId,
    department: Department,
    admin: Admin,
    writes: WritesDep,
    reason: Annotated[str, Query(min_length=1, max_length=500)],
    feedback_ref: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
) -> None:
    await writes.run(
        lambda uow: service.remove_association(
            uow.session, admin, customer_id, department, Removal(reason=reason, feedback_ref=feedback_ref)
        )
    )


@router.get(
    "/me/progress",
    response_model=None,
    responses={200: {"model": list[ProgressEntry]}},
    summary="A customer's own project progress (once the firm has opened it to them)",
)
async def my_progress(customer: CurrentUser, writes: WritesDep) -> JSONResponse:
    rows = await writes.run(lambda uow: service.my_progress(uow.session, customer))
    return _json(rows)
