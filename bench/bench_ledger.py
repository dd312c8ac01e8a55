"""The ledger's journal: append rate (worker, and the append itself) and proof time at 1,000,000 entries.

Part 1, appends. (a) Through the API: ``--api-requests`` progress updates are
POSTed by ``--clients`` concurrent finance users (each on its own keep-alive
connection, the next request when the answer arrived) to ``customer-ledger api``
run as deployed, in ``--api-workers`` processes of its own (uvicorn), verifying
the users' tokens against a JWKS this process serves. Each request is one access
check, one change entry appended and projected onto ``project_progress`` and
``change_records``; concurrent requests share transactions (group commit). The
worker's checkpoint batcher runs alongside, in this process with the load
generator (a lean raw HTTP client). Also printed: the api processes' CPU per
request. The same again through ``POST /bulk`` (imports): ``--bulk-appends``
progress records, ``--bulk-size`` per request, each its own access check result,
journal entry and change record. (b) The worker: ``--events`` login events are written to
``casebridge.identity.v1`` and the ledger's consumer applies them from the start
(each becomes a journal entry and a login record, with inbox rows and
checkpoints per batch by the worker's batcher running alongside); timed from
the first applied entry (joining the consumer group is start-up). (c) The append
itself: the same number of login-sized entries appended through
``journal.append`` in transactions of ``--batch`` entries (what one consumer run
does). Baseline for both, in the same database and run: plain inserts of the same
entry rows (no Merkle nodes, no head lock). Goal: 2,000 appends/s.

Part 2, proofs. A journal of ``--entries`` entries is built (leaves and every
perfect subtree computed in memory, bulk-inserted), then inclusion and
consistency proofs are taken through the service, as the API does, for trees of
1,000 / 10,000 / 100,000 / 1,000,000 entries. Baseline: fetching one entry by
primary key. Goal: under 5 ms at 1,000,000, growing with log n.

    .venv/bin/python bench/bench_ledger.py --database sqlite
    .venv/bin/python bench/bench_ledger.py --database postgres
    .venv/bin/python bench/bench_ledger.py --database postgres --api-workers 2 --clients 32
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
import uuid
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common as c
from sqlalchemy import delete, insert, text, update

from casebridge_shared.events import IDENTITY_TOPIC
from casebridge_shared.kafka import guarded_producer
from casebridge_shared.logs import configure_logging
from casebridge_shared.testing import create_topics

GOAL_APPENDS = 2000.0
GOAL_PROOF_MS = 5.0


def login_entry(i: int) -> dict[str, Any]:
    return {
        "type": "login",
        "event_id": str(uuid.uuid4()),
        "outcome": "success",
        "user_id": str(uuid.uuid4()),
        "email": f"user{i}@example.org",
        "reason": None,
        "client_ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (bench)",
        "at": datetime.now(UTC).isoformat(),
    }


def login_event(i: int) -> bytes:
    user = str(uuid.uuid4())
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/casebridge/order-intake",
            "type": "casebridge.identity.login-succeeded.v1",
            "subject": user,
            "time": datetime.now(UTC).isoformat(),
            "datacontenttype": "application/json",
            "partitionkey": user,
            "aggregateversion": 0,
            "data": {
                "user_id": user,
                "email": f"user{i}@example.org",
                "roles": ["customer"],
                "department": None,
                "client_ip": "203.0.113.7",
                "user_agent": "Mozilla/5.0 (bench)",
                "at": datetime.now(UTC).isoformat(),
            },
        }
    ).encode()


async def reset(container: Any) -> None:
    from customer_ledger.journal.models import JournalCheckpoint, JournalEntry, JournalHead, JournalNode
    from customer_ledger.records import VIEWS

    async with container.db.write_session() as s:
        for table in (JournalEntry, JournalNode, JournalCheckpoint, *VIEWS):
            await s.execute(delete(table))
        await s.execute(update(JournalHead).values(size=0))
        await s.commit()


async def plain_inserts(container: Any, count: int, batch: int) -> float:
    """Baseline: the same entry rows inserted with nothing else."""
    from customer_ledger.journal import merkle, service
    from customer_ledger.journal.models import JournalEntry

    began = time.perf_counter()
    for start in range(0, count, batch):
        rows = []
        for i in range(start, min(count, start + batch)):
            body = service.canonical(login_entry(i))
            rows.append(
                {
                    "index": 10_000_000 + i,
                    "kind": "login",
                    "body": body.decode(),
                    "leaf_hash": merkle.leaf_hash(body),
                    "appended_at": datetime.now(UTC),
                }
            )
        async with container.db.write_session() as s:
            await s.execute(insert(JournalEntry), rows)
            await s.commit()
    return count / (time.perf_counter() - began)


async def journal_appends(container: Any, count: int, batch: int) -> float:
    from customer_ledger.journal import service

    began = time.perf_counter()
    for start in range(0, count, batch):
        async with container.db.write_session() as s:
            batch_entries = [("login", login_entry(i)) for i in range(start, min(count, start + batch))]
            await service.append(s, batch_entries)
            await s.commit()
    return count / (time.perf_counter() - began)


async def api_rate(
    container: Any,
    url: str,
    bootstrap: str,
    workdir: Path,
    count: int,
    clients: int,
    workers: int,
    per_request: int = 1,
) -> tuple[float, float]:
    """Progress appends per second through ``customer-ledger api`` (``workers`` processes); CPU per append.

    ``per_request`` 1: each a ``POST /customers/{id}/progress``; more: that many
    progress operations per ``POST /bulk``.

    The api runs as deployed (``customer-ledger api``, uvicorn) in its own processes,
    verifying tokens against a JWKS this process serves; the load generator and the
    checkpoint batcher (the worker's part) run here.
    """
    from fastapi import FastAPI

    from casebridge_shared.broker import free_port
    from casebridge_shared.testing import ApiServer, TokenMinter
    from customer_ledger.journal import service

    minter = TokenMinter()
    keys = FastAPI()
    keys.get("/jwks.json")(minter.jwks)
    jwks = ApiServer(lambda: keys, free_port())
    await jwks.start()
    port = free_port()
    env = c.service_env(
        url,
        bootstrap,
        workdir,
        CASEBRIDGE_CUSTOMER_LEDGER_DATABASE_URL=url,
        CASEBRIDGE_JWKS_URL=f"{jwks.url}/jwks.json",
        CASEBRIDGE_TOKEN_ISSUER=minter.issuer,
        CASEBRIDGE_TOKEN_AUDIENCE=minter.audience,
    )
    api = c.Process(
        "customer-ledger-api",
        [str(c.VENV_BIN / "customer-ledger"), "api", "--port", str(port), "--workers", str(workers)],
        env,
        workdir,
    )
    api.start()
    stop = asyncio.Event()
    batcher = asyncio.create_task(container.checkpoint_batcher().run(stop))
    connections: list[c.RawHttpClient] = []
    try:
        await c.wait_http_ready(f"http://127.0.0.1:{port}", api)
        users = [
            {"Authorization": f"Bearer {minter.token(f'finance-{i}', 'department', department='finance')}"}
            for i in range(clients)
        ]
        connections = [c.RawHttpClient("127.0.0.1", port) for _ in range(clients)]
        customers = []
        for user, conn in zip(users, connections, strict=True):
            status, body = await conn.post(
                "/customers", json.dumps({"full_name": "Bench Customer"}).encode(), user
            )
            assert status == 201, body
            customers.append(json.loads(body)["id"])
        async with container.db.session() as s:
            before = await service.tree_size(s)
        per_client = count // clients // per_request * per_request

        async def client(i: int) -> None:
            if per_request == 1:
                path = f"/customers/{customers[i]}/progress"
                for n in range(per_client):
                    payload = json.dumps(
                        {"project": "bench", "stage": f"step {n}", "note": "progress update"}
                    )
                    status, body = await connections[i].post(path, payload.encode(), users[i])
                    assert status == 201, body
                return
            for first in range(0, per_client, per_request):
                operations = [
                    {
                        "kind": "progress",
                        "customer_id": customers[i],
                        "record": {"project": "bench", "stage": f"step {n}", "note": "progress update"},
                    }
                    for n in range(first, first + per_request)
                ]
                payload = json.dumps({"operations": operations})
                status, body = await connections[i].post("/bulk", payload.encode(), users[i])
                assert status == 201, body

        processes = {api.pid} | c.descendants(api.pid)
        cpu_before = c.jiffies(processes)
        began = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - began
        cpu = (c.jiffies(processes) - cpu_before) / os.sysconf("SC_CLK_TCK")
        async with container.db.session() as s:
            appended = await service.tree_size(s) - before
        assert appended == per_client * clients, appended
        return appended / elapsed, cpu / appended
    finally:
        stop.set()
        await batcher
        for conn in connections:
            await conn.aclose()
        api.stop()
        await jwks.stop()


async def worker_rate(container: Any, bootstrap: str, count: int) -> float:
    from customer_ledger.journal import service

    await create_topics(bootstrap, IDENTITY_TOPIC)
    producer = guarded_producer(bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for i in range(count):
            await producer.send(IDENTITY_TOPIC, login_event(i), key=str(i).encode())
        await producer.flush()
    finally:
        await producer.stop()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(container.consumer().run(stop)),
        asyncio.create_task(container.checkpoint_batcher().run(stop)),
    ]
    # The clock starts at the first applied entry: joining the consumer group (seconds
    # on the embedded broker) is start-up, not append rate. Sampled every 10 ms.
    began: float | None = None
    first = 0
    try:
        while True:
            async with container.db.session() as s:
                size = await service.tree_size(s)
            if began is None and size > 0:
                began, first = time.perf_counter(), size
            if size >= count:
                break
            await asyncio.sleep(0.01)
        assert began is not None
        return (count - first) / (time.perf_counter() - began)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def build_log(container: Any, size: int) -> None:
    """``size`` entries with all their perfect subtrees, written in bulk (not timed)."""
    from customer_ledger.journal import merkle, service
    from customer_ledger.journal.models import JournalEntry, JournalHead, JournalNode

    await reset(container)
    tree = merkle.MemoryTree()
    chunk = 20_000
    for start in range(0, size, chunk):
        rows = []
        for i in range(start, min(size, start + chunk)):
            body = service.canonical({"type": "change", "n": i, "field": "phone", "after": f"+49 30 {i:07d}"})
            leaf = merkle.leaf_hash(body)
            tree.append_leaf_hash(leaf)
            rows.append(
                {
                    "index": i,
                    "kind": "change",
                    "body": body.decode(),
                    "leaf_hash": leaf,
                    "appended_at": datetime.now(UTC),
                }
            )
        async with container.db.write_session() as s:
            await s.execute(insert(JournalEntry), rows)
            await s.commit()
    nodes = [
        {"level": level, "index": index, "hash": digest}
        for level, hashes in enumerate(tree.levels)
        for index, digest in enumerate(hashes)
    ]
    for start in range(0, len(nodes), chunk * 2):
        async with container.db.write_session() as s:
            await s.execute(insert(JournalNode), nodes[start : start + chunk * 2])
            await s.commit()
    async with container.db.write_session() as s:
        await s.execute(update(JournalHead).values(size=size))
        await s.commit()
    # A steady state, as after autovacuum: otherwise PostgreSQL's autovacuum and analyze
    # of the 3,000,000 new rows run during the timed proofs.
    async with container.db.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in ("journal_nodes", "journal_entries", "journal_head"):
            vacuum = "VACUUM ANALYZE" if container.db.dialect == "postgresql" else "ANALYZE"
            await conn.execute(text(f"{vacuum} {table}"))


async def time_proofs(container: Any, size: int, samples: int) -> dict[str, float]:
    from customer_ledger.journal import service
    from customer_ledger.journal.models import JournalEntry

    rng = random.Random(size)
    inclusion, consistency, lookup = [], [], []
    for _ in range(samples):
        index = rng.randrange(size)
        first = rng.randrange(1, size + 1)
        async with container.db.session() as s:
            t0 = time.perf_counter()
            await s.get(JournalEntry, index)
            t1 = time.perf_counter()
        async with container.db.session() as s:
            t2 = time.perf_counter()
            await service.inclusion_proof(s, index, size)
            t3 = time.perf_counter()
        async with container.db.session() as s:
            t4 = time.perf_counter()
            await service.consistency_proof(s, first, size)
            t5 = time.perf_counter()
        lookup.append(t1 - t0)
        inclusion.append(t3 - t2)
        consistency.append(t5 - t4)
    return {
        "lookup_p50": c.percentile(lookup, 50),
        "inclusion_p50": c.percentile(inclusion, 50),
        "inclusion_p99": c.percentile(inclusion, 99),
        "consistency_p50": c.percentile(consistency, 50),
        "consistency_p99": c.percentile(consistency, 99),
    }


async def run(args: Any, url: str, bootstrap: str, workdir: Path) -> int:
    from customer_ledger.bootstrap import bootstrap as ledger_bootstrap
    from customer_ledger.settings import Settings

    settings = Settings(
        environment="test",
        database_url=url,
        var_dir=workdir,
        kafka_bootstrap_servers=bootstrap,
        log_json=True,
        log_level="WARNING",
    )
    container = ledger_bootstrap(settings)
    ok = True
    try:
        print(f"appends ({args.events:,} entries; transactions of {args.batch})")
        plain = await plain_inserts(container, args.events, args.batch)
        await reset(container)
        api, api_cpu = await api_rate(
            container, url, bootstrap, workdir, args.api_requests, args.clients, args.api_workers
        )
        await reset(container)
        bulk, bulk_cpu = await api_rate(
            container,
            url,
            bootstrap,
            workdir,
            args.bulk_appends,
            args.clients,
            args.api_workers,
            per_request=args.bulk_size,
        )
        await reset(container)
        appended = await journal_appends(container, args.events, args.batch)
        await reset(container)
        worker = await worker_rate(container, bootstrap, args.events)
        print(f"  plain inserts of the same rows: {plain:,.0f}/s")
        print(
            f"  journal.append (Merkle nodes, head lock): {appended:,.0f}/s = {appended / plain:.2f} of plain"
        )
        print(
            f"  through the API ({args.clients} finance users POSTing progress, "
            f"{args.api_requests:,} requests, {args.api_workers} api process(es)): "
            f"{api:,.0f}/s = {api / plain:.2f} of plain; api CPU {api_cpu * 1000:.2f} ms per POST"
        )
        print(
            f"  through the API in bulk ({args.clients} finance users POSTing /bulk with {args.bulk_size} "
            f"progress operations each, {args.bulk_appends:,} appends, {args.api_workers} api process(es)): "
            f"{bulk:,.0f}/s = {bulk / plain:.2f} of plain; api CPU {bulk_cpu * 1000:.2f} ms per append"
        )
        print(
            f"  through the worker (login events -> entries + login records + inbox, checkpoints per batch): "
            f"{worker:,.0f}/s = {worker / plain:.2f} of plain"
        )
        for where, rate in (
            ("the API, one per POST", api),
            (f"the API, /bulk of {args.bulk_size}", bulk),
            ("the worker", worker),
        ):
            verdict = "met" if rate >= GOAL_APPENDS else "NOT met"
            print(f"  goal {GOAL_APPENDS:,.0f} appends/s through {where}: {verdict}")
            ok = ok and rate >= GOAL_APPENDS
        print(f"proofs (log of {args.entries:,} entries, {args.samples} samples per size)")
        began = time.perf_counter()
        await build_log(container, args.entries)
        print(f"  built in {time.perf_counter() - began:.0f} s")
        sizes = [s for s in (1_000, 10_000, 100_000, 1_000_000) if s <= args.entries]
        for size in sizes:
            r = await time_proofs(container, size, args.samples)
            ratio = r["inclusion_p50"] / r["lookup_p50"]
            print(
                f"  tree of {size:>9,}: inclusion p50 {c.ms(r['inclusion_p50'])} "
                f"p99 {c.ms(r['inclusion_p99'])}; "
                f"consistency p50 {c.ms(r['consistency_p50'])} p99 {c.ms(r['consistency_p99'])}; "
                f"one-row lookup p50 {c.ms(r['lookup_p50'])} (inclusion / lookup {ratio:.1f})"
            )
            if size == sizes[-1]:
                met = max(r["inclusion_p99"], r["consistency_p99"]) * 1000 < GOAL_PROOF_MS
                print(f"  goal p99 under {GOAL_PROOF_MS:.0f} ms at {size:,}: {'met' if met else 'NOT met'}")
    finally:
        await container.close()
    return 0 if ok else 1


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--api-requests", type=int, default=4_000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--bulk-size", type=int, default=100, help="progress operations per POST /bulk")
    p.add_argument("--bulk-appends", type=int, default=32_000, help="appends through POST /bulk")
    p.add_argument(
        "--api-workers", type=int, default=1, help="customer-ledger api processes (uvicorn --workers)"
    )
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--samples", type=int, default=200)
    args = p.parse_args()
    configure_logging("bench", level="WARNING", json=False)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    print(f"machine: {c.machine()}")
    c.report_background_load()
    with (
        c.workdir() as workdir,
        c.broker() as broker,
        c.bench_database(args.database, workdir, args.postgres_url, service="customer-ledger") as url,
    ):
        code = c.run(run(args, url, broker.bootstrap_servers, workdir))
    print(f"(date {datetime.now(UTC):%Y-%m-%d}, database {args.database})")
    return code


if __name__ == "__main__":
    sys.exit(main())
