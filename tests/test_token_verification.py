"""Other services verify order-intake's tokens locally against its JWKS over HTTP,
or against an external OpenID Connect issuer's keys."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import jwt
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from casebridge_shared import migrations
from casebridge_shared.auth import JwksTokenVerifier, Role
from casebridge_shared.broker import free_port
from casebridge_shared.problems import Unauthorized
from casebridge_shared.settings import ServiceSettings
from order_intake.db import MIGRATIONS
from order_intake.identity.keys import rotate, signing_keys_box
from order_intake.main import create_application
from order_intake.settings import Settings


@contextlib.asynccontextmanager
async def serve(app: object, port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "server failed to start"
            await asyncio.sleep(0.02)
        yield
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def intake(tmp_path: Path) -> AsyncIterator[tuple[str, Settings]]:
    port = free_port()
    url = f"sqlite+aiosqlite:///{tmp_path}/intake.sqlite3"
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS, url)
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        environment="test",
        database_url=url,
        token_issuer=base,
        log_json=False,
        signing_key_reload_seconds=0,
        var_dir=tmp_path,
    )
    async with serve(create_application(settings), port):
        yield base, settings


async def _login(base: str) -> str:
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.post(
            "/auth/token", data={"username": "admin@casebridge.example", "password": "changethis"}
        )
        r.raise_for_status()
        return str(r.json()["access_token"])


async def test_another_service_verifies_tokens_via_jwks_and_follows_rotation(
    intake: tuple[str, Settings],
) -> None:
    base, settings = intake
    verifier = JwksTokenVerifier(
        ServiceSettings(environment="test", token_issuer=base, jwks_refetch_cooldown_seconds=0)
    )
    first = await _login(base)
    principal = await verifier.verify(first)
    assert principal.roles == frozenset({Role.ADMIN})

    from casebridge_shared.db import Database

    db = Database(settings.database_url)
    await rotate(db, signing_keys_box(settings))
    await db.dispose()
    # The issuer picks up the new key on its next load; a fresh token carries the new kid,
    # which the verifier has never seen: it refetches the JWKS instead of refusing.
    rotated = await _login(base)
    assert jwt.get_unverified_header(rotated)["kid"] != jwt.get_unverified_header(first)["kid"]
    assert (await verifier.verify(rotated)).roles == frozenset({Role.ADMIN})
    assert (await verifier.verify(first)).roles == frozenset({Role.ADMIN})  # old key still published

    wrong_audience = JwksTokenVerifier(
        ServiceSettings(environment="test", token_issuer=base, token_audience="other")
    )
    with pytest.raises(Unauthorized):
        await wrong_audience.verify(rotated)
    wrong_issuer = JwksTokenVerifier(
        ServiceSettings(
            environment="test", token_issuer="http://elsewhere", jwks_url=f"{base}/.well-known/jwks.json"
        )
    )
    with pytest.raises(Unauthorized):
        await wrong_issuer.verify(rotated)


async def test_services_can_use_an_external_openid_connect_issuer(tmp_path: Path) -> None:
    issuer_port, intake_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{issuer_port}"
    intake_base = f"http://127.0.0.1:{intake_port}"

    async def discovery(_request: object) -> JSONResponse:
        return JSONResponse({"issuer": issuer, "jwks_uri": f"{intake_base}/.well-known/jwks.json"})

    provider = Starlette(routes=[Route("/.well-known/openid-configuration", discovery)])
    url = f"sqlite+aiosqlite:///{tmp_path}/intake.sqlite3"
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS, url)
    # order-intake plays the provider's token endpoint, issuing tokens in the provider's name.
    settings = Settings(
        environment="test", database_url=url, token_issuer=issuer, log_json=False, var_dir=tmp_path
    )
    async with serve(provider, issuer_port), serve(create_application(settings), intake_port):
        token = await _login(intake_base)
        verifier = JwksTokenVerifier(ServiceSettings(environment="test", oidc_issuer=issuer))
        assert (await verifier.verify(token)).roles == frozenset({Role.ADMIN})


async def test_a_service_restarted_while_the_issuer_is_down_still_verifies_its_tokens(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"sqlite+aiosqlite:///{tmp_path}/intake.sqlite3"
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS, url)
    settings = Settings(
        environment="test", database_url=url, token_issuer=base, log_json=False, var_dir=tmp_path
    )
    keys = tmp_path / "case-handling" / "issuer-keys.json"
    service = ServiceSettings(environment="test", token_issuer=base)
    async with serve(create_application(settings), port):
        token = await _login(base)
        assert (await JwksTokenVerifier(service, keys).verify(token)).roles == frozenset({Role.ADMIN})
    assert keys.is_file() and "private" not in keys.read_text() and '"d"' not in keys.read_text()

    # order-intake is down; the service restarts (a new verifier) and still verifies what it signed.
    restarted = JwksTokenVerifier(service, keys)
    assert (await restarted.verify(token)).roles == frozenset({Role.ADMIN})
    # Without kept keys it cannot; a token signed by another key, or altered, is refused either way.
    with pytest.raises(Unauthorized, match="unavailable"):
        await JwksTokenVerifier(service).verify(token)
    from casebridge_shared.testing import TokenMinter

    stranger = TokenMinter(issuer=base).token("x", "admin")
    with pytest.raises(Unauthorized, match="unavailable"):
        await restarted.verify(stranger)
    header, payload, signature = token.split(".")
    forged = ".".join((header, payload, signature[::-1]))
    with pytest.raises(Unauthorized):
        await restarted.verify(forged)


async def test_a_withdrawn_signing_key_stops_verifying_within_the_bound(intake: tuple[str, Settings]) -> None:
    """After `keys rotate` and the grace period, the old key's tokens are refused here within
    2 x jwks_cache_seconds (the key set's refresh, then what RememberingVerifier remembers)."""
    from sqlmodel import col, update

    from casebridge_shared.auth import RememberingVerifier
    from casebridge_shared.db import Database, utcnow
    from order_intake.identity.models import SigningKey

    base, settings = intake
    now = [1000.0]
    service = ServiceSettings(environment="test", token_issuer=base, jwks_cache_seconds=60)
    verifier = RememberingVerifier(
        JwksTokenVerifier(service, clock=lambda: now[0]), max_age=60, clock=lambda: now[0]
    )
    old = await _login(base)
    assert (await verifier.verify(old)).roles == frozenset({Role.ADMIN})

    db = Database(settings.database_url)
    try:
        await rotate(db, signing_keys_box(settings))
        async with db.write_session() as session:  # the grace period is over: the old key is withdrawn
            await session.exec(
                update(SigningKey)
                .where(col(SigningKey.retired_at).is_not(None))
                .values(retired_at=utcnow() - timedelta(days=30))
            )
            await session.commit()
    finally:
        await db.dispose()
    async with httpx.AsyncClient(base_url=base) as c:
        published = {k["kid"] for k in (await c.get("/.well-known/jwks.json")).json()["keys"]}
    assert jwt.get_unverified_header(old)["kid"] not in published

    now[0] += 59  # within the bound the remembered token may still pass
    await verifier.verify(old)
    now[0] += 2  # the key set is refetched: the old key is gone, the remembered token forgotten
    with pytest.raises(Unauthorized, match="withdrawn"):
        await verifier.verify(old)
    # A token from the new key still verifies (an unknown kid is fetched at once).
    assert (await verifier.verify(await _login(base))).roles == frozenset({Role.ADMIN})
