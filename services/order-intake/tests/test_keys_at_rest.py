"""The token signing private keys are sealed in the database; var/ files are owner-only (issue 25)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import jwt
import pytest
from sqlmodel import select

from casebridge_shared.db import Database
from casebridge_shared.sealing import SecretBox, key_from_secret
from order_intake.bootstrap import Container
from order_intake.identity.keys import KeyStore, generate_key, signing_keys_box
from order_intake.identity.models import SigningKey
from order_intake.settings import Settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _stored(container: Container) -> list[SigningKey]:
    async with container.db.session() as session:
        return list((await session.exec(select(SigningKey))).all())


async def test_signing_keys_are_not_plaintext_in_the_database(
    container: Container, settings: Settings
) -> None:
    stored = await _stored(container)
    assert stored
    for key in stored:
        assert key.private_pem.startswith("fernet:")
        assert "PRIVATE KEY" not in key.private_pem
    # Without the sealing key the stored value opens nothing.
    stranger = SecretBox(key_from_secret("someone else's secret", purpose="x"))
    with pytest.raises(ValueError, match="sealed with another key"):
        stranger.open(stored[0].private_pem)
    # In test/development the sealing key is a 0600 file under var/.
    assert _mode(settings.signing_keys_key_path) == 0o600
    # The store still signs with the sealed key.
    token = container.keys.sign({"sub": "x"})
    assert jwt.get_unverified_header(token)["kid"] == stored[0].kid


async def test_keys_stored_in_plaintext_before_sealing_are_sealed_on_load(
    container: Container, settings: Settings
) -> None:
    plain = generate_key(container.keys.box)
    plain.kid = "stored-in-plaintext"
    plain.private_pem = container.keys.box.open(plain.private_pem)
    assert plain.private_pem.startswith("-----BEGIN PRIVATE KEY-----")
    async with container.db.write_session() as session:
        session.add(plain)
        await session.commit()

    store = KeyStore(container.db, signing_keys_box(settings), grace=container.keys._grace)
    await store.load()
    by_kid = {k.kid: k for k in await _stored(container)}
    assert by_kid["stored-in-plaintext"].private_pem.startswith("fernet:")
    assert await store.public_key("stored-in-plaintext") is not None


async def test_a_secret_from_the_environment_seals_the_keys(settings: Settings) -> None:
    secret = settings.model_copy(update={"signing_keys_secret": None})
    secret_file = settings.var_dir / "signing-secret"
    secret_file.write_text("from-the-vault\n")
    with_file = secret.model_copy(update={"signing_keys_secret_file": secret_file})
    from pydantic import SecretStr

    with_env = secret.model_copy(update={"signing_keys_secret": SecretStr("from-the-vault")})
    sealed = signing_keys_box(with_file).seal("pem")
    assert signing_keys_box(with_env).open(sealed) == "pem"  # the same secret, either way
    with pytest.raises(ValueError, match="signing_keys_secret"):
        signing_keys_box(secret).open(sealed)  # the development key file is another key


async def test_sqlite_databases_and_their_wal_files_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "var" / "order-intake.sqlite3"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        async with db.write_session() as session:
            await session.exec(select(1))  # type: ignore[call-overload]
            await session.commit()
        assert path.exists()
        for file in path.parent.iterdir():
            assert _mode(file) & 0o077 == 0, (file, oct(_mode(file)))
    finally:
        await db.dispose()

    # A database made before (0644) is taken away from group and others when opened.
    path.chmod(0o644)
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        async with db.session() as session:
            await session.exec(select(1))  # type: ignore[call-overload]
    finally:
        await db.dispose()
    assert _mode(path) == 0o600


async def test_the_api_creates_var_files_owner_only(settings: Settings, tmp_path: Path) -> None:
    from order_intake.main import create_application

    before = os.umask(0o022)  # as a shell leaves it
    try:
        create_application(settings)
        made = tmp_path / "upload.bin"
        made.write_bytes(b"x")
        directory = tmp_path / "uploads"
        directory.mkdir()
    finally:
        os.umask(before)
    assert _mode(made) == 0o600 and _mode(directory) == 0o700


def test_no_signing_keys_secret_is_refused_outside_development(settings: Settings) -> None:
    with pytest.raises(ValueError, match="signing_keys_secret or signing_keys_secret_file is required"):
        Settings(
            environment="staging",
            bootstrap_admin_password="a-real-admin-passphrase-7261",
            database_url=settings.database_url,
        )
