"""The issuer's own browser sign-in: ``/session`` here checks the password itself.

Every service serves ``/session`` (casebridge_shared.browser_session); the others exchange the
credentials at ``/auth/token``, order-intake calls the same service code ``/auth/token`` runs,
so login throttling, the login records and refresh-token rotation are one and the same.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import Request

from casebridge_shared.browser_session import IssuedTokens
from order_intake.bootstrap import Container
from order_intake.deps import client_ip
from order_intake.identity import service
from order_intake.identity.throttle import ThrottlePolicy


class LocalSessionIssuer:
    def __init__(self, container: Container) -> None:
        self._container = container

    def _lifetimes(self) -> dict[str, Any]:
        settings = self._container.settings
        return {
            "issuer": settings.token_issuer,
            "audience": settings.token_audience,
            "lifetime": timedelta(minutes=settings.access_token_minutes),
            "refresh_lifetime": timedelta(days=settings.refresh_token_days),
        }

    async def sign_in(self, request: Request, email: str, password: str) -> IssuedTokens:
        async with self._container.uow() as uow:
            pair = await service.authenticate(
                uow,
                self._container.keys,
                email=email,
                password=password,
                client_ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
                throttle_policy=ThrottlePolicy.from_settings(self._container.settings),
                **self._lifetimes(),
            )
        return IssuedTokens(pair.access_token, pair.expires_in, pair.refresh_token, pair.refresh_expires_in)

    async def refresh(self, request: Request, refresh_token: str) -> IssuedTokens:
        async with self._container.uow() as uow:
            pair = await service.refresh(
                uow, self._container.keys, refresh_token=refresh_token, **self._lifetimes()
            )
        return IssuedTokens(pair.access_token, pair.expires_in, pair.refresh_token, pair.refresh_expires_in)

    async def sign_out(self, request: Request, refresh_token: str) -> None:
        async with self._container.uow() as uow:
            await service.revoke_refresh_token(uow, refresh_token)
