"""Deliveries on the outside channels (push, email, webhooks), every attempt, and subscriptions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Column, Index, Integer, Text, UniqueConstraint
from sqlmodel import Field

from casebridge_shared.db import StrEnumType, UTCDateTime, utcnow
from notifier.db import Base
from notifier.notifications.models import Channel


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # due at next_attempt_at
    SENT = "sent"  # the channel accepted it
    FAILED = "failed"  # gave up after the last attempt, or the target is gone


class Delivery(Base, table=True):
    """One message to one recipient on one channel: created with the notification, sent by the worker."""

    __tablename__ = "deliveries"
    __table_args__ = (
        # The same happening never reaches the same recipient on the same
        # channel twice, however often the event is delivered to us.
        UniqueConstraint("dedupe_key", "channel", "recipient", name="uq_deliveries_once"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )

    id: str = Field(primary_key=True, max_length=36)
    dedupe_key: str = Field(max_length=120)
    channel: Channel = Field(sa_column=Column(StrEnumType(Channel, 16), nullable=False))
    # push: subscription id; email: user id (address looked up when sending);
    # webhook: webhook subscription id.
    recipient: str = Field(max_length=36)
    case_id: str | None = Field(default=None, max_length=36, index=True)
    # What to send: subject/title, body, url, event ... (channel-specific).
    message: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: DeliveryStatus = Field(
        default=DeliveryStatus.PENDING, sa_column=Column(StrEnumType(DeliveryStatus, 16), nullable=False)
    )
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The span that queued it (the consumer's span for the event): the dispatcher's span for
    # the sending is its child, and a webhook request carries it on as ``traceparent``.
    traceparent: str | None = Field(default=None, max_length=55)


class DeliveryAttempt(Base, table=True):
    __tablename__ = "delivery_attempts"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    delivery_id: str = Field(max_length=36, index=True)
    channel: str = Field(max_length=16)
    recipient: str = Field(max_length=36)
    attempt: int
    status: str = Field(max_length=16)  # sent | failed | gone
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PushSubscription(Base, table=True):
    """A browser's or phone's Web Push endpoint with its keys (RFC 8291)."""

    __tablename__ = "push_subscriptions"

    id: str = Field(primary_key=True, max_length=36)
    user_id: str = Field(max_length=36, index=True)
    endpoint: str = Field(max_length=2000, unique=True)
    p256dh: str = Field(max_length=200)
    auth: str = Field(max_length=100)
    user_agent: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class WebhookSubscription(Base, table=True):
    __tablename__ = "webhook_subscriptions"

    id: str = Field(primary_key=True, max_length=36)
    url: str = Field(max_length=2000)
    # ``whsec_`` + base64 of 32 random bytes (Standard Webhooks), sealed (``fernet:...``, see sealing.py).
    secret: str = Field(max_length=400)
    # The secret before the last rotation (sealed), still signing until ``previous_secret_expires_at``:
    # receivers switch over at their own pace (Standard Webhooks: several signatures per message).
    previous_secret: str | None = Field(default=None, max_length=400)
    previous_secret_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # CloudEvents types to send; empty: every case event.
    event_types: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    description: str = Field(default="", max_length=500)
    active: bool = True
    consecutive_failures: int = 0
    disabled_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_by: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # The ETag: one more with every change of what an admin sets (not the failure counter).
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))


class DeliveryRedelivery(Base, table=True):
    """Who asked for a failed delivery to be sent again, and when (the audit of manual redeliveries)."""

    __tablename__ = "delivery_redeliveries"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    delivery_id: str = Field(max_length=36, index=True)
    requested_by: str = Field(max_length=100)
    # The delivery's state when asked: what the redelivery overrode.
    previous_status: str = Field(max_length=16)
    previous_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# -- API shapes ---------------------------------------------------------------


class PushKeys(BaseModel):
    p256dh: str = PydanticField(min_length=20, max_length=200, pattern=r"^[A-Za-z0-9_\-=]+$")
    auth: str = PydanticField(min_length=8, max_length=100, pattern=r"^[A-Za-z0-9_\-=]+$")


class PushSubscriptionCreate(BaseModel):
    """What the browser's ``PushSubscription.toJSON()`` gives."""

    endpoint: AnyHttpUrl
    keys: PushKeys


class PushSubscriptionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    endpoint: str
    created_at: datetime


EventTypes = Annotated[
    list[str],
    PydanticField(
        max_length=50,
        description="CloudEvents types to send (GET /webhooks/event-types lists them); empty: all of them",
    ),
]


class WebhookCreate(BaseModel):
    url: AnyHttpUrl
    event_types: EventTypes = PydanticField(default_factory=list)
    description: str = PydanticField(default="", max_length=500)


class WebhookRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    url: str
    event_types: list[str]
    description: str
    active: bool
    consecutive_failures: int
    disabled_reason: str | None
    created_at: datetime
    version: int
    previous_secret_expires_at: datetime | None = PydanticField(
        description="Until then deliveries are signed with the previous secret too (after a rotation)"
    )


class WebhookCreated(WebhookRead):
    secret: str = PydanticField(description="Shown once: keep it to verify our signatures")


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl | None = None
    active: bool | None = None
    event_types: EventTypes | None = None
    description: str | None = PydanticField(default=None, max_length=500)


class EventTypeRead(BaseModel):
    type: str
    topic: str


class RedeliveryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    delivery_id: str
    requested_by: str
    previous_status: str
    previous_error: str | None
    at: datetime


class DeliveryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    channel: str
    recipient: str
    case_id: str | None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


class DeliveryAttemptRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    delivery_id: str
    channel: str
    recipient: str
    attempt: int
    status: str
    error: str | None
    at: datetime
