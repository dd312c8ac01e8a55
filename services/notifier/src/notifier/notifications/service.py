"""Telling people: in-app notifications and, per their preferences, push and email. No HTTP here.

A notification and its deliveries are written in the transaction of the
event (or escalation) that caused them, so an alert is never lost and never
sent twice. Each person's notifications are numbered 1, 2, 3 ...: the next
number is taken from the highest committed one, and a unique constraint on
(person, number) makes a concurrent writer fail and retry rather than share
or skip a number. So numbers are in commit order with no holes, and a live
stream that resumes after number n misses nothing and repeats nothing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, func, insert, update
from sqlalchemy import select as select_core
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared import metrics
from casebridge_shared.db import (
    WITHOUT_QUEUED_ROWS,
    each_of,
    notify_at_commit,
    on_commit,
    queue_insert,
    table_of,
    transaction_scoped,
    utcnow,
)
from casebridge_shared.pagination import KeyPart, Keyset, PageParams
from casebridge_shared.tracing import current_traceparent
from notifier import memo
from notifier.deliveries import service as deliveries
from notifier.notifications.models import Channel, Kind, Notification
from notifier.preferences.models import Preference
from notifier.preferences.service import channels_for


@dataclass(frozen=True)
class Alert:
    """What to tell people about one happening."""

    kind: Kind
    dedupe_key: str
    case_id: str
    order_id: str
    title: str
    body: str
    at: datetime

    def push_message(self, notification: dict[str, Any]) -> dict[str, Any]:
        return {
            "title": self.title,
            "body": self.body,
            "kind": self.kind.value,
            "case_id": self.case_id,
            "order_id": self.order_id,
            "notification_id": notification["id"],
            "seq": notification["seq"],
            "url": f"/app/#case-{self.case_id}",
            "tag": f"case-{self.case_id}",
        }

    def email_message(self) -> dict[str, Any]:
        return {"subject": self.title, "text": f"{self.body}\n\nCase {self.case_id}, order {self.order_id}."}


@functools.cache
def _last_seqs_statement(dialect: str) -> Select[tuple[str, int | None]]:
    # Each person's newest number is one seek down the (recipient_id, seq) index;
    # max() grouped over everyone's rows read all of them, a cost that grew with
    # every notification sent (see ADR-0019).
    notifications = table_of(Notification)
    people = each_of("recipients", notifications.c.recipient_id.type, dialect)
    newest = (
        select_core(notifications.c.seq)
        .where(notifications.c.recipient_id == people.c.value)
        .order_by(notifications.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    return select_core(people.c.value, newest)


async def _last_seqs(session: AsyncSession, recipients: list[str]) -> dict[str, int]:
    statement = _last_seqs_statement(session.get_bind().dialect.name)
    # Only people this transaction has not notified yet are asked about (the rest
    # are remembered), so the notifications it queued cannot change the answer.
    rows = await session.execute(
        statement, {"recipients": recipients}, execution_options={WITHOUT_QUEUED_ROWS: True}
    )
    return {r: int(s or 0) for r, s in rows.all()}


async def _preferences(session: AsyncSession, recipients: list[str]) -> dict[str, Preference | None]:
    rows = await session.exec(select(Preference).where(col(Preference.user_id).in_(recipients)))
    return {p.user_id: p for p in rows.all()}


_NOTIFICATIONS = table_of(Notification)
# PostgreSQL NOTIFY channel: new notifications committed (the api's live-stream feed listens).
NEW_NOTIFICATIONS_CHANNEL = "casebridge_notifications"
_INSERT_RETURNING_ID = insert(_NOTIFICATIONS).returning(_NOTIFICATIONS.c.id, sort_by_parameter_order=True)


def _numbers(session: AsyncSession) -> dict[str, int]:
    """Each person's last notification number as this transaction knows it: the committed one,
    advanced by what it queued. Its own state, not a look-up: a directory change in the run
    (``memo.forget``) must not make it ask the database again, which cannot see the queued rows.
    """
    return transaction_scoped(session, "notifier.last_numbers", dict)


async def _last_numbers(session: AsyncSession, recipients: list[str]) -> dict[str, int]:
    known = _numbers(session)
    missing = [r for r in recipients if r not in known]
    if missing:
        found = await _last_seqs(session, missing)
        for recipient in missing:
            known[recipient] = found.get(recipient, 0)
    return {r: known[r] for r in recipients}


async def look_up_recipients(session: AsyncSession, recipients: list[str]) -> None:
    """What ``notify`` asks about people (their last notification number, their preferences),
    for a whole run's recipients in one query each instead of one per event."""
    await _last_numbers(session, recipients)
    await memo.per_item(
        session, "preference", recipients, lambda missing: _preferences(session, missing), None
    )


