"""Token signing keys: Ed25519 (EdDSA), published as a JWKS, rotatable.

The newest unretired key signs; retired keys stay published for a grace
period so tokens they signed keep verifying until they expire.

The private keys are sealed in the database (``casebridge_shared.sealing``) with a key
from ``signing_keys_secret``/``signing_keys_secret_file`` (a 0600 key file in
development): a copy of the database alone mints no tokens. A key found in
plaintext (stored before sealing) is sealed when the keys are loaded.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import datetime, timedelta
from typing import Any

import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm
from sqlmodel import col, select

from casebridge_shared.db import Database, utcnow
from casebridge_shared.sealing import SecretBox, key_file, key_from_secret
from order_intake.identity.models import SigningKey
from order_intake.settings import Settings

ALGORITHM = "EdDSA"
_PURPOSE = "casebridge order-intake token signing keys"
log = structlog.get_logger(__name__)


def signing_keys_box(settings: Settings) -> SecretBox:
    """The box that seals the signing private keys, from the settings (see Settings)."""
    setting = "signing_keys_secret"
    if settings.signing_keys_secret is not None:
        key = key_from_secret(settings.signing_keys_secret.get_secret_value(), purpose=_PURPOSE)
    elif settings.signing_keys_secret_file is not None:
        setting = "signing_keys_secret_file"
        secret = settings.signing_keys_secret_file.read_text(encoding="utf-8").strip()
        if not secret:
            raise ValueError(f"{settings.signing_keys_secret_file} is empty")
        key = key_from_secret(secret, purpose=_PURPOSE)
    else:  # development/test only (Settings refuses this elsewhere)
        key, created = key_file(settings.signing_keys_key_path)
        if created:
            log.warning("identity.signing_keys_key_created", path=str(settings.signing_keys_key_path))
    return SecretBox(key, key_setting=setting)


def generate_key(box: SecretBox) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    kid = secrets.token_urlsafe(12)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    jwk: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
    return SigningKey(kid=kid, algorithm=ALGORITHM, private_pem=box.seal(pem), public_jwk=json.dumps(jwk))


class KeyStore:
    """Caches the signing keys; reloads from the database when a kid is unknown."""

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        *,
        grace: timedelta,
        reload_after: timedelta = timedelta(minutes=1),
    ) -> None:
        self._db = db
        self.box = box
        self._grace = grace
        # Every api replica re-reads the keys this often, so `keys rotate` reaches all of them.
        self._reload_after = reload_after
        self._loaded_at: datetime | None = None
        self._keys: list[SigningKey] = []
        self._public: dict[str, Ed25519PublicKey] = {}
        self._private: dict[str, Ed25519PrivateKey] = {}
        self._lock = asyncio.Lock()

    async def load(self, *, create_if_missing: bool = True) -> None:
        async with self._lock:
            async with self._db.session() as session:
                keys = list(
                    (await session.exec(select(SigningKey).order_by(col(SigningKey.created_at).desc()))).all()
                )
            if any(not self.box.is_sealed(k.private_pem) for k in keys):
                await self._seal_plaintext()
                await self._reload_unlocked()
                return
            if not keys and create_if_missing:
                key = generate_key(self.box)
                async with self._db.write_session() as session:
                    # Another process may have raced us: keep whatever wins.
                    existing = (await session.exec(select(SigningKey))).first()
                    if existing is None:
                        session.add(key)
                        await session.commit()
                await self._reload_unlocked()
                return
            self._set(keys)

    async def _seal_plaintext(self) -> None:
        """Seal the keys stored in plaintext before sealing existed (once; the first process wins)."""
        async with self._db.write_session() as session:
            plain = [
                k
                for k in (await session.exec(select(SigningKey))).all()
                if not self.box.is_sealed(k.private_pem)
            ]
            for key in plain:
                key.private_pem = self.box.seal(key.private_pem)
                session.add(key)
            await session.commit()
        if plain:
            log.warning("identity.signing_keys_sealed", keys=len(plain))

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
        self._private = {}
        for key in keys:
            pem = self.box.open(key.private_pem)
            private = serialization.load_pem_private_key(pem.encode(), password=None)
            assert isinstance(private, Ed25519PrivateKey)
            self._private[key.kid] = private
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
        return jwt.encode(claims, self._private[key.kid], algorithm=ALGORITHM, headers={"kid": key.kid})


async def rotate(db: Database, box: SecretBox) -> SigningKey:
    """Make a new active key; the old one is retired but still published for the grace period."""
    new_key = generate_key(box)
    async with db.write_session() as session:
        for key in (await session.exec(select(SigningKey).where(col(SigningKey.retired_at).is_(None)))).all():
            key.retired_at = utcnow()
            session.add(key)
        session.add(new_key)
        await session.commit()
    return new_key
