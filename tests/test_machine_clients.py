"""Machine clients: the client credentials grant at order-intake, end to end (issue 27 section 2).

An accounting system's ``ledger-exporter`` (auditor) reads the ledger's audit trail and
nothing else; an integrator's ``webhook-admin`` manages the notifier's webhooks and nothing
else. Both verified by the real services over HTTP against order-intake's JWKS. Also:
order-intake's discovery document, as a client reads it.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest

import customer_ledger.main
import notifier.main
import order_intake.main
from casebridge_shared.broker import free_port
from casebridge_shared.oidc import discover
from casebridge_shared.testing import ApiServer, DatabaseTemplates
from customer_ledger.db import MIGRATIONS as LEDGER_MIGRATIONS
from customer_ledger.settings import Settings as LedgerSettings
from notifier.db import MIGRATIONS as NOTIFIER_MIGRATIONS
from notifier.settings import Settings as NotifierSettings
from order_intake.db import MIGRATIONS as INTAKE_MIGRATIONS
from order_intake.settings import Settings as IntakeSettings


@dataclass
class Apis:
    intake: httpx.AsyncClient
    ledger: httpx.AsyncClient
    notifier: httpx.AsyncClient
    issuer: str
    admin: dict[str, str]


@pytest.fixture
async def apis(db_templates: DatabaseTemplates, tmp_path: Path) -> AsyncIterator[Apis]:
    intake_port, ledger_port, notifier_port = free_port(), free_port(), free_port()
    issuer = f"http://127.0.0.1:{intake_port}"
    urls: list[str] = []
    servers: list[ApiServer] = []
    for name, migrations, port in (
        ("order-intake", INTAKE_MIGRATIONS, intake_port),
        ("customer-ledger", LEDGER_MIGRATIONS, ledger_port),
        ("notifier", NOTIFIER_MIGRATIONS, notifier_port),
    ):
        var = tmp_path / name
        var.mkdir()
        url = await db_templates.fresh(name, migrations, var)
        urls.append(url)
        common = {
            "environment": "test",
            "database_url": url,
            "var_dir": var,
            "port": port,
            "log_json": False,
            "token_issuer": issuer,
            "jwks_refetch_cooldown_seconds": 0,
            "revocation_refresh_seconds": 0,
        }
        if name == "order-intake":
            intake_settings = IntakeSettings(**common)
            server = ApiServer(lambda s=intake_settings: order_intake.main.create_application(s), port)
        elif name == "customer-ledger":
            ledger_settings = LedgerSettings(**common)
            server = ApiServer(lambda s=ledger_settings: customer_ledger.main.create_application(s), port)
        else:
            notifier_settings = NotifierSettings(**common)
            server = ApiServer(lambda s=notifier_settings: notifier.main.create_application(s), port)
        await server.start()
        servers.append(server)
    try:
        async with (
            httpx.AsyncClient(base_url=servers[0].url, timeout=30) as intake,
            httpx.AsyncClient(base_url=servers[1].url, timeout=30) as ledger,
            httpx.AsyncClient(base_url=servers[2].url, timeout=30) as notifier_client,
        ):
            r = await intake.post(
                "/auth/token", data={"username": "admin@casebridge.example", "password": "changethis"}
            )
            assert r.status_code == 200, r.text
            admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
            yield Apis(intake, ledger, notifier_client, issuer, admin)
    finally:
        for server in reversed(servers):
            await server.stop()
        for url in urls:
            await db_templates.drop(url)


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def problem(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, object] = r.json()
    return body


async def test_machine_clients_get_tokens_that_read_what_their_role_allows_and_nothing_else(
    apis: Apis,
) -> None:
    intake, admin = apis.intake, apis.admin
    # The admin creates two clients; each secret is shown once.
    r = await intake.post(
        "/machine-clients",
        json={"client_id": "ledger-exporter", "description": "Accounting's export", "roles": ["auditor"]},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/machine-clients/ledger-exporter"
    exporter_secret = r.json()["client_secret"]
    assert exporter_secret.startswith("cbs_") and r.json()["roles"] == ["auditor"]
    r = await intake.post(
        "/machine-clients", json={"client_id": "webhook-admin", "roles": ["webhook_admin"]}, headers=admin
    )
    assert r.status_code == 201, r.text
    webhook_secret = r.json()["client_secret"]
    listed = await intake.get("/machine-clients", headers=admin)
    assert [c["client_id"] for c in listed.json()] == ["ledger-exporter", "webhook-admin"]
    assert "client_secret" not in listed.text and "secret_hash" not in listed.text

    # Secret via HTTP Basic, or in the form; a short token and no refresh token.
    r = await intake.post(
        "/auth/token",
        data={"grant_type": "client_credentials"},
        headers=basic("ledger-exporter", exporter_secret),
    )
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.json()["refresh_token"] is None and r.json()["expires_in"] == 300
    exporter = r.json()["access_token"]
    claims = jwt.decode(exporter, options={"verify_signature": False})
    assert claims["client_id"] == "ledger-exporter" and claims["roles"] == ["auditor"]
    r = await intake.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "webhook-admin",
            "client_secret": webhook_secret,
        },
    )
    assert r.status_code == 200, r.text
    hooks = r.json()["access_token"]

    # The exporter reads the ledger's audit trail and journal, and nothing else.
    assert (await apis.ledger.get("/audit/logins", headers=bearer(exporter))).status_code == 200
    assert (await apis.ledger.get("/ledger/entries", headers=bearer(exporter))).status_code == 200
    correction = await apis.ledger.post(
        "/audit/records/0/corrections",
        json={"reason": "typo", "corrected": {"email": "x@firm.example"}},
        headers=bearer(exporter),
    )
    problem(correction, 403)  # never a change
    problem(await apis.notifier.get("/webhooks", headers=bearer(exporter)), 403)
    problem(await intake.get("/users", headers=bearer(exporter)), 403)
    problem(await intake.get("/machine-clients", headers=bearer(exporter)), 403)
    # The webhook admin manages webhooks, and reads no audit trail.
    assert (await apis.notifier.get("/webhooks", headers=bearer(hooks))).status_code == 200
    problem(await apis.ledger.get("/audit/logins", headers=bearer(hooks)), 403)
    problem(await apis.ledger.get("/ledger/entries", headers=bearer(hooks)), 403)

    # Rotating the secret: the old secret gets nothing, and the token it got is refused.
    r = await intake.post("/machine-clients/ledger-exporter/rotate-secret", headers=admin)
    assert r.status_code == 200, r.text
    new_secret = r.json()["client_secret"]
    assert new_secret != exporter_secret and r.json()["version"] == 2
    problem(
        await intake.post(
            "/auth/token",
            data={"grant_type": "client_credentials"},
            headers=basic("ledger-exporter", exporter_secret),
        ),
        401,
    )
    assert "revoked" in str(problem(await intake.get("/users", headers=bearer(exporter)), 401)["detail"])
    r = await intake.post(
        "/auth/token", data={"grant_type": "client_credentials"}, headers=basic("ledger-exporter", new_secret)
    )
    assert r.status_code == 200, r.text
    problem(
        await intake.get("/users", headers=bearer(r.json()["access_token"])), 403
    )  # valid, just not allowed

    # Disabled: no more tokens.
    r = await intake.post("/machine-clients/webhook-admin/disable", headers=admin)
    assert r.status_code == 200 and r.json()["active"] is False, r.text
    problem(
        await intake.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "webhook-admin",
                "client_secret": webhook_secret,
            },
        ),
        401,
    )
    assert "disabled" in str(problem(await intake.get("/users", headers=bearer(hooks)), 401)["detail"])


async def test_machine_client_requests_that_are_wrong_get_problems_and_change_nothing(apis: Apis) -> None:
    intake, admin = apis.intake, apis.admin
    # Only the narrow machine roles: never admin or a person's roles.
    for roles in (["admin"], ["staff"], ["customer"], [], ["nonsense"]):
        body = problem(
            await intake.post(
                "/machine-clients", json={"client_id": "x-client", "roles": roles}, headers=admin
            ),
            422,
        )
        assert any(e["field"].startswith("body.roles") for e in body["errors"]), body  # type: ignore[attr-defined]
    body = problem(
        await intake.post(
            "/machine-clients", json={"client_id": "Bad Name", "roles": ["auditor"]}, headers=admin
        ),
        422,
    )
    assert body["errors"][0]["field"] == "body.client_id"  # type: ignore[index]
    assert (await intake.get("/machine-clients", headers=admin)).json() == []
    problem(await intake.post("/machine-clients", json={"client_id": "x-client", "roles": ["auditor"]}), 401)

    r = await intake.post(
        "/machine-clients", json={"client_id": "exporter", "roles": ["auditor"]}, headers=admin
    )
    secret = r.json()["client_secret"]
    body = problem(
        await intake.post(
            "/machine-clients", json={"client_id": "exporter", "roles": ["auditor"]}, headers=admin
        ),
        409,
    )
    assert body["errors"][0]["field"] == "body.client_id"  # type: ignore[index]
    problem(await intake.post("/machine-clients/nobody/disable", headers=admin), 404)
    problem(await intake.post("/machine-clients/nobody/rotate-secret", headers=admin), 404)

    grant = {"grant_type": "client_credentials"}
    problem(await intake.post("/auth/token", data=grant, headers=basic("exporter", "cbs_wrong")), 401)
    problem(await intake.post("/auth/token", data=grant, headers=basic("nobody", secret)), 401)
    problem(await intake.post("/auth/token", data={**grant, "client_id": "exporter"}), 422)
    both = {**grant, "client_id": "exporter", "client_secret": secret}
    problem(await intake.post("/auth/token", data=both, headers=basic("exporter", secret)), 422)
    problem(await intake.post("/auth/token", data=grant, headers={"Authorization": "Basic !!!"}), 401)
    not_utf8 = "Basic " + base64.b64encode(b"\xff\xfe:secret").decode()
    problem(await intake.post("/auth/token", data=grant, headers={"Authorization": not_utf8}), 401)
    no_colon = "Basic " + base64.b64encode(b"exporter").decode()
    problem(await intake.post("/auth/token", data=grant, headers={"Authorization": no_colon}), 401)
    problem(await intake.post("/auth/token", data={"grant_type": "authorization_code"}), 422)
    assert (await intake.post("/auth/token", data=both)).status_code == 200


async def test_order_intake_publishes_its_discovery_document(apis: Apis) -> None:
    r = await apis.intake.get("/.well-known/openid-configuration")
    assert r.status_code == 200
    document = r.json()
    assert document["issuer"] == apis.issuer
    assert document["token_endpoint"] == f"{apis.issuer}/auth/token"
    assert document["grant_types_supported"] == ["password", "refresh_token", "client_credentials"]
    assert document["response_types_supported"] == []  # no authorization endpoint: no redirect flows
    assert "authorization_endpoint" not in document and "userinfo_endpoint" not in document
    assert document["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "client_secret_post"]
    assert (await apis.intake.get("/.well-known/oauth-authorization-server")).json() == document
    # What a verifier does with it: the issuer matches and the jwks_uri has the signing keys.
    async with httpx.AsyncClient() as client:
        found = await discover(client, apis.issuer)
        keys = (await client.get(found.jwks_uri)).json()["keys"]
    assert keys and all(k["alg"] == "EdDSA" for k in keys)
