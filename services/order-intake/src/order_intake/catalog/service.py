"""Catalog logic (A1, A8). No HTTP here."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.currency import check_amount, money
from casebridge_shared.db import utcnow
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.problems import Conflict, NotFound, Unprocessable
from casebridge_shared.versioning import check_version
from order_intake.catalog import events
from order_intake.catalog.models import Product, ProductCreate, ProductUpdate


def is_orderable(*, active: bool, archived: bool) -> bool:
    """Whether customers see the product and may order it: active and not archived (A1)."""
    return active and not archived


def _state(product: Product) -> dict[str, object]:
    return {
        "product_id": product.id,
        "title": product.title,
        "description": product.description,
        "deliverables": list(product.deliverables),
        "category": product.category,
        "price": money(product.price, product.currency),
        "currency": product.currency,
        "attributes": dict(product.attributes),
        "active": product.active,
        "archived": product.archived,
        "version": product.version,
        "updated_at": product.updated_at,
    }


async def create_product(uow: UnitOfWork, data: ProductCreate) -> Product:
    product = Product(**data.model_dump())
    uow.session.add(product)
    uow.emit(events.ProductCreated(**_state(product)), key=product.id, version=product.version)
    await uow.commit()
    return product


async def get_product(session: AsyncSession, product_id: str, *, include_hidden: bool) -> Product:
    product = await session.get(Product, product_id)
    if product is None or (
        not include_hidden and not is_orderable(active=product.active, archived=product.archived)
    ):
        raise NotFound(f"no product {product_id}")
    return product


async def update_product(
    uow: UnitOfWork, product_id: str, data: ProductUpdate, expected_version: int | None
) -> Product:
    product = await uow.session.get(Product, product_id)
    if product is None:
        raise NotFound(f"no product {product_id}")
    if product.archived:
        raise Conflict("an archived product cannot be changed", state="archived")
    check_version(product.version, expected_version)
    changes = data.model_dump(exclude_unset=True)
    for name in (
        "title",
        "description",
        "category",
        "price",
        "currency",
        "deliverables",
        "attributes",
        "active",
    ):
        if name in changes and changes[name] is None:
            raise Unprocessable(f"{name} cannot be null", field=f"body.{name}")
    price = changes.get("price", product.price)
    currency = changes.get("currency", product.currency)
    problem = check_amount(Decimal(price), currency)
    if problem:
        raise Unprocessable(problem, field="body.price")
    if not changes:
        return product
    for name, value in changes.items():
        setattr(product, name, value)
    product.version += 1
    product.updated_at = utcnow()
    uow.session.add(product)
    uow.emit(events.ProductUpdated(**_state(product)), key=product.id, version=product.version)
    await uow.commit()
    return product


async def archive_product(uow: UnitOfWork, product_id: str, expected_version: int | None) -> Product:
    product = await uow.session.get(Product, product_id)
    if product is None:
        raise NotFound(f"no product {product_id}")
    if product.archived:
        return product  # DELETE is idempotent
    check_version(product.version, expected_version)
    now = utcnow()
    product.archived_at = now
    product.active = False
    product.version += 1
    product.updated_at = now
    uow.session.add(product)
    uow.emit(events.ProductArchived(**_state(product)), key=product.id, version=product.version)
    await uow.commit()
    return product


async def list_products(
    session: AsyncSession,
    *,
    category: str | None,
    q: str | None,
    active: bool | None,
    include_archived: bool,
    limit: int,
    offset: int,
) -> tuple[list[Product], int]:
    query = select(Product)
    if category:
        query = query.where(Product.category == category)
    if active is not None:
        query = query.where(Product.active == active)
    if not include_archived:
        query = query.where(col(Product.archived_at).is_(None))
    if q:
        pattern = f"%{q.lower()}%"
        query = query.where(
            or_(
                func.lower(col(Product.title)).like(pattern),
                func.lower(col(Product.description)).like(pattern),
            )
        )
    total = (await session.exec(select(func.count()).select_from(query.subquery()))).one()
    rows = await session.exec(query.order_by(col(Product.title), col(Product.id)).limit(limit).offset(offset))
    return list(rows.all()), int(total)
