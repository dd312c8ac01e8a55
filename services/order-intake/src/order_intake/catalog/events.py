"""Catalog events on ``casebridge.catalog.v1``: each carries the whole product."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from casebridge_shared.classification import PUBLIC
from casebridge_shared.events import CATALOG_TOPIC, EventPayload


class ProductState(EventPayload):
    topic = CATALOG_TOPIC

    product_id: Annotated[str, PUBLIC]
    title: Annotated[str, PUBLIC]
    description: Annotated[str, PUBLIC]
    deliverables: Annotated[list[str], PUBLIC]
    category: Annotated[str, PUBLIC]
    price: Annotated[Decimal, PUBLIC]
    currency: Annotated[str, PUBLIC]
    attributes: Annotated[dict[str, Any], PUBLIC]
    active: Annotated[bool, PUBLIC]
    archived: Annotated[bool, PUBLIC]
    version: Annotated[int, PUBLIC]  # the product's revision, as published in the catalog
    updated_at: Annotated[datetime, PUBLIC]


class ProductCreated(ProductState):
    event_type = "casebridge.catalog.product-created.v1"
    summary = "An admin added a legal product."


class ProductUpdated(ProductState):
    event_type = "casebridge.catalog.product-updated.v1"
    summary = "A product's content, price or attributes changed."


class ProductArchived(ProductState):
    event_type = "casebridge.catalog.product-archived.v1"
    summary = "A product was withdrawn; past orders keep their snapshot."
