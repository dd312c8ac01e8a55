"""All four services behave the same with an external OpenID Connect provider (issue 27 section 2).

The provider is one the test runs itself (casebridge_shared.testing.oidc_provider): discovery,
a JWKS and tokens signed with its own RSA keys, shaped like Keycloak's and Entra's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import case_handling.main
import customer_ledger.main
import notifier.main
import order_intake.main
from case_handling.db import MIGRATIONS as CASE_MIGRATIONS
from case_handling.settings import Settings as CaseSettings
from casebridge_shared.broker import free_port
from casebridge_shared.testing import ApiServer, DatabaseTemplates
from casebridge_shared.testing.oidc_provider import OidcProvider
from customer_ledger.db import MIGRATIONS as LEDGER_MIGRATIONS
from customer_ledger.settings import Settings as LedgerSettings
from notifier.db import MIGRATIONS as NOTIFIER_MIGRATIONS
from notifier.settings import Settings as NotifierSettings
from order_intake.db import MIGRATIONS as INTAKE_MIGRATIONS
from order_intake.settings import Settings as IntakeSettings

TENANT = "7f1c9a52-3e0b-4c55-9a0e-0f2d4b8c1a11"
ADMINS_GROUP = "a4d2f0c8-91b3-4e7a-8c55-2f6e1d9b0c37"  # an Entra group object id
STAFF_GROUP = "0b7e5c21-6f48-4d9a-b3e2-9c1f7a8d5e40"
UNMAPPED_GROUP = "5d3a8e91-2c47-4b6f-a0d8-7e1b9f4c2a63"


@dataclass(frozen=True)
class Service:
    name: str
    settings: type[Any]
    migrations: Path
    create: Callable[[Any], Any]
    admin_path: str  # a GET only an admin may make


SERVICES = [
    Service(
        "order-intake", IntakeSettings, INTAKE_MIGRATIONS, order_intake.main.create_application, "/users"
    ),
    Service("case-handling", CaseSettings, CASE_MIGRATIONS, case_handling.main.create_application, "/cases"),
    Service("notifier", NotifierSettings, NOTIFIER_MIGRATIONS, notifier.main.create_application, "/webhooks"),
    Service(
        "customer-ledger",
        LedgerSettings,
        LEDGER_MIGRATIONS,
        customer_ledger.main.create_application,
        "/audit/logins",
    ),
]

KEYCLOAK = {
    "oidc_roles_claims": ["realm_access.roles", "resource_access.casebridge.roles"],
    "oidc_role_mapping": {"casebridge-admins": "admin", "casebridge-staff": "staff"},
    "oidc_email_claim": "email",
}
ENTRA = {
    "oidc_roles_claims": ["groups"],
    "oidc_role_mapping": {ADMINS_GROUP: ["admin"], STAFF_GROUP: ["staff"]},
    "oidc_subject_claim": "oid",
    "oidc_email_claim": "upn",
    "oidc_required_claims": {"tid": TENANT},
}


@pytest.fixture
async def provider() -> AsyncIterator[OidcProvider]:
    port = free_port()
    idp = OidcProvider(f"http://127.0.0.1:{port}")
    server = ApiServer(idp.app, port, lifespan=False)
    await server.start()
    try:
        yield idp
    finally:
        await server.stop()


@asynccontextmanager
async def running(
    service: Service,
    idp: OidcProvider,
    db_templates: DatabaseTemplates,
    tmp_path: Path,
    claims: dict[str, Any],
) -> AsyncIterator[httpx.AsyncClient]:
    """The service's api on a real port, trusting ``idp`` with the given claim settings."""
    var = tmp_path / service.name
    var.mkdir()
    url = await db_templates.fresh(service.name, service.migrations, var)
    port = free_port()
    settings = service.settings(
        environment="test",
        database_url=url,
        var_dir=var,
        port=port,
        log_json=False,
        token_issuer=f"http://127.0.0.1:{port}" if service.name == "order-intake" else "http://127.0.0.1:9",
        oidc_issuer=idp.issuer,
        oidc_audience="casebridge-api",
        jwks_refetch_cooldown_seconds=0,
        **claims,
    )
    api = ApiServer(lambda: service.create(settings), port)
    await api.start()
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            yield client
    finally:
        await api.stop()
        await db_templates.drop(url)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def refused(client: httpx.AsyncClient, path: str, token: str, status: int, reason: str) -> None:
    r = await client.get(path, headers=bearer(token))
    assert r.status_code == status, (path, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    assert reason.lower() in r.json()["detail"].lower(), r.json()


@pytest.mark.parametrize("service", SERVICES, ids=[s.name for s in SERVICES])
async def test_keycloak_shaped_tokens(
    service: Service, provider: OidcProvider, db_templates: DatabaseTemplates, tmp_path: Path
) -> None:
    provider.audience = "casebridge-api"
    async with running(service, provider, db_templates, tmp_path, KEYCLOAK) as client:
        path = service.admin_path
        # realm_access.roles: casebridge-admins is mapped to admin.
        ok = await client.get(path, headers=bearer(provider.keycloak("casebridge-admins")))
        assert ok.status_code == 200, ok.text
        # A provider role that is not mapped grants nothing, even one spelled like ours.
        await refused(client, path, provider.keycloak("admin", "offline_access"), 403, "roles")

        # Wrong issuer, audience, algorithm, key or expiry: 401 problems.
        admins = {"realm_access": {"roles": ["casebridge-admins"]}}
        await refused(client, path, provider.token(admins, issuer="http://127.0.0.1:9/evil"), 401, "issuer")
        await refused(client, path, provider.token(admins, audience="account"), 401, "audience")
        await refused(client, path, provider.token(admins, lifetime_seconds=-60), 401, "expired")
        await refused(client, path, provider.token(admins, algorithm="HS256"), 401, "invalid token")
        await refused(client, path, provider.token(admins, algorithm="ES256", kid="forged"), 401, "key id")
        await refused(client, path, provider.token(admins, algorithm="ES256"), 401, "invalid token")
        await refused(client, path, provider.token(admins, algorithm="RS256-enc"), 401, "key id")
        unsigned = client.get(path, headers={"Authorization": "Bearer not-a-jwt"})
        assert (await unsigned).status_code == 401

        # Key rotation: a token from the new key (a kid never seen) is verified after a refetch.
        fetched = provider.requests["jwks"]
        provider.rotate()
        rotated = await client.get(path, headers=bearer(provider.keycloak("casebridge-admins")))
        assert rotated.status_code == 200, rotated.text
        assert provider.requests["jwks"] > fetched
        assert provider.requests["discovery"] >= 1

        if service.name == "order-intake":
            # Its own tokens keep working beside the provider's.
            login = {"username": "admin@casebridge.example", "password": "changethis"}
            own = (await client.post("/auth/token", data=login)).json()["access_token"]
            assert (await client.get(path, headers=bearer(own))).status_code == 200


@pytest.mark.parametrize("service", SERVICES, ids=[s.name for s in SERVICES])
async def test_entra_shaped_tokens(
    service: Service, provider: OidcProvider, db_templates: DatabaseTemplates, tmp_path: Path
) -> None:
    provider.audience = "casebridge-api"
    async with running(service, provider, db_templates, tmp_path, ENTRA) as client:
        path = service.admin_path
        ok = await client.get(path, headers=bearer(provider.entra(ADMINS_GROUP, tenant=TENANT)))
        assert ok.status_code == 200, ok.text
        # A group that is not mapped grants nothing (nor does a group named like one of our roles).
        await refused(client, path, provider.entra(UNMAPPED_GROUP, "admin", tenant=TENANT), 403, "roles")
        # Another tenant's token, though signed by the same keys, is refused.
        other = provider.entra(ADMINS_GROUP, tenant="11111111-2222-3333-4444-555555555555")
        await refused(client, path, other, 401, "tid")


async def test_unknown_key_ids_refetch_the_keys_at_most_once_per_cooldown(provider: OidcProvider) -> None:
    """Forged kids cannot make a service hammer the provider; a real rotation is still picked up
    once the cooldown has passed."""
    from casebridge_shared.auth import JwksTokenVerifier
    from casebridge_shared.problems import Unauthorized
    from casebridge_shared.settings import ServiceSettings

    now = [1000.0]
    settings = ServiceSettings(
        environment="test",
        oidc_issuer=provider.issuer,
        jwks_refetch_cooldown_seconds=10,
        jwks_cache_seconds=600,
    )
    verifier = JwksTokenVerifier(settings, clock=lambda: now[0])
    claims = {"roles": ["staff"]}
    assert (await verifier.verify(provider.token(claims))).subject == "provider-user-1"
    assert provider.requests["jwks"] == 1 and provider.requests["discovery"] == 1
    for n in range(20):
        with pytest.raises(Unauthorized, match="key id"):
            await verifier.verify(provider.token(claims, kid=f"forged-{n}"))
    assert provider.requests["jwks"] == 1
    provider.rotate()
    now[0] += 11
    assert (await verifier.verify(provider.token(claims))).subject == "provider-user-1"
    assert provider.requests["jwks"] == 2


async def test_a_discovery_document_naming_another_issuer_is_not_trusted(provider: OidcProvider) -> None:
    from casebridge_shared.auth import JwksTokenVerifier
    from casebridge_shared.problems import Unauthorized
    from casebridge_shared.settings import ServiceSettings

    configured = provider.issuer
    provider.issuer = "https://evil.example"  # what its discovery document now names
    verifier = JwksTokenVerifier(ServiceSettings(environment="test", oidc_issuer=configured))
    with pytest.raises(Unauthorized, match="unavailable"):
        await verifier.verify(provider.token({"roles": ["staff"]}, issuer=configured))
    assert provider.requests["discovery"] == 1 and provider.requests["jwks"] == 0  # its keys never used
