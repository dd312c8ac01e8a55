"""Routes: ordering and the customer's own view of orders (A2, A3, A8)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from casebridge_shared.auth import STAFF_ROLES, Principal, Role, require_roles
from casebridge_shared.idempotency import IdempotencyKey, mark_replayed
from casebridge_shared.openapi import ETAG, IDEMPOTENT_REPLAYED, LINK, LOCATION, response_headers
from casebridge_shared.pagination import CursorPage, CursorPageDep, set_page_links
from casebridge_shared.problems import PROBLEM_RESPONSES
from casebridge_shared.versioning import IfMatch, IfMatchRequired, etag
from order_intake.deps import SessionDep, UowDep, WritesDep
from order_intake.orders import live, service
from order_intake.orders.models import (
    OrderCancel,
    OrderCreate,
    OrderRead,
    OrderStatus,
    OrderSummary,
    OrderUpdate,
)

router = APIRouter(prefix="/orders", tags=["orders"], responses=PROBLEM_RESPONSES)

OrderReader = Annotated[Principal, Depends(require_roles(Role.CUSTOMER, *STAFF_ROLES))]
Customer = Annotated[Principal, Depends(require_roles(Role.CUSTOMER))]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderRead,
    summary="Order a product",
    responses=response_headers(201, LOCATION, ETAG, IDEMPOTENT_REPLAYED),
)
async def place_order(
    principal: Customer,
    body: OrderCreate,
    writes: WritesDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    order, replayed = await service.place_order_with_others(writes, principal, body, idempotency_key)
    response.headers["Location"] = f"/orders/{order.id}"
    response.headers["ETag"] = etag(order.version)
    mark_replayed(response, replayed)
    return order


@router.get(
    "",
    response_model=CursorPage[OrderSummary],
    summary="My orders (staff: all orders), newest first",
    responses=response_headers(200, LINK),
)
async def list_orders(
    principal: OrderReader,
    session: SessionDep,
    page: CursorPageDep,
    request: Request,
    response: Response,
    status_: Annotated[OrderStatus | None, Query(alias="status")] = None,
    product_id: Annotated[str | None, Query(max_length=36)] = None,
    customer_id: Annotated[str | None, Query(max_length=36, description="Staff only")] = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
) -> Any:
    orders, total, next_cursor = await service.list_orders(
        session,
        principal,
        status=status_,
        product_id=product_id,
        customer_id=customer_id,
        created_from=created_from,
        created_to=created_to,
        page=page,
    )
    set_page_links(request, response, next_cursor)
    items = [
        OrderSummary(
            id=o.id,
            customer_id=o.customer_id,
            product_id=o.product_id,
            product_title=str(o.product.get("title", "")),
            status=OrderStatus(o.status),
            version=o.version,
            created_at=o.created_at,
            updated_at=o.updated_at,
        )
        for o in orders
    ]
    return CursorPage[OrderSummary](
        items=items, total=total, limit=page.limit, offset=page.offset, next_cursor=next_cursor
    )


@router.get(
    "/{order_id}",
    response_model=OrderRead,
    summary="An order with its progress and solution",
    responses=response_headers(200, ETAG),
)
async def get_order(principal: OrderReader, order_id: str, session: SessionDep, response: Response) -> Any:
    order = await service.get_order(session, principal, order_id)
    response.headers["ETag"] = etag(order.version)
    return await service.read_order(session, order)


@router.patch(
    "/{order_id}",
    response_model=OrderRead,
    summary="Change the description while submitted",
    responses=response_headers(200, ETAG),
)
async def update_order(
    principal: Customer,
    order_id: str,
    body: OrderUpdate,
    uow: UowDep,
    response: Response,
    version: IfMatchRequired,
) -> Any:
    order = await service.update_order(uow, principal, order_id, body, version)
    response.headers["ETag"] = etag(order.version)
    return await service.read_order(uow.session, order)


@router.post(
    "/{order_id}/cancel",
    response_model=OrderRead,
    summary="Cancel an order",
    responses=response_headers(200, ETAG),
)
async def cancel_order(
    principal: OrderReader,
    order_id: str,
    uow: UowDep,
    response: Response,
    version: IfMatch,
    body: OrderCancel | None = None,
) -> Any:
    order = await service.cancel_order(
        uow,
        principal,
        order_id,
        body.reason if body else None,
        version,
    )
    response.headers["ETag"] = etag(order.version)
    return await service.read_order(uow.session, order)


@router.get(
    "/{order_id}/stream",
    summary="Live changes of an order (Server-Sent Events): fetch the order again on each",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An endless event stream"}},
)
async def order_stream(
    principal: OrderReader,
    order_id: str,
    session: SessionDep,
    request: Request,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None,
) -> StreamingResponse:
    """Each event is `event: order-updated`, `data: {"order_id","status","updated_at"}`, sent whenever
    the order, its timeline, its documents or its messages change; the page then fetches it again.

    Without `Last-Event-ID` the first event is the order as it is now; with it (the browser's
    EventSource sends it on reconnecting), an event comes at once only if the order changed
    meanwhile. A comment line is sent every `stream_heartbeat_seconds`; `retry:` tells the browser
    how soon to reconnect. Only the order's customer, or staff, may listen (others: 404).
    """
    await service.get_order(session, principal, order_id)  # someone else's order: 404, as when reading it
    await session.close()  # the stream may stay open for hours: no connection held for it
    watch: live.OrderWatch = request.app.state.order_watch
    settings = request.app.state.container.settings
    body = live.stream(watch, order_id, last_event_id, heartbeat_seconds=settings.stream_heartbeat_seconds)
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
