"""Routes: push subscriptions (staff), webhooks and the delivery history (admins)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from pydantic import BaseModel

from casebridge_shared.auth import AdminUser, Principal, Role, StaffUser, require_roles
from casebridge_shared.deps import SessionDep, UowDep
from casebridge_shared.idempotency import Answer, Idempotent, create_once
from casebridge_shared.openapi import ETAG, IDEMPOTENT_REPLAYED, response_headers
from casebridge_shared.pagination import Page, PageDep
from casebridge_shared.problems import PROBLEM_RESPONSES
from casebridge_shared.sealing import SecretBox
from casebridge_shared.versioning import IfMatch, etag
from notifier.db import idempotent_requests
from notifier.deliveries import service
from notifier.deliveries.models import (
    DeliveryAttemptRead,
    DeliveryRead,
    DeliveryStatus,
    EventTypeRead,
    PushSubscriptionCreate,
    PushSubscriptionRead,
    RedeliveryRead,
    WebhookCreate,
    WebhookCreated,
    WebhookRead,
    WebhookUpdate,
)
from notifier.deliveries.vapid import application_server_key
from notifier.notifications.models import Channel

router = APIRouter(tags=["deliveries"], responses=PROBLEM_RESPONSES)
# Webhook subscriptions: admins, and webhook admins (an integrator's machine client, say), who
# may manage webhooks and nothing else.
WebhookManager = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.WEBHOOK_ADMIN))]


class VapidKey(BaseModel):
    public_key: str


@router.get("/push/vapid-public-key", response_model=VapidKey, summary="The key browsers subscribe with")
async def vapid_public_key(request: Request) -> VapidKey:
    return VapidKey(public_key=application_server_key(request.app.state.container.vapid))


@router.post(
    "/push-subscriptions", response_model=PushSubscriptionRead, summary="Register this device for push"
)
async def subscribe_to_push(
    body: PushSubscriptionCreate,
    user: StaffUser,
    uow: UowDep,
    response: Response,
    request: Request,
    user_agent: Annotated[str | None, Header(max_length=500)] = None,
) -> PushSubscriptionRead:
    """The body is the browser's `PushSubscription.toJSON()`. Registering the same endpoint
    again updates it (200); a new one is 201. The endpoint must be https on a public address
    (422 otherwise)."""
    policy = request.app.state.container.settings.outbound_policy()
    sub, created = await service.subscribe_push(uow.session, user.subject, body, user_agent, policy)
    await uow.commit()
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return PushSubscriptionRead.model_validate(sub)


@router.get("/push-subscriptions", response_model=list[PushSubscriptionRead], summary="My registered devices")
async def list_my_push_subscriptions(user: StaffUser, session: SessionDep) -> list[PushSubscriptionRead]:
    return [
        PushSubscriptionRead.model_validate(s)
        for s in await service.push_subscriptions_of(session, user.subject)
    ]


@router.delete("/push-subscriptions/{subscription_id}", status_code=204, summary="Stop push to a device")
async def unsubscribe_from_push(subscription_id: str, user: StaffUser, uow: UowDep) -> None:
    await service.unsubscribe_push(uow.session, user.subject, subscription_id)
    await uow.commit()


@router.post(
    "/webhooks",
    response_model=WebhookCreated,
    status_code=201,
    summary="Subscribe a URL to events",
    responses=response_headers(201, ETAG, IDEMPOTENT_REPLAYED),
)
async def create_webhook(
    body: WebhookCreate, admin: WebhookManager, uow: UowDep, request: Request, idempotent: Idempotent
) -> Any:
    """Each case event is POSTed as its CloudEvent JSON, signed by the Standard Webhooks
    convention with the secret returned here (once; a retry with the same `Idempotency-Key`
    gets it again). See docs/notifier.md for the verifier.
    The URL must be on a public address (422 for loopback, private, link-local, ... ones
    unless the operator allow-listed them: `outbound_allow`)."""
    container = request.app.state.container
    policy = container.settings.outbound_policy()
    secrets: SecretBox = container.webhook_secrets

    async def create() -> Answer:
        sub, secret = await service.create_webhook(uow.session, body, admin.subject, secrets, policy)
        await uow.commit()
        # The answer kept for a retry holds the secret sealed, as the subscription does.
        created = WebhookCreated.model_validate(
            {**WebhookRead.model_validate(sub).model_dump(), "secret": secrets.seal(secret)}
        )
        return Answer.of(201, created, ETag=etag(sub.version))

    answer = await create_once(uow, idempotent.claim(idempotent_requests, admin.subject, body), create)
    answer.body = {**answer.body, "secret": secrets.open(answer.body["secret"])}
    return answer.response()


@router.get("/webhooks", response_model=list[WebhookRead], summary="Webhook subscriptions")
async def list_webhooks(_admin: WebhookManager, session: SessionDep) -> list[WebhookRead]:
    return [WebhookRead.model_validate(s) for s in await service.list_webhooks(session)]


@router.get(
    "/webhooks/event-types",
    response_model=list[EventTypeRead],
    summary="The event types a webhook can subscribe to",
)
async def list_webhook_event_types(_admin: WebhookManager) -> list[EventTypeRead]:
    return [EventTypeRead(type=t, topic=topic) for t, topic in service.SUBSCRIBABLE_EVENT_TYPES.items()]


@router.get(
    "/webhooks/{webhook_id}",
    response_model=WebhookRead,
    summary="One webhook subscription",
    responses=response_headers(200, ETAG),
)
async def get_webhook(
    webhook_id: str, _admin: WebhookManager, session: SessionDep, response: Response
) -> WebhookRead:
    sub = await service.get_webhook(session, webhook_id)
    response.headers[ETAG] = etag(sub.version)
    return WebhookRead.model_validate(sub)


@router.patch(
    "/webhooks/{webhook_id}",
    response_model=WebhookRead,
    summary="Change the URL, event types, description, or enable and disable",
    responses=response_headers(200, ETAG),
)
async def update_webhook(
    webhook_id: str,
    body: WebhookUpdate,
    _admin: WebhookManager,
    uow: UowDep,
    request: Request,
    response: Response,
    version: IfMatch,
) -> WebhookRead:
    """Only the fields sent change. Send `If-Match` with the ETag of your last read: a change made
    since is answered 412 instead of being overwritten. (Without it the change is not checked,
    as before If-Match existed; docs/notifier.md.) A new URL is checked like a new webhook's."""
    policy = request.app.state.container.settings.outbound_policy()
    sub = await service.update_webhook(uow.session, webhook_id, body, version, policy)
    await uow.commit()
    response.headers[ETAG] = etag(sub.version)
    return WebhookRead.model_validate(sub)


