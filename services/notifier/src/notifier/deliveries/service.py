"""Queueing deliveries with the change that caused them, and the dispatcher's bookkeeping. No HTTP here."""

from __future__ import annotations

import base64
import contextlib
import secrets
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.db import Database, new_id, on_commit, queue_insert, table_of, utcnow
from casebridge_shared.events import CASES_TOPIC, ORDERS_TOPIC, CloudEvent
from casebridge_shared.inbox import Handler
from casebridge_shared.outbound import OutboundPolicy, OutboundRefused
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.problems import Conflict, NotFound, PreconditionFailed, Unprocessable
from casebridge_shared.tracing import current_traceparent
from casebridge_shared.versioning import check_version
from notifier import memo
from notifier.deliveries.events import ORDER_EVENTS
from notifier.deliveries.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryRedelivery,
    DeliveryStatus,
    PushSubscription,
    PushSubscriptionCreate,
    WebhookCreate,
    WebhookSubscription,
    WebhookUpdate,
)
from notifier.deliveries.sealing import SecretBox
from notifier.notifications.events import ALL_CASE_EVENTS
from notifier.notifications.models import Channel

# What a webhook may subscribe to: every event the notifier consumes and passes on as is,
# with the topic it comes from (docs/notifier.md lists them). Anything else is refused at
# create and update (422): a typo would otherwise be a subscription that never fires.
SUBSCRIBABLE_EVENT_TYPES: dict[str, str] = {
    **dict.fromkeys(ALL_CASE_EVENTS, CASES_TOPIC),
    **dict.fromkeys(ORDER_EVENTS, ORDERS_TOPIC),
}

_DELIVERIES = table_of(Delivery)


def _delivery(
    dedupe_key: str, channel: Channel, recipient: str, case_id: str | None, message: dict[str, Any]
) -> dict[str, Any]:
    """A new delivery's row, due now; queued to be written with the transaction (not an ORM object)."""
    now = utcnow()
    return {
        "id": new_id(),
        "dedupe_key": dedupe_key,
        "channel": channel,
        "recipient": recipient,
        "case_id": case_id,
        "message": message,
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": None,
        "created_at": now,
        "sent_at": None,
        "traceparent": current_traceparent(),
    }


# This process's dispatchers, woken when a transaction that queued deliveries commits:
# a new alert goes out at once, and no dispatcher has to poll often to find it.
_WAKE_ON_QUEUED: set[Callable[[], None]] = set()


@contextlib.contextmanager
def woken_when_queued(wake: Callable[[], None]) -> Iterator[None]:
    """While inside: ``wake()`` after every commit in this process that queued deliveries."""
    _WAKE_ON_QUEUED.add(wake)
    try:
        yield
    finally:
        _WAKE_ON_QUEUED.discard(wake)


def _deliveries_queued() -> None:
    for wake in list(_WAKE_ON_QUEUED):
        wake()


def _queue(session: AsyncSession, *rows: dict[str, Any]) -> None:
    if rows:
        queue_insert(session, _DELIVERIES, *rows)
        on_commit(session, _deliveries_queued)


async def _subscriptions(session: AsyncSession, people: list[str]) -> dict[str, list[str]]:
    rows = await session.exec(
        select(PushSubscription.user_id, PushSubscription.id).where(col(PushSubscription.user_id).in_(people))
    )
    found: dict[str, list[str]] = {}
    for user_id, sub_id in rows.all():
        found.setdefault(user_id, []).append(sub_id)
    return found


async def devices_of(session: AsyncSession, people: list[str]) -> dict[str, list[str]]:
    """Each person's push subscription ids (remembered for the transaction)."""
    none: list[str] = []
    return await memo.per_item(
        session, "push-subscriptions", people, lambda m: _subscriptions(session, m), none
    )


