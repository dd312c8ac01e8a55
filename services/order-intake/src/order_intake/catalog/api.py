"""Routes: the public catalog and its administration (A1, A8)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from casebridge_shared.auth import AdminUser, OptionalUser
from casebridge_shared.idempotency import Answer, Idempotent, create_once
from casebridge_shared.openapi import ETAG, IDEMPOTENT_REPLAYED, LOCATION, NOT_MODIFIED, response_headers
from casebridge_shared.pagination import Page, PageDep
from casebridge_shared.problems import PROBLEM_RESPONSES
from casebridge_shared.versioning import IfMatch, IfNoneMatch, etag, not_modified
from order_intake.catalog import service
from order_intake.catalog.models import ProductCreate, ProductRead, ProductUpdate
from order_intake.db import idempotent_requests
from order_intake.deps import SessionDep, UowDep

router = APIRouter(prefix="/products", tags=["catalog"], responses=PROBLEM_RESPONSES)


async def _is_admin(principal: OptionalUser) -> bool:
    """The catalog is public; an admin (by token or browser session) additionally sees hidden products."""
    return principal is not None and principal.is_admin


IsAdmin = Annotated[bool, Depends(_is_admin)]


def _read(product: Any) -> ProductRead:
    return ProductRead.model_validate(product)


@router.get("", response_model=Page[ProductRead], summary="Browse the catalog (public)")
async def list_products(
    session: SessionDep,
    page: PageDep,
    is_admin: IsAdmin,
    category: Annotated[str | None, Query(max_length=100)] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text in title or description")] = None,
    active: Annotated[bool | None, Query(description="Admins only: filter by active")] = None,
    include_archived: Annotated[bool, Query(description="Admins only")] = False,
) -> Any:
    products, total = await service.list_products(
        session,
        category=category,
        q=q,
        active=active if is_admin else True,
        include_archived=include_archived and is_admin,
        limit=page.limit,
        offset=page.offset,
    )
    return Page[ProductRead](
        items=[_read(p) for p in products], total=total, limit=page.limit, offset=page.offset
    )


@router.get(
    "/{product_id}",
    response_model=ProductRead,
    summary="One product (public)",
    responses={**response_headers(200, ETAG), **NOT_MODIFIED},
)
async def get_product(
    product_id: str,
    session: SessionDep,
    is_admin: IsAdmin,
    response: Response,
    if_none_match: IfNoneMatch = None,
) -> Any:
    product = await service.get_product(session, product_id, include_hidden=is_admin)
    # Every change of a product bumps its version: the same ETag is the same product.
    unchanged = not_modified(if_none_match, product.version)
    if unchanged is not None:
        return unchanged
    response.headers["ETag"] = etag(product.version)
    return _read(product)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ProductRead,
    summary="Add a product (admin)",
    responses=response_headers(201, LOCATION, ETAG, IDEMPOTENT_REPLAYED),
)
async def create_product(admin: AdminUser, body: ProductCreate, uow: UowDep, idempotent: Idempotent) -> Any:
    async def create() -> Answer:
        product = await service.create_product(uow, body)
        return Answer.of(201, _read(product), Location=f"/products/{product.id}", ETag=etag(product.version))

    answer = await create_once(uow, idempotent.claim(idempotent_requests, admin.subject, body), create)
    return answer.response()


@router.patch(
    "/{product_id}",
    response_model=ProductRead,
    summary="Change a product (admin)",
    responses=response_headers(200, ETAG),
)
async def update_product(
    _admin: AdminUser,
    product_id: str,
    body: ProductUpdate,
    uow: UowDep,
    response: Response,
    version: IfMatch,
) -> Any:
    product = await service.update_product(uow, product_id, body, version)
    response.headers["ETag"] = etag(product.version)
    return _read(product)


@router.delete(
    "/{product_id}",
    response_model=ProductRead,
    summary="Archive a product (admin); orders keep their snapshot",
)
async def archive_product(
    _admin: AdminUser,
    product_id: str,
    uow: UowDep,
    version: IfMatch,
) -> Any:
    product = await service.archive_product(uow, product_id, version)
    return _read(product)