async def notify(session: AsyncSession, recipients: list[str], alert: Alert) -> list[dict[str, Any]]:
    """Notify each recipient about ``alert`` on the channels they chose; returns the notifications' rows.

    Called once per happening: the inbox applies each event once and an escalation
    fires once (compare-and-set), so there is no lookup for an earlier copy here;
    the unique (recipient, dedupe_key) constraint still refuses one.

    The rows are queued to be written with the transaction (one insert for a
    whole consumer run), except those a push goes out for: the push message
    names the notification's id, so they are inserted at once, in one statement.
    """
    recipients = sorted(set(recipients))
    if not recipients:
        return []
    last = await _last_numbers(session, recipients)
    seqs = _numbers(session)
    prefs = await memo.per_item(
        session, "preference", recipients, lambda missing: _preferences(session, missing), None
    )
    now = utcnow()
    wanted = {r: channels_for(prefs.get(r), alert.kind, now) for r in recipients}
    added: list[dict[str, Any]] = []
    traceparent = current_traceparent()  # the live stream's delivery continues this trace
    for recipient in recipients:
        if not wanted[recipient]:
            continue  # every channel turned off for this kind
        added.append(
            {
                "recipient_id": recipient,
                "seq": last[recipient] + 1,
                "dedupe_key": alert.dedupe_key,
                "kind": alert.kind,
                "case_id": alert.case_id,
                "order_id": alert.order_id,
                "title": alert.title,
                "body": alert.body,
                "created_at": now,
                # Turned off in the app: kept for the record, already read.
                "read_at": None if Channel.IN_APP in wanted[recipient] else now,
                "traceparent": traceparent,
            }
        )
        seqs[recipient] = last[recipient] + 1
    push_wanted = [n["recipient_id"] for n in added if Channel.PUSH in wanted[n["recipient_id"]]]
    devices = await deliveries.devices_of(session, push_wanted) if push_wanted else {}
    pushed = [n for n in added if devices.get(n["recipient_id"])]
    if pushed:
        ids = await session.execute(_INSERT_RETURNING_ID, pushed)
        for notification, notification_id in zip(pushed, ids.scalars(), strict=True):
            notification["id"] = notification_id
        deliveries.queue_push(session, alert.dedupe_key, alert.case_id, devices, pushed, alert.push_message)
    queue_insert(session, _NOTIFICATIONS, *(n for n in added if "id" not in n))
    if added:
        notify_at_commit(session, NEW_NOTIFICATIONS_CHANNEL)  # the live streams' pollers wake
    in_app = sum(1 for n in added if n["read_at"] is None)
    if in_app:
        _count_in_app_at_commit(session, in_app, (now - alert.at).total_seconds())
    for notification in added:
        if Channel.EMAIL in wanted[notification["recipient_id"]]:
            deliveries.queue_email(
                session, alert.dedupe_key, alert.case_id, notification["recipient_id"], alert.email_message()
            )
    return added


_IN_APP_DELIVERED = "notifier.in_app_delivered"


def _count_in_app_at_commit(session: AsyncSession, count: int, age_seconds: float) -> None:
    """In-app notifications are delivered once stored (the live stream and the inbox read them
    from there): counted when the transaction commits, not if it rolls back and is retried."""
    pending: list[tuple[int, float]] = transaction_scoped(session, _IN_APP_DELIVERED, list)
    if not pending:  # one callback per transaction, however many alerts it carries
        on_commit(session, lambda: _count_in_app(pending))
    pending.append((count, age_seconds))


def _count_in_app(pending: list[tuple[int, float]]) -> None:
    delivered = metrics.NOTIFIER_DELIVERIES.labels("notifier", Channel.IN_APP.value, "delivered")
    latency = metrics.NOTIFIER_DELIVERY_LATENCY_SECONDS.labels("notifier", Channel.IN_APP.value)
    for count, age_seconds in pending:
        delivered.inc(count)
        for _ in range(count):
            latency.observe(max(0.0, age_seconds))  # a clock a little behind the event's source


# -- reading ------------------------------------------------------------------


# Unread first (0 before 1), then newest; ``seq`` is unique per recipient, so it breaks ties.
# A number rather than ``read_at IS NOT NULL`` so the key compares the same on both databases.
# A notification read during a walk moves to the read part and may show up once more there.
_IS_READ = case((col(Notification.read_at).is_(None), 0), else_=1)
NOTIFICATION_KEYSET = Keyset(KeyPart(_IS_READ, int), KeyPart(col(Notification.seq), int, descending=True))


async def list_for(
    session: AsyncSession, user_id: str, *, unread_only: bool, page: PageParams
) -> tuple[list[Notification], int, int, int, str | None]:
    """A person's notifications, unread first then newest; with total, unread, the stream
    position and the next cursor."""
    base = select(Notification).where(Notification.recipient_id == user_id)
    if unread_only:
        base = base.where(col(Notification.read_at).is_(None))
    total = int((await session.exec(select(func.count()).select_from(base.subquery()))).one())
    rows = list((await session.exec(NOTIFICATION_KEYSET.window(base, page))).all())
    items, next_cursor = NOTIFICATION_KEYSET.cut(rows, page, lambda n: (int(n.read_at is not None), n.seq))
    unread, position = await counts(session, user_id)
    return items, total, unread, position, next_cursor


async def counts(session: AsyncSession, user_id: str) -> tuple[int, int]:
    """(unread, the number of the latest notification: where a new live stream starts)."""
    unread = (
        await session.exec(
            select(func.count()).where(
                Notification.recipient_id == user_id, col(Notification.read_at).is_(None)
            )
        )
    ).one()
    position = (
        await session.exec(select(func.max(Notification.seq)).where(Notification.recipient_id == user_id))
    ).one()
    return int(unread), int(position or 0)


async def since(session: AsyncSession, user_id: str, after_seq: int, limit: int = 500) -> list[Notification]:
    rows = await session.exec(
        select(Notification)
        .where(Notification.recipient_id == user_id, col(Notification.seq) > after_seq)
        .order_by(col(Notification.seq))
        .limit(limit)
    )
    return list(rows.all())


async def mark_read(session: AsyncSession, user_id: str, notification_id: int) -> Notification | None:
    notification = await session.get(Notification, notification_id)
    if notification is None or notification.recipient_id != user_id:
        return None  # someone else's is as good as none
    if notification.read_at is None:
        notification.read_at = utcnow()
        session.add(notification)
    return notification


async def mark_all_read(session: AsyncSession, user_id: str) -> int:
    result = await session.execute(
        update(Notification)
        .where(col(Notification.recipient_id) == user_id, col(Notification.read_at).is_(None))
        .values(read_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)
