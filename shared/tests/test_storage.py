"""The object stores (casebridge_shared.storage): local files and S3 (moto's server), the same
behaviour from both; downloads checked against the recorded hash."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Response
from pydantic import ValidationError

from casebridge_shared.broker import free_port
from casebridge_shared.problems import PROBLEM_BASE, install_problem_handlers
from casebridge_shared.storage import (
    CHUNK,
    MIN_PART_BYTES,
    ContentMismatch,
    LocalStore,
    ObjectMissing,
    ObjectStorageSettings,
    ObjectStore,
    ObjectTooLarge,
    S3Store,
    download_response,
    object_store,
)
from casebridge_shared.testing import ApiServer
from casebridge_shared.testing.object_storage import STORAGE_BACKENDS, S3Server, stored_keys, tamper

pytestmark = pytest.mark.parametrize("storage_backend", STORAGE_BACKENDS)


@pytest.fixture
async def store(storage_settings: dict[str, Any], tmp_path: Path) -> AsyncIterator[ObjectStore]:
    # The smallest part S3 allows, so a multipart upload needs only a few MiB.
    settings = ObjectStorageSettings(**storage_settings, s3_part_bytes=MIN_PART_BYTES)
    objects = object_store(settings, directory=tmp_path / "files", namespace="shared-tests/files")
    yield objects
    await objects.close()


async def chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def cut_off(data: bytes) -> AsyncIterator[bytes]:
    async for chunk in chunks_of(data):
        yield chunk
    raise ConnectionResetError("the client is gone")


async def read_all(objects: ObjectStore, key: str) -> bytes:
    stream = await objects.open(key)
    try:
        return b"".join([chunk async for chunk in stream.chunks()])
    finally:
        await stream.aclose()


async def test_a_file_is_put_read_back_and_deleted(store: ObjectStore, storage_backend: str) -> None:
    assert isinstance(store, S3Store if storage_backend == "s3" else LocalStore)
    data = b"%PDF-1.7 " + bytes(range(256)) * 40
    written = await store.put("k1", chunks_of(data, 1000), max_bytes=len(data))
    assert written.size == len(data) and written.sha256 == hashlib.sha256(data).hexdigest()
    assert await store.exists("k1") and not await store.exists("k2")
    assert (await store.open("k1")).size == len(data)
    assert await read_all(store, "k1") == data
    assert await stored_keys(store) == ["k1"]
    await store.delete("k1")
    await store.delete("k1")  # already gone: no error
    assert not await store.exists("k1")
    with pytest.raises(ObjectMissing):
        await store.open("k1")
    assert await stored_keys(store) == []


async def test_a_file_larger_than_a_part_goes_up_in_parts_and_comes_back_whole(store: ObjectStore) -> None:
    data = hashlib.sha256(b"seed").digest() * ((2 * MIN_PART_BYTES + 12345) // 32)
    written = await store.put("big", chunks_of(data, CHUNK), max_bytes=len(data))
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(await read_all(store, "big")).hexdigest() == written.sha256
    assert await stored_keys(store) == ["big"]


async def test_nothing_is_kept_when_too_large_cut_off_or_not_what_was_expected(store: ObjectStore) -> None:
    small = b"x" * 1000
    with pytest.raises(ObjectTooLarge) as too_large:
        await store.put("k", chunks_of(small), max_bytes=999)
    assert too_large.value.limit == 999
    # Past the first part, so an S3 multipart upload has begun and must be aborted.
    large = b"y" * (MIN_PART_BYTES + 10)
    with pytest.raises(ObjectTooLarge):
        await store.put("k", chunks_of(large, CHUNK), max_bytes=MIN_PART_BYTES + 9)
    with pytest.raises(ConnectionResetError):
        await store.put("k", cut_off(large), max_bytes=len(large))
    with pytest.raises(ContentMismatch):
        await store.put("k", chunks_of(small), max_bytes=len(small), expect_sha256="0" * 64)
    with pytest.raises(ContentMismatch):
        await store.put("k", chunks_of(large, CHUNK), max_bytes=len(large), expect_sha256="0" * 64)
    assert await stored_keys(store) == []
    expected = hashlib.sha256(small).hexdigest()
    await store.put("k", chunks_of(small), max_bytes=len(small), expect_sha256=expected)
    assert await stored_keys(store) == ["k"]


# --- downloads ----------------------------------------------------------------------


def download_app(store: ObjectStore, recorded: dict[str, tuple[int, str]]) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/files/{key}")
    async def download(key: str) -> Response:
        size, sha256 = recorded[key]
        return await download_response(
            store,
            key,
            size=size,
            sha256=sha256,
            media_type="application/pdf",
            filename="Gutachten \u2013 final.pdf",
            headers={"ETag": f'"{sha256}"'},
            what=f"file {key}",
        )

    return app


async def test_downloads_are_checked_against_the_recorded_hash(store: ObjectStore) -> None:
    small = b"%PDF-1.7 small"
    large = b"%PDF-1.7 " + b"L" * (2 * CHUNK + 17)
    recorded: dict[str, tuple[int, str]] = {}
    for key, data in (("small", small), ("large", large), ("resized", small), ("gone", small)):
        written = await store.put(key, chunks_of(data, CHUNK), max_bytes=len(data))
        recorded[key] = (written.size, written.sha256)
    await store.delete("gone")
    transport = httpx.ASGITransport(app=download_app(store, recorded), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://files") as client:
        for key, data in (("small", small), ("large", large)):
            got = await client.get(f"/files/{key}")
            assert got.status_code == 200 and got.content == data
            assert got.headers["content-length"] == str(len(data))
            assert got.headers["content-disposition"] == (
                "attachment; filename*=utf-8''Gutachten%20%E2%80%93%20final.pdf"
            )

        missing = await client.get("/files/gone")
        assert missing.status_code == 404 and "missing from storage" in missing.json()["detail"]

        # Same size, other bytes: a small file is refused before anything is sent.
        await tamper(store, "small", small.replace(b"small", b"SMALL"))
        refused = await client.get("/files/small")
        assert refused.status_code == 500
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"] == PROBLEM_BASE + "stored-file-damaged"

        # Another size: refused before anything is sent, whatever the size.
        await tamper(store, "resized", small + b"!")
        assert (await client.get("/files/resized")).json()["type"] == PROBLEM_BASE + "stored-file-damaged"

        # A large file is cut short of its Content-Length: never a complete-looking wrong file.
        await tamper(store, "large", large[:-1] + b"!")
        short = await client.get("/files/large")
        assert short.status_code == 200 and len(short.content) < len(large)
    strict = httpx.ASGITransport(app=download_app(store, recorded))
    async with httpx.AsyncClient(transport=strict, base_url="http://files") as client:
        with pytest.raises(ContentMismatch):
            await client.get("/files/large")
    # Served by uvicorn, as in production: the client sees a broken transfer, not a file.
    server = ApiServer(lambda: download_app(store, recorded), free_port(), lifespan=False)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/files/large")
            assert (await client.get("/files/small")).status_code == 500
    finally:
        await server.stop()


# --- settings -----------------------------------------------------------------------


def test_local_files_are_the_default_and_s3_settings_are_checked(
    storage_backend: str, tmp_path: Path
) -> None:
    assert ObjectStorageSettings().storage_backend == "local"
    assert isinstance(object_store(ObjectStorageSettings(), directory=tmp_path, namespace="x"), LocalStore)
    with pytest.raises(ValidationError, match="s3_bucket"):
        ObjectStorageSettings(storage_backend="s3")
    with pytest.raises(ValidationError, match="s3_access_key_id and s3_secret_access_key"):
        ObjectStorageSettings(storage_backend="s3", s3_bucket="b", s3_access_key_id="AKIA")
    with pytest.raises(ValidationError, match="s3_part_bytes"):
        ObjectStorageSettings(s3_part_bytes=1024)
    with pytest.raises(ValidationError, match="storage_backend"):
        ObjectStorageSettings(storage_backend="ftp")  # type: ignore[arg-type]
    s3 = ObjectStorageSettings(
        storage_backend="s3",
        s3_bucket="b",
        s3_prefix="/casebridge/prod/",
        s3_access_key_id="AKIAEXAMPLE",
        s3_secret_access_key="very-secret",
    )
    # The credentials never show in a repr, a dump for logs, or the store's location.
    assert "AKIAEXAMPLE" not in repr(s3) and "very-secret" not in repr(s3)
    assert "very-secret" not in str(s3.model_dump())
    objects = object_store(s3, directory=tmp_path, namespace="case-handling/attachments")
    assert isinstance(objects, S3Store)
    assert objects.location == "s3://b/casebridge/prod/case-handling/attachments/"
    assert "very-secret" not in objects.location


def test_the_test_server_gives_each_test_its_own_bucket(storage_backend: str, s3_server: S3Server) -> None:
    assert s3_server.new_bucket() != s3_server.new_bucket()
