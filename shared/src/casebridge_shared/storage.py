"""Where users' files are kept: local files (the default) or an S3-compatible object store.

Every file a service keeps (staff attachments, customers' order files, fetched documents)
goes through an :class:`ObjectStore`: ``put`` streams chunks in while counting them
against a limit and computing their SHA-256, ``open`` streams them back, ``delete`` and
``exists``. Two kinds exist:

- :class:`LocalStore`, today's behaviour: one directory per kind of file, a file
  written under a hidden temporary name and renamed into place only when complete;
- :class:`S3Store`: one bucket (and an optional key prefix) shared by every service, each
  kind of file under its own namespace; anything larger than one part is sent as a
  multipart upload, so neither kind holds a whole file in memory.

A ``put`` whose chunks raise (a size or type check in ``uploads``, a cut connection in a
fetcher), that goes over ``max_bytes`` or whose hash is not ``expect_sha256`` stores
nothing: the temporary file is removed, the multipart upload aborted.

:func:`download_response` serves a stored file and checks it against the SHA-256 and
size recorded when it was stored (docs/adr/0046-object-storage.md): a file that no
longer matches is never handed out as if it were whole. The choice of store is made once
per service, in its ``bootstrap.py``, with :func:`object_store`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol, Self
from urllib.parse import quote

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from fastapi import Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, SecretStr, model_validator

from casebridge_shared.problems import PROBLEM_BASE, NotFound, Problem

log = structlog.get_logger(__name__)

CHUNK = 1024 * 1024
MIN_PART_BYTES = 5 * 1024 * 1024  # S3's smallest part (all but the last)
DEFAULT_PART_BYTES = 8 * 1024 * 1024


class ObjectTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


class ContentMismatch(Exception):
    """What was written is not what the caller expected (its SHA-256)."""


class ObjectMissing(Exception):
    """No object under that key."""


class StoredFileDamaged(Problem):
    """The stored file no longer matches the SHA-256 or size recorded when it was stored."""

    status, slug, title = 500, "stored-file-damaged", "Stored file damaged"


@dataclass(frozen=True)
class Written:
    size: int
    sha256: str


class ObjectStream(Protocol):
    size: int

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class ObjectStore(Protocol):
    """Users' files, by key. Keys are ours (ids we made), never a user's file name."""

    @property
    def location(self) -> str:
        """Where the files are, for logs and operators (never a credential)."""
        ...

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int, expect_sha256: str | None = None
    ) -> Written: ...

    async def open(self, key: str) -> ObjectStream: ...

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool: ...

    async def close(self) -> None: ...


# --- settings -------------------------------------------------------------------------


class ObjectStorageSettings(BaseModel):
    """Mixed into the settings of every service that keeps users' files
    (``CASEBRIDGE_<SERVICE>_STORAGE_BACKEND``, then ``CASEBRIDGE_STORAGE_BACKEND``, ...)."""

    # local: files under var_dir (or the services' *_dir settings), as before; s3: an
    # S3-compatible object store (AWS S3, MinIO, Ceph RGW, ...). docs/configuration.md.
    storage_backend: Literal["local", "s3"] = "local"
    s3_bucket: str = ""
    # Empty: AWS's own endpoint for s3_region. Otherwise e.g. http://minio:9000.
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    # Both empty: botocore's usual chain (environment, instance or task role, ...).
    s3_access_key_id: SecretStr = SecretStr("")
    s3_secret_access_key: SecretStr = SecretStr("")
    # Put before every key, e.g. "casebridge/prod/"; each kind of file adds its own
    # namespace after it ("case-handling/attachments/<id>").
    s3_prefix: str = ""
    # Path-style URLs (endpoint/bucket/key) instead of virtual-hosted ones
    # (bucket.endpoint/key): most self-hosted S3 servers want this.
    s3_path_style: bool = False
    s3_part_bytes: int = Field(default=DEFAULT_PART_BYTES, ge=MIN_PART_BYTES, le=512 * 1024 * 1024)

    @model_validator(mode="after")
    def _s3_complete(self) -> Self:
        if self.storage_backend == "s3":
            if not self.s3_bucket:
                raise ValueError("storage_backend s3 needs s3_bucket")
            if bool(self.s3_access_key_id.get_secret_value()) != bool(
                self.s3_secret_access_key.get_secret_value()
            ):
                raise ValueError("give both s3_access_key_id and s3_secret_access_key, or neither")
        return self


def object_store(settings: ObjectStorageSettings, *, directory: Path, namespace: str) -> ObjectStore:
    """The store for one kind of file: ``directory`` when local, ``namespace`` in the bucket when S3."""
    if settings.storage_backend == "s3":
        return S3Store(settings, namespace=namespace)
    return LocalStore(directory)


# --- local files ----------------------------------------------------------------------


class LocalStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def location(self) -> str:
        return str(self.directory)

    def path(self, key: str) -> Path:
        return self.directory / key

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int, expect_sha256: str | None = None
    ) -> Written:
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
        # A name of its own per attempt: two workers fetching the same document never share it.
        partial = self.directory / f".{key}.{uuid.uuid4().hex}.part"
        digest = hashlib.sha256()
        size = 0
        try:
            with open(partial, "wb") as out:  # noqa: ASYNC230 (writes go through to_thread below)
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise ObjectTooLarge(max_bytes)
                    digest.update(chunk)
                    await asyncio.to_thread(out.write, chunk)
                await asyncio.to_thread(_sync, out)
            written = Written(size, digest.hexdigest())
            _check(written, expect_sha256)
            await asyncio.to_thread(os.replace, partial, self.path(key))
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return written

    async def open(self, key: str) -> ObjectStream:
        try:
            handle = await asyncio.to_thread(open, self.path(key), "rb")
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise ObjectMissing(key) from exc
        return _LocalStream(handle, os.fstat(handle.fileno()).st_size)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path(key).unlink, missing_ok=True)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)

    async def close(self) -> None:
        return None


class _LocalStream:
    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle = handle
        self.size = size

    async def chunks(self) -> AsyncIterator[bytes]:
        while chunk := await asyncio.to_thread(self._handle.read, CHUNK):
            yield chunk

    async def aclose(self) -> None:
        await asyncio.to_thread(self._handle.close)


def _sync(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())


def _check(written: Written, expect_sha256: str | None) -> None:
    if expect_sha256 is not None and written.sha256 != expect_sha256:
        raise ContentMismatch(f"SHA-256 {written.sha256} does not match the expected {expect_sha256}")


# --- S3 -------------------------------------------------------------------------------


class S3Store:
    """One namespace in an S3 bucket, through one long-lived aiobotocore client (made on
    first use, closed by :meth:`close`, which each service's ``Container.close`` calls)."""

    def __init__(self, settings: ObjectStorageSettings, *, namespace: str) -> None:
        self.bucket = settings.s3_bucket
        self.part_bytes = settings.s3_part_bytes
        prefix = settings.s3_prefix.strip("/")
        self.prefix = "/".join(p for p in (prefix, namespace.strip("/")) if p) + "/"
        self._settings = settings
        self._client: Any = None
        self._exits = AsyncExitStack()
        self._lock = asyncio.Lock()

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def object_key(self, key: str) -> str:
        return self.prefix + key

    async def client(self) -> Any:
        async with self._lock:
            if self._client is None:
                s = self._settings
                credentials: dict[str, str] = {}
                if s.s3_access_key_id.get_secret_value():
                    credentials = {
                        "aws_access_key_id": s.s3_access_key_id.get_secret_value(),
                        "aws_secret_access_key": s.s3_secret_access_key.get_secret_value(),
                    }
                config = AioConfig(
                    s3={"addressing_style": "path" if s.s3_path_style else "virtual"},
                    retries={"max_attempts": 3, "mode": "standard"},
                    # Checksums only where S3 asks for them: several S3-compatible servers
                    # refuse the trailing CRC checksums newer botocore sends by default.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                self._client = await self._exits.enter_async_context(
                    get_session().create_client(
                        "s3",
                        region_name=s.s3_region,
                        endpoint_url=s.s3_endpoint_url or None,
                        config=config,
                        **credentials,
                    )
                )
            return self._client

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int, expect_sha256: str | None = None
    ) -> Written:
        client = await self.client()
        name = self.object_key(key)
        digest = hashlib.sha256()
        size = 0
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise ObjectTooLarge(max_bytes)
                digest.update(chunk)
                buffer += chunk
                # At most one part is ever held in memory: a full one goes out at once.
                while len(buffer) >= self.part_bytes:
                    if upload_id is None:
                        # Each part carries its SHA-256, which S3 checks (and needs declared here).
                        started = await client.create_multipart_upload(
                            Bucket=self.bucket, Key=name, ChecksumAlgorithm="SHA256"
                        )
                        upload_id = str(started["UploadId"])
                    part = bytes(buffer[: self.part_bytes])
                    del buffer[: self.part_bytes]
                    parts.append(await self._part(client, name, upload_id, len(parts) + 1, part))
            written = Written(size, digest.hexdigest())
            _check(written, expect_sha256)
            if upload_id is None:
                # S3 checks the body against the hash we computed: nothing changes on the way.
                await client.put_object(
                    Bucket=self.bucket,
                    Key=name,
                    Body=bytes(buffer),
                    ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
                )
            else:
                if buffer:
                    parts.append(await self._part(client, name, upload_id, len(parts) + 1, bytes(buffer)))
                await client.complete_multipart_upload(
                    Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
                upload_id = None
        except BaseException:
            if upload_id is not None:
                await _abort(client, self.bucket, name, upload_id)
            raise
        return written

    async def _part(self, client: Any, name: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        checksum = base64.b64encode(hashlib.sha256(body).digest()).decode()
        answer = await client.upload_part(
            Bucket=self.bucket,
            Key=name,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
            ChecksumSHA256=checksum,
        )
        return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum}

    async def open(self, key: str) -> ObjectStream:
        client = await self.client()
        try:
            answer = await client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _not_found(exc):
                raise ObjectMissing(key) from exc
            raise
        return _S3Stream(answer["Body"], int(answer["ContentLength"]))

    async def delete(self, key: str) -> None:
        client = await self.client()
        await client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    async def exists(self, key: str) -> bool:
        client = await self.client()
        try:
            await client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _not_found(exc):
                return False
            raise
        return True

    async def close(self) -> None:
        async with self._lock:
            self._client = None
            await self._exits.aclose()


class _S3Stream:
    def __init__(self, body: Any, size: int) -> None:
        self._body = body
        self.size = size

    async def chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self._body.read(CHUNK):
            yield bytes(chunk)

    async def aclose(self) -> None:
        self._body.close()


async def _abort(client: Any, bucket: str, name: str, upload_id: str) -> None:
    try:
        await client.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=upload_id)
    except Exception as exc:
        # The bucket's lifecycle rule for incomplete multipart uploads clears what is left
        # (deploy/README.md); the first error is the one the caller needs to see.
        log.warning("storage.abort_failed", key=name, error=f"{type(exc).__name__}: {exc}"[:300])


