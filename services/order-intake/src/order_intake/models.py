"""Every table of order-intake, imported so the metadata is complete (migrations, tests)."""

from order_intake.catalog.models import Product
from order_intake.db import metadata, outbox
from order_intake.identity.models import SigningKey, User
from order_intake.orders.models import IdempotencyKey, Order, OrderProgress

__all__ = [
    "IdempotencyKey",
    "Order",
    "OrderProgress",
    "Product",
    "SigningKey",
    "User",
    "metadata",
    "outbox",
]
