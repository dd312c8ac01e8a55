"""Every table of order-intake, imported so the metadata is complete (migrations, tests)."""

from order_intake.catalog.models import Product
from order_intake.db import inbox, metadata, outbox
from order_intake.documents.models import Document
from order_intake.identity.models import LoginThrottle, RefreshToken, SigningKey, User
from order_intake.orders.models import IdempotencyKey, Order, OrderProgress
from order_intake.threads.models import OrderFile, OrderMessage, ReadReceipt

__all__ = [
    "Document",
    "IdempotencyKey",
    "LoginThrottle",
    "Order",
    "OrderFile",
    "OrderMessage",
    "OrderProgress",
    "Product",
    "ReadReceipt",
    "RefreshToken",
    "SigningKey",
    "User",
    "inbox",
    "metadata",
    "outbox",
]
