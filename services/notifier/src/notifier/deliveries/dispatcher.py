"""Sends queued deliveries: Web Push (RFC 8291/8292), email (SMTP) and webhooks (Standard Webhooks).

Runs in the notifier worker. Due deliveries are leased (two workers never
send one twice) and sent concurrently, each with its own timeout, so a slow
or dead channel never holds up the others. Every attempt is recorded. A
failure is retried with capped exponential backoff up to
``delivery_max_attempts``; a push endpoint that answers 404/410 is gone and
its subscription is removed; a webhook subscription that keeps failing is
disabled.

Webhook and push targets are users' URLs: each call goes through the outbound
guard (``casebridge_shared.outbound``): the URL is checked again, its name is
resolved when sending and every address it resolves to must be public (or in
``outbound_allow``); the connection goes to the checked address. Redirects are
not followed. A refused target is a failed attempt, retried like any other
(a webhook that keeps failing is disabled).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from types import SimpleNamespace

import aiohttp
import aiosmtplib
import httpx
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from opentelemetry.trace import SpanKind
from py_vapid import Vapid02
from pywebpush import WebPushException, webpush_async
from standardwebhooks.webhooks import Webhook

from casebridge_shared import metrics
from casebridge_shared.db import Database, utcnow
from casebridge_shared.outbound import OutboundPolicy, OutboundRefused, guarded_client
from casebridge_shared.tracing import context_from, current_trace_headers, span_from
from casebridge_shared.worker import periodic
from notifier.deliveries import service
from notifier.deliveries.models import Delivery, DeliveryStatus, PushSubscription, WebhookSubscription
from notifier.deliveries.sealing import SecretBox
from notifier.directory.models import Person
from notifier.notifications.models import Channel
from notifier.settings import Settings

log = structlog.get_logger(__name__)


SERVICE = "notifier"


def _count(delivery: Delivery, outcome: str, started: float) -> None:
    """One attempt's outcome (delivered, retried, failed, dead) and how long it took."""
    metrics.NOTIFIER_DELIVERIES.labels(SERVICE, delivery.channel, outcome).inc()
    metrics.NOTIFIER_DELIVERY_ATTEMPT_SECONDS.labels(SERVICE, delivery.channel, outcome).observe(
        time.perf_counter() - started
    )


class Gone(Exception):
    """The target no longer exists: do not retry."""


class _PolicyResolver(AbstractResolver):
    """aiohttp's resolver for push: the policy resolves and checks; aiohttp connects to what it
    answered. (aiohttp does not ask about IP literals: ``_push`` checks the URL first.)"""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in await self.policy.resolve(host, port)
        ]

    async def close(self) -> None:
        return None


async def _no_redirects(_session: object, _ctx: SimpleNamespace, params: object) -> None:
    raise OutboundRefused("the push endpoint redirected; redirects are not followed")


