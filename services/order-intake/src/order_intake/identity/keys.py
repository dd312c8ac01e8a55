"""Token signing keys: Ed25519 (EdDSA), published as a JWKS, rotatable.

The newest unretired key signs; retired keys stay published for a grace
period so tokens they signed keep verifying until they expire.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm
from sqlmodel import col, select

from casebridge_shared.db import Database, utcnow
from order_intake.identity.models import SigningKey

ALGORITHM = "EdDSA"


def generate_key() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    kid = secrets.token_urlsafe(12)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    jwk: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
    return SigningKey(kid=kid, algorithm=ALGORITHM, private_pem=pem, public_jwk=json.dumps(jwk))


class KeyStore:
    """Caches the signing keys; reloads from the database when a kid is unknown."""

    def __init__(
        self, db: Database, *, grace: timedelta, reload_after: timedelta = timedelta(minutes=1)
    ) -> None:
        self._db = db
        self._grace = grace
        # Every api replica re-reads the keys this often, so `keys rotate` reaches all of them.
        self._reload_after = reload_after
        self._loaded_at: datetime | None = None
        self._keys: list[SigningKey] = []
        self._public: dict[str, Ed25519PublicKey] = {}
        self._lock = asyncio.Lock()

    async def load(self, *, create_if_missing: bool = True) -> None:
        async with self._lock:
            async with self._db.session() as session:
                keys = list(
                    (await session.exec(select(SigningKey).order_by(col(SigningKey.created_at).desc()))).all()
                )
            if not keys and create_if_missing:
                key = generate_key()
                async with self._db.write_session() as session:
                    # Another process may have raced us: keep whatever wins.
                    existing = (await session.exec(select(SigningKey))).first()
                    if existing is None:
                        session.add(key)
                        await session.commit()
                await self._reload_unlocked()
                return
            self._set(keys)

    async def _reload_unlocked(self) -> None:
        async with self._db.session() as session:
            keys = list(
                (await session.exec(select(SigningKey).order_by(col(SigningKey.created_at).desc()))).all()
            )
        self._set(keys)

    def _set(self, keys: list[SigningKey]) -> None:
        self._loaded_at = utcnow()
        self._keys = keys
        self._public = {}
        for key in keys:
            private = serialization.load_pem_private_key(key.private_pem.encode(), password=None)
            assert isinstance(private, Ed25519PrivateKey)
            self._public[key.kid] = private.public_key()

    def _published(self, now: datetime) -> list[SigningKey]:
        return [k for k in self._keys if k.retired_at is None or k.retired_at + self._grace > now]

    async def refresh_if_stale(self) -> None:
        if self._loaded_at is None or utcnow() - self._loaded_at >= self._reload_after:
            await self.load(create_if_missing=False)

    @property
    def active(self) -> SigningKey:
        for key in self._keys:
            if key.retired_at is None:
                return key
        raise RuntimeError("no active signing key; run `order-intake keys rotate`")

    def jwks(self) -> dict[str, Any]:
        return {"keys": [json.loads(k.public_jwk) for k in self._published(utcnow())]}

    async def public_key(self, kid: str) -> Ed25519PublicKey | None:
        published = {k.kid for k in self._published(utcnow())}
        if kid not in self._public:
            await self.load(create_if_missing=False)  # maybe rotated by another process
            published = {k.kid for k in self._published(utcnow())}
        return self._public.get(kid) if kid in published else None

    def sign(self, claims: dict[str, Any]) -> str:
        key = self.active
        return jwt.encode(claims, key.private_pem, algorithm=ALGORITHM, headers={"kid": key.kid})


async def rotate(db: Database) -> SigningKey:
    """Make a new active key; the old one is retired but still published for the grace period."""
    new_key = generate_key()
    async with db.write_session() as session:
        for key in (await session.exec(select(SigningKey).where(col(SigningKey.retired_at).is_(None)))).all():
            key.retired_at = utcnow()
            session.add(key)
        session.add(new_key)
        await session.commit()
    return new_key
