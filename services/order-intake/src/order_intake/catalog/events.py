"""Catalog events on ``casebridge.catalog.v1``: each carries the whole product."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from casebridge_shared.events import CATALOG_TOPIC, EventPayload


class ProductState(EventPayload):
    topic = CATALOG_TOPIC

    product_id: str
    title: str
    description: str
    deliverables: list[str]
    category: str
    price: Decimal
    currency: str
    attributes: dict[str, Any]
    active: bool
    archived: bool
    version: int
    updated_at: datetime


class ProductCreated(ProductState):
    event_type = "casebridge.catalog.product-created.v1"
    summary = "An admin added a legal product."


class ProductUpdated(ProductState):
    event_type = "casebridge.catalog.product-updated.v1"
    summary = "A product's content, price or attributes changed."


class ProductArchived(ProductState):
    event_type = "casebridge.catalog.product-archived.v1"
    summary = "A product was withdrawn; past orders keep their snapshot."
