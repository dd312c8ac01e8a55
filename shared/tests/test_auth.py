"""RememberingVerifier: a token verified once passes again without a check, within bounds."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from casebridge_shared.auth import KeyResolverVerifier, Principal, RememberingVerifier, Role
from casebridge_shared.problems import Unauthorized

ISSUER = "http://issuer.test"
AUDIENCE = "casebridge"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class CountingVerifier:
    """The real in-process verifier, counting how often it is asked."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        public = key.public_key()

        async def resolve(kid: str) -> Any:
            return public if kid == "k1" else None

        self._real = KeyResolverVerifier(resolve, issuer=ISSUER, audience=AUDIENCE)
        self.calls = 0

    async def verify(self, token: str) -> Principal:
        self.calls += 1
        return await self._real.verify(token)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def token(key: Ed25519PrivateKey, *, subject: str = "u1", lifetime: float = 900) -> str:
    now = int(time.time())
    claims = {
        "sub": subject,
        "roles": ["customer"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + int(lifetime),
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "k1"})


async def test_a_token_verified_once_is_not_checked_again(key: Ed25519PrivateKey) -> None:
    inner = CountingVerifier(key)
    verifier = RememberingVerifier(inner, max_age=300)
    first, second = token(key, subject="u1"), token(key, subject="u2")

    a = await verifier.verify(first)
    b = await verifier.verify(first)
    c = await verifier.verify(second)

    assert a == b and a.subject == "u1" and Role.CUSTOMER in a.roles
    assert a.expires_at is not None and a.expires_at > time.time()
    assert c.subject == "u2"
    assert inner.calls == 2


async def test_a_token_is_forgotten_when_it_expires(key: Ed25519PrivateKey) -> None:
    clock = Clock()
    inner = CountingVerifier(key)
    verifier = RememberingVerifier(inner, max_age=3600, clock=clock)
    t = token(key, lifetime=60)
    principal = await verifier.verify(t)
    assert principal.expires_at is not None

    clock.now = principal.expires_at - 1
    await verifier.verify(t)
    assert inner.calls == 1
    clock.now = principal.expires_at
    await verifier.verify(t)  # still valid by the real clock, so the real check passes
    assert inner.calls == 2


async def test_a_token_is_forgotten_after_max_age(key: Ed25519PrivateKey) -> None:
    clock = Clock()
    inner = CountingVerifier(key)
    verifier = RememberingVerifier(inner, max_age=30, clock=clock)
    t = token(key, lifetime=900)
    await verifier.verify(t)

    clock.now += 29
    await verifier.verify(t)
    assert inner.calls == 1
    clock.now += 2
    await verifier.verify(t)
    assert inner.calls == 2


async def test_refusals_are_not_remembered_and_other_bytes_do_not_match(key: Ed25519PrivateKey) -> None:
    inner = CountingVerifier(key)
    verifier = RememberingVerifier(inner, max_age=300)
    good = token(key)
    await verifier.verify(good)
    head, _claims, signature = good.split(".")
    forged_claims = base64.urlsafe_b64encode(json.dumps({"sub": "admin", "roles": ["admin"]}).encode())
    forged = (
        f"{head}.{forged_claims.decode().rstrip('=')}.{signature}"  # a verified signature on other claims
    )
    other_key = token(Ed25519PrivateKey.generate())

    for bad in (forged, forged, other_key, other_key):
        with pytest.raises(Unauthorized):
            await verifier.verify(bad)
    assert inner.calls == 5


async def test_max_age_zero_remembers_nothing(key: Ed25519PrivateKey) -> None:
    inner = CountingVerifier(key)
    verifier = RememberingVerifier(inner, max_age=0)
    t = token(key)
    await verifier.verify(t)
    await verifier.verify(t)
    assert inner.calls == 2


async def test_at_most_max_tokens_are_remembered(key: Ed25519PrivateKey) -> None:
    inner = CountingVerifier(key)
    verifier = RememberingVerifier(inner, max_age=300, max_tokens=2)
    tokens = [token(key, subject=f"u{i}") for i in range(3)]
    for t in tokens:
        await verifier.verify(t)
    await verifier.verify(tokens[2])
    assert inner.calls == 3
    await verifier.verify(tokens[0])  # pushed out by the third
    assert inner.calls == 4