class Dispatcher:
    def __init__(self, db: Database, settings: Settings, vapid: Vapid02, webhook_secrets: SecretBox) -> None:
        self.db = db
        self.settings = settings
        self.vapid = vapid
        self.webhook_secrets = webhook_secrets
        self._policy = settings.outbound_policy()
        self._lease = timedelta(seconds=settings.delivery_timeout_seconds * 2 + 30)
        self._http: httpx.AsyncClient | None = None
        self._push_session: aiohttp.ClientSession | None = None

    async def run(self, stop: asyncio.Event) -> None:
        self._policy = self.settings.outbound_policy()
        self._http = guarded_client(self._policy, timeout=self.settings.delivery_timeout_seconds)
        redirects = aiohttp.TraceConfig()
        redirects.on_request_redirect.append(_no_redirects)
        self._push_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=_PolicyResolver(self._policy)),
            trace_configs=[redirects],
        )
        # Woken when this process queues deliveries (an alert goes out at once); the
        # poll finds retries coming due and what another process queued.
        queued = asyncio.Event()

        async def step() -> bool:
            return await self.send_due() > 0

        try:
            with service.woken_when_queued(queued.set):
                # The database away is waited out with a backoff, never ends the loop.
                await periodic(
                    "deliveries.loop",
                    step,
                    stop,
                    idle_seconds=self.settings.delivery_poll_seconds,
                    wake=queued,
                )
        finally:
            await self._http.aclose()
            await self._push_session.close()

    async def send_due(self, now: datetime | None = None) -> int:
        due = await service.claim_due(
            self.db, now=now or utcnow(), lease=self._lease, limit=self.settings.delivery_concurrency
        )
        if due:
            await asyncio.gather(*(self.deliver(d) for d in due))
        return len(due)

    def _backoff(self, attempts: int) -> timedelta:
        seconds = self.settings.delivery_backoff_seconds * 2 ** min(attempts - 1, 20)
        return timedelta(seconds=min(seconds, self.settings.delivery_max_backoff_seconds))

    async def deliver(self, delivery: Delivery) -> None:
        """Send one delivery in a span that continues the trace of whatever queued it (the
        consumer's span for the case event), so the staff member's phone is on the order's trace."""
        with span_from(
            f"deliver {delivery.channel}",
            context_from(delivery.traceparent),
            kind=SpanKind.PRODUCER,
            attributes={
                "casebridge.service": SERVICE,
                "casebridge.delivery.id": delivery.id,
                "casebridge.delivery.channel": delivery.channel,
                "casebridge.delivery.attempt": delivery.attempts + 1,
            },
        ):
            await self._deliver(delivery)

    async def _deliver(self, delivery: Delivery) -> None:
        senders = {
            Channel.PUSH: self._push,
            Channel.EMAIL: self._email,
            Channel.WEBHOOK: self._webhook,
        }
        started = time.perf_counter()
        try:
            await asyncio.wait_for(
                senders[delivery.channel](delivery), timeout=self.settings.delivery_timeout_seconds
            )
        except Gone as exc:
            _count(delivery, "dead", started)
            await service.record_attempt(
                self.db,
                delivery,
                status=DeliveryStatus.FAILED,
                outcome="gone",
                error=str(exc)[:2000],
                retry_at=None,
            )
            log.info(
                "deliveries.gone",
                channel=delivery.channel,
                recipient=delivery.recipient,
                error=str(exc)[:200],
            )
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:2000] if str(exc) else type(exc).__name__
            last = delivery.attempts + 1 >= self.settings.delivery_max_attempts
            _count(delivery, "failed" if last else "retried", started)
            await service.record_attempt(
                self.db,
                delivery,
                status=DeliveryStatus.FAILED if last else DeliveryStatus.PENDING,
                outcome="failed",
                error=error,
                retry_at=None if last else utcnow() + self._backoff(delivery.attempts + 1),
            )
            log.warning(
                "deliveries.failed",
                channel=delivery.channel,
                recipient=delivery.recipient,
                attempt=delivery.attempts,
                final=last,
                error=error[:300],
            )
            if delivery.channel == Channel.WEBHOOK:
                await self._maybe_disable_webhook(delivery.recipient)
        else:
            _count(delivery, "delivered", started)
            metrics.NOTIFIER_DELIVERY_LATENCY_SECONDS.labels(SERVICE, delivery.channel).observe(
                max(0.0, (utcnow() - delivery.created_at).total_seconds())
            )
            await service.record_attempt(
                self.db, delivery, status=DeliveryStatus.SENT, outcome="sent", error=None, retry_at=None
            )

    # -- channels ----------------------------------------------------------------

    async def _push(self, delivery: Delivery) -> None:
        async with self.db.session() as session:
            sub = await session.get(PushSubscription, delivery.recipient)
        if sub is None:
            raise Gone("the push subscription was removed")
        self._policy.check_url(sub.endpoint, https_only=True)
        assert self._push_session is not None
        try:
            await webpush_async(
                subscription_info={
                    "endpoint": sub.endpoint,
                    "keys": {"p256dh": sub.p256dh, "auth": sub.auth},
                },
                data=json.dumps(delivery.message, separators=(",", ":")),
                vapid_private_key=self.vapid,
                vapid_claims={"sub": self.settings.vapid_subject},
                ttl=self.settings.push_ttl_seconds,
                timeout=aiohttp.ClientTimeout(total=self.settings.delivery_timeout_seconds),
                aiohttp_session=self._push_session,
                headers={"Urgency": "high"},
            )
        except WebPushException as exc:
            status = getattr(exc.response, "status", None)
            if status in (404, 410):
                # The browser unsubscribed or the subscription expired (RFC 8030 section 7.3).
                await service.remove_push_subscription(self.db, sub.id)
                raise Gone(f"push endpoint answered {status}: subscription removed") from exc
            raise RuntimeError(f"push endpoint answered {status}") from exc

    async def _email(self, delivery: Delivery) -> None:
        async with self.db.session() as session:
            person = await session.get(Person, delivery.recipient)
        if person is None:
            # The identity event may still be on its way: a retry, not a loss.
            raise LookupError(f"no email address known yet for {delivery.recipient}")
        if not person.active:
            raise Gone("the account is deactivated")
        message = EmailMessage()
        message["From"] = self.settings.email_from
        message["To"] = formataddr((person.full_name, person.email))
        message["Subject"] = str(delivery.message.get("subject", "Casebridge"))
        message["Message-ID"] = make_msgid(idstring=delivery.id, domain="casebridge.example")
        message["X-Casebridge-Delivery"] = delivery.id
        message.set_content(str(delivery.message.get("text", "")))
        await aiosmtplib.send(
            message,
            hostname=self.settings.smtp_host,
            port=self.settings.smtp_port,
            username=self.settings.smtp_username or None,
            password=(self.settings.smtp_password.get_secret_value() if self.settings.smtp_password else None)
            or None,
            start_tls=self.settings.smtp_starttls,
            timeout=self.settings.delivery_timeout_seconds,
        )

    async def _webhook(self, delivery: Delivery) -> None:
        async with self.db.session() as session:
            sub = await session.get(WebhookSubscription, delivery.recipient)
        if sub is None or not sub.active:
            raise Gone("the webhook subscription was removed or disabled")
        self._policy.check_url(sub.url)
        body = json.dumps(delivery.message["event"], separators=(",", ":"), ensure_ascii=False)
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "user-agent": "Casebridge-Webhooks/1",
            # The same id on every retry: receivers dedupe by it.
            "webhook-id": delivery.id,
            "webhook-timestamp": str(int(now.timestamp())),
            # Several signatures, space-separated (Standard Webhooks): during a rotation's overlap
            # one by the new secret and one by the old, so either verifies.
            "webhook-signature": " ".join(
                Webhook(secret).sign(delivery.id, now, body)
                for secret in service.signing_secrets(sub, self.webhook_secrets, now)
            ),
            # The delivery's span: a receiver that traces continues the order's trace.
            **current_trace_headers(),
        }
        assert self._http is not None
        response = await self._http.post(sub.url, content=body.encode(), headers=headers)
        if not response.is_success:
            raise RuntimeError(f"webhook endpoint answered {response.status_code}")

    async def _maybe_disable_webhook(self, subscription_id: str) -> None:
        async with self.db.session() as session:
            sub = await session.get(WebhookSubscription, subscription_id)
        if (
            sub is not None
            and sub.active
            and sub.consecutive_failures >= self.settings.webhook_disable_after_failures
        ):
            abandoned = await service.disable_webhook(
                self.db,
                sub.id,
                f"{sub.consecutive_failures} failed attempts in a row; last at {utcnow():%Y-%m-%d %H:%M} UTC",
            )
            # What was still queued for it is given up without an attempt.
            metrics.NOTIFIER_DELIVERIES.labels(SERVICE, Channel.WEBHOOK.value, "dead").inc(abandoned)
            log.error("webhooks.disabled", subscription_id=sub.id, failures=sub.consecutive_failures)
