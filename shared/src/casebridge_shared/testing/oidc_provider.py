"""A small OpenID Connect provider the tests run themselves (no Keycloak or Entra needed).

It serves what a verifier reads of a real provider, ``/.well-known/openid-configuration``
and the JWKS it names, and mints tokens with its own keys (RS256 by default, as Keycloak
and Entra sign). Claims are whatever the test gives, so Keycloak-shaped
(``realm_access.roles``) and Entra-shaped (``groups`` as object ids, ``tid``, ``oid``,
``upn``) tokens are both one call. ``rotate()`` starts signing with a new key (a new
``kid``) the way a provider rolls its keys; ``requests`` counts what was fetched.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from jwt.algorithms import RSAAlgorithm


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class OidcProvider:
    def __init__(self, issuer: str, *, audience: str = "casebridge") -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.requests: Counter[str] = Counter()
        self._keys: list[tuple[str, rsa.RSAPrivateKey]] = []
        # Published for encryption (use: enc), as Keycloak does: must never verify a signature.
        self._encryption_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rotate()

    @property
    def kid(self) -> str:
        """The key now signing."""
        return self._keys[-1][0]

    def rotate(self) -> str:
        """Sign with a new key from now on; the old ones stay published (as providers do)."""
        kid = f"provider-{uuid.uuid4().hex[:8]}"
        self._keys.append((kid, rsa.generate_private_key(public_exponent=65537, key_size=2048)))
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self._keys:
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        enc = json.loads(RSAAlgorithm.to_jwk(self._encryption_key.public_key()))
        keys.append({**enc, "kid": "provider-enc", "use": "enc", "alg": "RSA-OAEP"})
        return {"keys": keys}

    def token(
        self,
        claims: dict[str, Any] | None = None,
        *,
        subject: str = "provider-user-1",
        lifetime_seconds: int = 300,
        issuer: str | None = None,
        audience: str | None = None,
        algorithm: str = "RS256",
        kid: str | None = None,
    ) -> str:
        """A token signed by the current key; every standard claim can be made wrong on purpose."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": issuer or self.issuer,
            "aud": audience or self.audience,
            "sub": subject,
            "iat": now - (0 if lifetime_seconds > 0 else 600),
            "exp": now + lifetime_seconds,
            **(claims or {}),
        }
        headers = {"kid": kid or self.kid}
        if algorithm == "RS256":
            return jwt.encode(payload, self._keys[-1][1], algorithm="RS256", headers=headers)
        if algorithm == "RS256-enc":  # signed with the published encryption key
            return jwt.encode(
                payload, self._encryption_key, algorithm="RS256", headers={"kid": "provider-enc"}
            )
        if algorithm == "ES256":  # a key the provider never published
            return jwt.encode(
                payload, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers=headers
            )
        if algorithm == "HS256":  # the old confusion attack: the public key used as an HMAC secret
            # Built by hand: PyJWT rightly refuses to sign with a public key as the secret.
            secret = (
                self._keys[-1][1]
                .public_key()
                .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            )
            signing_input = b".".join(
                _b64(json.dumps(part, separators=(",", ":")).encode())
                for part in ({"alg": "HS256", "typ": "JWT", **headers}, payload)
            )
            signature = _b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
            return (signing_input + b"." + signature).decode()
        raise ValueError(f"no test signing for {algorithm}")

    def keycloak(self, *roles: str, subject: str = "kc-user-1", client: str = "casebridge") -> str:
        """Shaped like a Keycloak access token: realm roles and client roles, preferred_username."""
        return self.token(
            {
                "realm_access": {"roles": [*roles, "offline_access", "uma_authorization"]},
                "resource_access": {client: {"roles": list(roles)}, "account": {"roles": ["view-profile"]}},
                "preferred_username": "kc.user",
                "email": "kc.user@firm.example",
                "name": "Kim Keycloak",
                "azp": client,
                "typ": "Bearer",
            },
            subject=subject,
        )

    def entra(self, *groups: str, tenant: str, oid: str = "00000000-0000-0000-0000-0000000000e1") -> str:
        """Shaped like an Entra ID (v2.0) access token: groups as object ids, tid, oid, upn."""
        return self.token(
            {
                "groups": list(groups),
                "tid": tenant,
                "oid": oid,
                "upn": "erin.entra@firm.example",
                "name": "Erin Entra",
                "ver": "2.0",
            },
            # Entra's sub is pairwise (per application); oid is the user everywhere.
            subject=f"pairwise-{uuid.uuid4().hex[:12]}",
        )

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/.well-known/openid-configuration")
        async def discovery() -> dict[str, Any]:
            self.requests["discovery"] += 1
            return {
                "issuer": self.issuer,
                "jwks_uri": f"{self.issuer}/protocol/openid-connect/certs",
                "token_endpoint": f"{self.issuer}/protocol/openid-connect/token",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }

        @app.get("/protocol/openid-connect/certs")
        async def certs() -> dict[str, Any]:
            self.requests["jwks"] += 1
            return self.jwks()

        return app


__all__ = ["OidcProvider"]