def queue_push(
    session: AsyncSession,
    dedupe_key: str,
    case_id: str,
    devices: dict[str, list[str]],
    notifications: Sequence[dict[str, Any]],
    message: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    """One push delivery per device of each notification's recipient (``notifications``: rows with ids)."""
    for notification in notifications:
        body = message(notification)
        _queue(
            session,
            *(
                _delivery(dedupe_key, Channel.PUSH, sub_id, case_id, body)
                for sub_id in devices.get(notification["recipient_id"], [])
            ),
        )


def queue_email(
    session: AsyncSession, dedupe_key: str, case_id: str | None, user_id: str, message: dict[str, Any]
) -> None:
    """An email to a person; the address is looked up when sending, so a late directory entry still works."""
    _queue(session, _delivery(dedupe_key, Channel.EMAIL, user_id, case_id, message))


async def _active_webhooks(session: AsyncSession) -> list[WebhookSubscription]:
    rows = await session.exec(select(WebhookSubscription).where(col(WebhookSubscription.active).is_(True)))
    return list(rows.all())


async def queue_webhooks(session: AsyncSession, event: CloudEvent) -> int:
    """The event, as is, to every active webhook subscription that wants its type."""
    subs = await memo.once(session, "webhooks", lambda: _active_webhooks(session))
    is_case_event = event.type in ALL_CASE_EVENTS
    # No types named: every case event, as before order events could be subscribed to. Order
    # events carry the customer's name, email and description: only to a webhook that names them.
    wanted = [sub for sub in subs if event.type in sub.event_types or (not sub.event_types and is_case_event)]
    if not wanted:
        return 0
    body = {"event": event.model_dump(mode="json", exclude_none=True)}
    case_id = event.subject if is_case_event else None
    _queue(session, *(_delivery(event.id, Channel.WEBHOOK, sub.id, case_id, body) for sub in wanted))
    return len(wanted)


async def _pass_on(uow: UnitOfWork, event: CloudEvent, _payload: object) -> None:
    await queue_webhooks(uow.session, event)


# The consumer's handlers for the order events: to the webhooks that want them, nothing more.
ORDER_HANDLERS: dict[str, Handler] = dict.fromkeys(ORDER_EVENTS, _pass_on)


# -- the dispatcher's bookkeeping ------------------------------------------------


async def claim_due(db: Database, *, now: datetime, lease: timedelta, limit: int) -> list[Delivery]:
    """Deliveries due now, each leased to this worker until ``now + lease``: no two workers send one."""
    async with db.session() as session:
        candidates = list(
            (
                await session.exec(
                    select(Delivery)
                    .where(Delivery.status == DeliveryStatus.PENDING, col(Delivery.next_attempt_at) <= now)
                    .order_by(col(Delivery.next_attempt_at))
                    .limit(limit)
                )
            ).all()
        )
    if not candidates:
        return []
    claimed: list[Delivery] = []
    async with db.write_session() as session:
        for delivery in candidates:
            result = await session.execute(
                update(Delivery)
                .where(
                    col(Delivery.id) == delivery.id,
                    col(Delivery.status) == DeliveryStatus.PENDING,
                    # Another worker's lease moved it past ``now``.
                    col(Delivery.next_attempt_at) <= now,
                )
                .values(next_attempt_at=now + lease)
            )
            if int(getattr(result, "rowcount", 0) or 0) == 1:
                claimed.append(delivery)
        await session.commit()
    return claimed


async def record_attempt(
    db: Database,
    delivery: Delivery,
    *,
    status: DeliveryStatus,
    outcome: str,
    error: str | None,
    retry_at: datetime | None,
) -> None:
    """Write the attempt and the delivery's new state in one transaction.

    ``outcome`` is what this attempt did (sent, failed, gone); ``status`` is
    where the delivery stands after it (pending again when ``retry_at``).
    """
    now = utcnow()
    attempt = delivery.attempts + 1
    values: dict[str, Any] = {"attempts": attempt, "status": status, "last_error": error}
    if status is DeliveryStatus.SENT:
        values["sent_at"] = now
    if retry_at is not None:
        values["next_attempt_at"] = retry_at
    async with db.write_session() as session:
        await session.execute(update(Delivery).where(col(Delivery.id) == delivery.id).values(**values))
        session.add(
            DeliveryAttempt(
                delivery_id=delivery.id,
                channel=delivery.channel,
                recipient=delivery.recipient,
                attempt=attempt,
                status=outcome,
                error=error,
                at=now,
            )
        )
        if delivery.channel == Channel.WEBHOOK:
            await _track_webhook(session, delivery.recipient, ok=status is DeliveryStatus.SENT)
        await session.commit()
    delivery.attempts = attempt
    delivery.status = status


async def _track_webhook(session: AsyncSession, subscription_id: str, *, ok: bool) -> None:
    sub = await session.get(WebhookSubscription, subscription_id)
    if sub is None:
        return
    sub.consecutive_failures = 0 if ok else sub.consecutive_failures + 1
    session.add(sub)


async def disable_webhook(db: Database, subscription_id: str, reason: str) -> int:
    """Disable the subscription; returns how many of its queued deliveries were given up."""
    async with db.write_session() as session:
        await session.execute(
            update(WebhookSubscription)
            .where(col(WebhookSubscription.id) == subscription_id)
            .values(
                active=False,
                disabled_reason=reason[:2000],
                # An admin's edit made from a read before this would undo it unseen.
                version=col(WebhookSubscription.version) + 1,
            )
        )
        # What was still waiting for it will not go out: say so on each.
        given_up = await session.execute(
            update(Delivery)
            .where(
                col(Delivery.channel) == Channel.WEBHOOK,
                col(Delivery.recipient) == subscription_id,
                col(Delivery.status) == DeliveryStatus.PENDING,
            )
            .values(status=DeliveryStatus.FAILED, last_error=f"webhook disabled: {reason}"[:2000])
        )
        await session.commit()
    return int(getattr(given_up, "rowcount", 0) or 0)


async def remove_push_subscription(db: Database, subscription_id: str) -> None:
    async with db.write_session() as session:
        sub = await session.get(PushSubscription, subscription_id)
        if sub is not None:
            await session.delete(sub)
        await session.commit()


# -- subscriptions ---------------------------------------------------------------


def _check_target(policy: OutboundPolicy, url: str, field: str, *, https_only: bool = False) -> None:
    """A user's URL we would call: refused (422) if it points at our own or a private network."""
    try:
        policy.check_url(url, https_only=https_only)
    except OutboundRefused as exc:
        raise Unprocessable(str(exc), field=field) from exc


async def subscribe_push(
    session: AsyncSession,
    user_id: str,
    body: PushSubscriptionCreate,
    user_agent: str | None,
    policy: OutboundPolicy,
) -> tuple[PushSubscription, bool]:
    """Register a device (again); the same endpoint is one subscription, now belonging to ``user_id``.

    Push services are public https endpoints: anything else is refused (see ``_check_target``)."""
    endpoint = str(body.endpoint)
    _check_target(policy, endpoint, "body.endpoint", https_only=True)
    existing = (
        await session.exec(select(PushSubscription).where(PushSubscription.endpoint == endpoint))
    ).first()
    sub = existing or PushSubscription(id=new_id(), user_id=user_id, endpoint=endpoint, p256dh="", auth="")
    sub.user_id = user_id
    sub.p256dh = body.keys.p256dh
    sub.auth = body.keys.auth
    sub.user_agent = (user_agent or "")[:500] or None
    session.add(sub)
    await session.flush()
    return sub, existing is None


async def push_subscriptions_of(session: AsyncSession, user_id: str) -> list[PushSubscription]:
    rows = await session.exec(
        select(PushSubscription)
        .where(PushSubscription.user_id == user_id)
        .order_by(col(PushSubscription.created_at))
    )
    return list(rows.all())


async def unsubscribe_push(session: AsyncSession, user_id: str, subscription_id: str) -> None:
    sub = await session.get(PushSubscription, subscription_id)
    if sub is None or sub.user_id != user_id:
        raise NotFound("There is no such push subscription of yours.")
    await session.delete(sub)


def _check_event_types(event_types: list[str]) -> list[str]:
    for index, event_type in enumerate(event_types):
        if event_type not in SUBSCRIBABLE_EVENT_TYPES:
            raise Unprocessable(
                f"{event_type!r} is not an event type a webhook can subscribe to; "
                "GET /webhooks/event-types lists them",
                field=f"body.event_types.{index}",
            )
    return sorted(set(event_types))


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def create_webhook(
    session: AsyncSession, body: WebhookCreate, created_by: str, box: SecretBox, policy: OutboundPolicy
) -> tuple[WebhookSubscription, str]:
    """The subscription (its secret sealed) and the secret itself, to be shown once.

    The URL must not point at our own or a private network (unless allow-listed)."""
    _check_target(policy, str(body.url), "body.url")
    event_types = _check_event_types(body.event_types)
    secret = new_webhook_secret()
    sub = WebhookSubscription(
        id=new_id(),
        url=str(body.url),
        secret=box.seal(secret),
        event_types=event_types,
        description=body.description,
        created_by=created_by,
    )
    session.add(sub)
    await session.flush()
    return sub, secret


async def _next_version(session: AsyncSession, sub: WebhookSubscription, expected: int | None) -> None:
    """Check ``If-Match`` and count the change, in one conditional update: of two changes made
    from the same read at once, the second finds the version moved on and is refused (412)."""
    check_version(sub.version, expected)
    result = await session.execute(
        update(WebhookSubscription)
        .where(col(WebhookSubscription.id) == sub.id, col(WebhookSubscription.version) == sub.version)
        .values(version=sub.version + 1)
    )
    if int(getattr(result, "rowcount", 0) or 0) != 1:
        raise PreconditionFailed(
            "the webhook was changed meanwhile; reload and retry", field="header.If-Match"
        )
    await session.refresh(sub)


async def get_webhook(session: AsyncSession, webhook_id: str) -> WebhookSubscription:
    sub = await session.get(WebhookSubscription, webhook_id)
    if sub is None:
        raise NotFound(f"There is no webhook {webhook_id}.")
    return sub


async def update_webhook(
    session: AsyncSession,
    webhook_id: str,
    body: WebhookUpdate,
    expected_version: int | None,
    policy: OutboundPolicy,
) -> WebhookSubscription:
    sub = await get_webhook(session, webhook_id)
    await _next_version(session, sub, expected_version)
    if body.url is not None:
        _check_target(policy, str(body.url), "body.url")
        sub.url = str(body.url)
    if body.active is not None:
        sub.active = body.active
        if body.active:  # re-enabled by an admin: a fresh start
            sub.consecutive_failures = 0
            sub.disabled_reason = None
    if body.event_types is not None:
        sub.event_types = _check_event_types(body.event_types)
    if body.description is not None:
        sub.description = body.description
    session.add(sub)
    await session.flush()
    return sub


async def rotate_webhook_secret(
    session: AsyncSession, webhook_id: str, box: SecretBox, overlap: timedelta, expected_version: int | None
) -> tuple[WebhookSubscription, str]:
    """A new secret (returned, to be shown once); the current one keeps signing for ``overlap``.

    Rotating again during an overlap drops the oldest secret at once: at most two sign a message,
    and the receiver asked for the rotation, so it already holds the one being replaced."""
    sub = await get_webhook(session, webhook_id)
    await _next_version(session, sub, expected_version)
    secret = new_webhook_secret()
    if overlap > timedelta(0):
        sub.previous_secret = sub.secret
        sub.previous_secret_expires_at = utcnow() + overlap
    else:
        sub.previous_secret = None
        sub.previous_secret_expires_at = None
    sub.secret = box.seal(secret)
    session.add(sub)
    await session.flush()
    return sub, secret


def signing_secrets(sub: WebhookSubscription, box: SecretBox, now: datetime) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the previous one in its overlap."""
    found = [box.open(sub.secret)]
    if sub.previous_secret and sub.previous_secret_expires_at and now < sub.previous_secret_expires_at:
        found.append(box.open(sub.previous_secret))
    return found


async def delete_webhook(session: AsyncSession, webhook_id: str, expected_version: int | None) -> int:
    """Remove the subscription; its queued deliveries are cancelled (marked failed, not sent).

    Its delivery history (deliveries and attempts) is kept: it is the record of what was sent
    where, and a delivery names the subscription only by id. Returns how many were cancelled."""
    sub = await get_webhook(session, webhook_id)
    await _next_version(session, sub, expected_version)
    cancelled = await session.execute(
        update(Delivery)
        .where(
            col(Delivery.channel) == Channel.WEBHOOK,
            col(Delivery.recipient) == webhook_id,
            col(Delivery.status) == DeliveryStatus.PENDING,
        )
        .values(status=DeliveryStatus.FAILED, last_error="cancelled: the webhook was deleted")
    )
    await session.delete(sub)
    await session.flush()
    return int(getattr(cancelled, "rowcount", 0) or 0)


async def redeliver(session: AsyncSession, delivery_id: str, requested_by: str) -> Delivery:
    """Send a failed delivery once more, now, and record who asked.

    Only a failed one (retries used up, target gone, or cancelled): a pending one is still on its
    way and a sent one arrived (409). Its target must still be there to send to (409 otherwise).
    It keeps its id, so a receiver that did get it after all dedupes it by ``webhook-id``; the
    attempt count goes on, so it is one new attempt, not a new round of retries."""
    delivery = await session.get(Delivery, delivery_id)
    if delivery is None:
        raise NotFound(f"There is no delivery {delivery_id}.")
    if delivery.status != DeliveryStatus.FAILED:
        raise Conflict(
            f"The delivery is {delivery.status}; only a failed delivery can be sent again.",
            field="status",
            status_now=delivery.status,
        )
    if delivery.channel == Channel.WEBHOOK:
        sub = await session.get(WebhookSubscription, delivery.recipient)
        if sub is None:
            raise Conflict("The webhook this delivery was for has been deleted.", field="recipient")
        if not sub.active:
            raise Conflict(
                "The webhook this delivery is for is disabled: enable it first.", field="recipient"
            )
    elif delivery.channel == Channel.PUSH and await session.get(PushSubscription, delivery.recipient) is None:
        raise Conflict("The device this delivery was for has unsubscribed.", field="recipient")
    session.add(
        DeliveryRedelivery(
            delivery_id=delivery.id,
            requested_by=requested_by,
            previous_status=delivery.status,
            previous_error=delivery.last_error,
        )
    )
    # Only while still failed: of two admins asking at once, one queues it and the other gets 409
    # (a read-then-write would queue it once but record both).
    now = utcnow()
    queued = await session.execute(
        update(Delivery)
        .where(col(Delivery.id) == delivery.id, col(Delivery.status) == DeliveryStatus.FAILED)
        .values(status=DeliveryStatus.PENDING, next_attempt_at=now)
    )
    if int(getattr(queued, "rowcount", 0) or 0) != 1:
        raise Conflict("The delivery is no longer failed: someone asked first.", field="status")
    await session.refresh(delivery)
    on_commit(session, _deliveries_queued)
    return delivery


async def redeliveries_of(session: AsyncSession, delivery_id: str) -> list[DeliveryRedelivery]:
    if await session.get(Delivery, delivery_id) is None:
        raise NotFound(f"There is no delivery {delivery_id}.")
    rows = await session.exec(
        select(DeliveryRedelivery)
        .where(DeliveryRedelivery.delivery_id == delivery_id)
        .order_by(col(DeliveryRedelivery.at), col(DeliveryRedelivery.id))
    )
    return list(rows.all())


async def list_webhooks(session: AsyncSession) -> list[WebhookSubscription]:
    return list(
        (await session.exec(select(WebhookSubscription).order_by(col(WebhookSubscription.created_at)))).all()
    )


async def list_deliveries(
    session: AsyncSession,
    *,
    channel: Channel | None,
    status: DeliveryStatus | None,
    case_id: str | None,
    recipient: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Delivery], int]:
    query = select(Delivery)
    if channel:
        query = query.where(Delivery.channel == channel)
    if status:
        query = query.where(Delivery.status == status)
    if case_id:
        query = query.where(Delivery.case_id == case_id)
    if recipient:
        query = query.where(Delivery.recipient == recipient)
    total = int((await session.exec(select(func.count()).select_from(query.subquery()))).one())
    rows = await session.exec(
        query.order_by(col(Delivery.created_at).desc(), col(Delivery.id)).limit(limit).offset(offset)
    )
    return list(rows.all()), total


async def attempts_of(session: AsyncSession, delivery_id: str) -> list[DeliveryAttempt]:
    if await session.get(Delivery, delivery_id) is None:
        raise NotFound(f"There is no delivery {delivery_id}.")
    rows = await session.exec(
        select(DeliveryAttempt)
        .where(DeliveryAttempt.delivery_id == delivery_id)
        .order_by(col(DeliveryAttempt.attempt))
    )
    return list(rows.all())