def _not_found(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}


# --- downloads ------------------------------------------------------------------------


async def download_response(
    store: ObjectStore,
    key: str,
    *,
    size: int,
    sha256: str,
    media_type: str,
    filename: str,
    headers: Mapping[str, str],
    what: str,
    before_answer: Callable[[], Awaitable[None]] | None = None,
) -> Response:
    """The stored file as an attachment download, checked against what was recorded.

    A file of up to one chunk is read and checked before anything is sent: a damaged one
    answers a ``stored-file-damaged`` problem (500). A larger one is streamed, the last
    chunk held back until the whole hash is checked: when it does not match, the
    transfer is cut short of its Content-Length, so browsers and clients see a failed
    download rather than a complete-looking wrong file. A size that is not the recorded
    one is refused before anything is sent. Each case is logged as an error.

    ``before_answer`` runs once the file is found and its size checked, before the answer
    starts (a read receipt): if it fails, the stream is closed and nothing is sent.
    """
    try:
        stream = await store.open(key)
    except ObjectMissing as exc:
        # Recorded but gone (a lost volume, a deleted object): say so, never serve something else.
        raise NotFound(f"the content of {what} is missing from storage") from exc
    all_headers = {
        **headers,
        "Content-Disposition": content_disposition(filename),
        "Content-Length": str(size),
    }
    digest = hashlib.sha256()
    chunks = stream.chunks()
    try:
        if stream.size != size:
            _damaged(store, key, what, f"{stream.size} bytes stored, {size} recorded")
        first = await anext(chunks, b"")
        digest.update(first)
        if len(first) >= size:
            if digest.hexdigest() != sha256:
                _damaged(store, key, what, "SHA-256 does not match the recorded one")
            await stream.aclose()
            if before_answer is not None:
                await before_answer()
            return Response(first, media_type=media_type, headers=all_headers)
        if before_answer is not None:
            await before_answer()
    except BaseException:
        await stream.aclose()
        raise

    async def body() -> AsyncIterator[bytes]:
        held = first
        try:
            async for chunk in chunks:
                digest.update(chunk)
                yield held
                held = chunk
            if digest.hexdigest() != sha256:
                log.error(
                    "storage.damaged",
                    what=what,
                    location=store.location,
                    key=key,
                    reason="SHA-256 does not match the recorded one; download cut short",
                )
                raise ContentMismatch(f"the stored {what} does not match its SHA-256")
            yield held
        finally:
            await stream.aclose()

    return StreamingResponse(body(), media_type=media_type, headers=all_headers)


def _damaged(store: ObjectStore, key: str, what: str, reason: str) -> None:
    log.error("storage.damaged", what=what, location=store.location, key=key, reason=reason)
    raise StoredFileDamaged(
        f"the stored content of {what} is damaged and is not served; the operators have been told"
    )


def says_damaged(status_code: int, body: bytes) -> bool:
    """Whether another service's answer is its ``stored-file-damaged`` problem: a fetcher
    rejects that copy (an operator re-queues it once the sender's copy is repaired) where
    any other 5xx is retried."""
    if status_code != StoredFileDamaged.status:
        return False
    try:
        problem = json.loads(body)
    except ValueError:
        return False
    return isinstance(problem, dict) and problem.get("type") == PROBLEM_BASE + StoredFileDamaged.slug


def content_disposition(filename: str) -> str:
    """Always an attachment (never rendered in our origin), as Starlette's FileResponse writes it."""
    quoted = quote(filename)
    if quoted != filename:
        return f"attachment; filename*=utf-8''{quoted}"
    return f'attachment; filename="{filename}"'


async def chunks_of(read: Any, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
    """``await read(n)`` until it returns nothing (an UploadFile's ``read``)."""
    while chunk := await read(chunk_size):
        yield chunk
