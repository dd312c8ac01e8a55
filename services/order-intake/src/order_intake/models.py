"""Every table of order-intake, imported so the metadata is complete (migrations, tests)."""

from order_intake.catalog.models import Product
from order_intake.db import inbox, metadata, outbox
from order_intake.documents.models import Document
from order_intake.identity.models import RefreshToken, SigningKey, User
from order_intake.orders.models import IdempotencyKey, Order, OrderProgress

__all__ = [
    "Document",
    "IdempotencyKey",
    "Order",
    "OrderProgress",
    "Product",
    "RefreshToken",
    "SigningKey",
    "User",
    "inbox",
    "metadata",
    "outbox",
]