@router.delete("/webhooks/{webhook_id}", status_code=204, summary="Delete a webhook subscription")
async def delete_webhook(webhook_id: str, _admin: WebhookManager, uow: UowDep, version: IfMatch) -> None:
    """Its deliveries still waiting are cancelled (they show as failed, `cancelled: the webhook
    was deleted`); its delivery history is kept."""
    await service.delete_webhook(uow.session, webhook_id, version)
    await uow.commit()


@router.post(
    "/webhooks/{webhook_id}/rotate-secret",
    response_model=WebhookCreated,
    summary="A new signing secret, the old one still signing for a while",
    responses=response_headers(200, ETAG),
)
async def rotate_webhook_secret(
    webhook_id: str,
    _admin: WebhookManager,
    uow: UowDep,
    request: Request,
    response: Response,
    version: IfMatch,
) -> WebhookCreated:
    """The new secret is returned here, once. Until `previous_secret_expires_at`
    (`webhook_secret_overlap_seconds` from now, 24 h by default) every delivery carries two
    signatures, one by each secret, so the receiver can switch to the new one at its own pace."""
    container = request.app.state.container
    overlap = timedelta(seconds=container.settings.webhook_secret_overlap_seconds)
    sub, secret = await service.rotate_webhook_secret(
        uow.session, webhook_id, container.webhook_secrets, overlap, version
    )
    await uow.commit()
    response.headers[ETAG] = etag(sub.version)
    return WebhookCreated.model_validate({**WebhookRead.model_validate(sub).model_dump(), "secret": secret})


@router.get("/deliveries", response_model=Page[DeliveryRead], summary="Delivery history, newest first")
async def list_deliveries(
    _admin: AdminUser,
    session: SessionDep,
    page: PageDep,
    channel: Channel | None = None,
    delivery_status: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    case_id: Annotated[str | None, Query(max_length=36)] = None,
    recipient: Annotated[str | None, Query(max_length=36)] = None,
) -> Page[DeliveryRead]:
    rows, total = await service.list_deliveries(
        session,
        channel=channel,
        status=delivery_status,
        case_id=case_id,
        recipient=recipient,
        limit=page.limit,
        offset=page.offset,
    )
    return Page[DeliveryRead](
        items=[DeliveryRead.model_validate(r) for r in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get(
    "/deliveries/{delivery_id}/attempts", response_model=list[DeliveryAttemptRead], summary="Every attempt"
)
async def list_delivery_attempts(
    delivery_id: str, _admin: AdminUser, session: SessionDep
) -> list[DeliveryAttemptRead]:
    return [DeliveryAttemptRead.model_validate(a) for a in await service.attempts_of(session, delivery_id)]


@router.post(
    "/deliveries/{delivery_id}/redeliver",
    response_model=DeliveryRead,
    status_code=202,
    summary="Send a failed delivery again",
)
async def redeliver(delivery_id: str, admin: AdminUser, uow: UowDep) -> DeliveryRead:
    """Queued again, due now: one new attempt, with the same id (a receiver that did get it
    dedupes). Who asked is recorded (`GET /deliveries/{id}/redeliveries`). 409 unless the
    delivery failed, or when its webhook was deleted or is disabled, or its device unsubscribed."""
    delivery = await service.redeliver(uow.session, delivery_id, admin.subject)
    await uow.commit()
    return DeliveryRead.model_validate(delivery)


@router.get(
    "/deliveries/{delivery_id}/redeliveries",
    response_model=list[RedeliveryRead],
    summary="Who asked for this delivery to be sent again, and when",
)
async def list_redeliveries(delivery_id: str, _admin: AdminUser, session: SessionDep) -> list[RedeliveryRead]:
    return [RedeliveryRead.model_validate(r) for r in await service.redeliveries_of(session, delivery_id)]
