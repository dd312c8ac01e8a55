"""A local S3-compatible server for tests (moto, a development dependency only) and what
the tests ask of a store (casebridge_shared.storage).

A service's ``settings`` fixture merges ``storage_settings`` in: local files unless a test
says otherwise with ``@pytest.mark.parametrize("storage_backend", ["local", "s3"])``, so the
same story runs against both kinds of store.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from casebridge_shared.storage import LocalStore, ObjectStore, S3Store

STORAGE_BACKENDS = ("local", "s3")


class S3Server:
    """moto's S3 server in a thread of this process, on a free port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint_url = ""

    def start(self) -> None:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.stop()

    def new_bucket(self) -> str:
        """A bucket of its own per test: nothing one test stores is seen by another."""
        name = f"casebridge-test-{uuid.uuid4().hex[:12]}"
        # moto does not check signatures: a plain PUT creates the bucket.
        httpx.put(f"{self.endpoint_url}/{name}", timeout=10).raise_for_status()
        return name

    def settings(self, bucket: str) -> dict[str, Any]:
        return {
            "storage_backend": "s3",
            "s3_bucket": bucket,
            "s3_endpoint_url": self.endpoint_url,
            "s3_region": "us-east-1",
            "s3_access_key_id": "casebridge-test",
            "s3_secret_access_key": "casebridge-test-secret",
            "s3_path_style": True,
            "s3_prefix": "tests/",
        }


async def stored_keys(store: ObjectStore) -> list[str]:
    """Everything the store holds, half-written things included (a temporary file, an
    unfinished multipart upload): a test that says "nothing was kept" means none of them."""
    if isinstance(store, LocalStore):
        if not store.directory.exists():
            return []
        return sorted(p.name for p in store.directory.iterdir())
    assert isinstance(store, S3Store)
    client = await store.client()
    listed = await client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix)
    uploads = await client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    keys = [str(o["Key"]).removeprefix(store.prefix) for o in listed.get("Contents", [])]
    keys += [f"(unfinished) {u['Key']}" for u in uploads.get("Uploads", [])]
    return sorted(keys)


async def tamper(store: ObjectStore, key: str, content: bytes) -> None:
    """Replace a stored file's bytes behind the service's back (a damaged disk, an edited object)."""
    if isinstance(store, LocalStore):
        store.path(key).write_bytes(content)
        return
    assert isinstance(store, S3Store)
    client = await store.client()
    await client.put_object(Bucket=store.bucket, Key=store.object_key(key), Body=content)
