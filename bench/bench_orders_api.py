"""``POST /orders`` throughput and latency at fixed concurrency, against a bare baseline.

Both servers run as uvicorn subprocesses (one worker, uvloop + httptools, no access
log) on the same fresh database:

* ours: the real ``order-intake api``: JWT auth, middleware, order + progress +
  outbox rows in one transaction, the order read back with its progress;
* bare: ``POST /rows`` of ``bench/bare_app.py``, a FastAPI endpoint that inserts one
  row through the same ``casebridge_shared.db.Database`` (same driver, SQLite WAL,
  busy timeout and ``BEGIN IMMEDIATE`` writes, same PostgreSQL pool);
* noop: ``POST /noop`` of the same app, no database: the ceiling of uvicorn plus
  the load generator on this machine (if bare is close to it, bare is client-bound
  and the ratio flatters us).

The load generator is this process (on uvloop): ``--concurrency`` closed-loop
clients, each on its own keep-alive connection, sending the next request when the
previous answer arrived. ``--client httpx`` (default) gives each client an
``httpx.AsyncClient`` (``--httpx-pools 1``: one shared pool of ``--concurrency``
connections instead, which httpcore serves far slower, see docs/benchmarks.md);
``--client raw`` uses a minimal HTTP/1.1 client that costs far less CPU. Rounds
alternate noop/bare/ours; throughput is the median of the rounds, latency
percentiles pool every request of every round.

    .venv/bin/python bench/bench_orders_api.py --database sqlite
    .venv/bin/python bench/bench_orders_api.py --database postgres --client raw
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as c
import httpx

GOAL_RATIO = 0.5
DESCRIPTION = (
    "I am renting out my flat and the tenant wants to sublet one room. The lease says nothing "
    "about subletting. Please check what I can require and draft a short addendum."
)

Send = Callable[[int], Awaitable[int]]  # request number -> HTTP status


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    errors: Counter[str]
    server_cpu: float
    client_cpu: float
    machine_busy: float
    foreign: float  # share of the machine used by processes that are not part of the benchmark

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


@dataclass
class Target:
    name: str
    port: int
    path: str
    process: c.Process
    headers: Callable[[int], dict[str, str]]
    senders: list[Send] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)


def _open_clients(target: Target, body: bytes, args: Any) -> None:
    """One sender per concurrent client, each with its own keep-alive connection(s)."""
    if args.client == "raw":
        for _ in range(args.concurrency):
            raw = c.RawHttpClient("127.0.0.1", target.port)

            async def send_raw(i: int, raw: c.RawHttpClient = raw) -> int:
                status, _ = await raw.post(target.path, body, target.headers(i))
                return status

            target.senders.append(send_raw)
            target.closers.append(raw.aclose)
        return
    pools = max(1, min(args.httpx_pools, args.concurrency))
    per_pool = -(-args.concurrency // pools)
    limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
    clients = [
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{target.port}", limits=limits, timeout=60.0)
        for _ in range(pools)
    ]
    target.closers.extend(cl.aclose for cl in clients)
    for n in range(args.concurrency):
        client = clients[n % pools]

        async def send_httpx(i: int, client: httpx.AsyncClient = client) -> int:
            headers = {"Content-Type": "application/json"} | target.headers(i)
            return (await client.post(target.path, content=body, headers=headers)).status_code

        target.senders.append(send_httpx)


async def _drive(
    target: Target, total: int, args: Any, body: bytes
) -> tuple[list[float], Counter[str], float]:
    """``total`` requests from ``--concurrency`` clients on fresh connections (uvicorn drops
    keep-alive connections idle for 5 s, so connections do not outlive a round)."""
    counter = itertools.count()
    latencies: list[float] = []
    errors: Counter[str] = Counter()

    async def one_client(send: Send) -> None:
        while (i := next(counter)) < total:
            started = time.perf_counter()
            try:
                status = str(await send(i))
            except (httpx.HTTPError, OSError, asyncio.IncompleteReadError) as exc:
                status = type(exc).__name__
            latencies.append(time.perf_counter() - started)
            if status != "201":
                errors[status] += 1

    _open_clients(target, body, args)
    try:
        started = time.perf_counter()
        await asyncio.gather(*(one_client(s) for s in target.senders))
        return latencies, errors, time.perf_counter() - started
    finally:
        for close in target.closers:
            await close()
        target.senders.clear()
        target.closers.clear()


async def run_round(target: Target, requests: int, args: Any, body: bytes) -> Result:
    monitor = c.LoadMonitor()
    cpu0, client0, (busy0, total0) = target.process.cpu_seconds(), time.process_time(), c.cpu_busy_ticks()
    latencies, errors, seconds = await _drive(target, requests, args, body)
    busy1, total1 = c.cpu_busy_ticks()
    result = Result(
        name=target.name,
        requests=requests,
        seconds=seconds,
        latencies=latencies,
        errors=errors,
        server_cpu=(target.process.cpu_seconds() - cpu0) / seconds,
        client_cpu=(time.process_time() - client0) / seconds,
        machine_busy=(busy1 - busy0) / max(1, total1 - total0),
        foreign=monitor.foreign(),
    )
    target.results.append(result)
    return result


def _line(r: Result) -> str:
    errors = f" errors={dict(r.errors)}" if r.errors else ""
    return (
        f"  {r.name:<5} {r.rps:7.0f} req/s  p50 {c.ms(c.percentile(r.latencies, 50)):>9}  "
        f"p99 {c.ms(c.percentile(r.latencies, 99)):>9}  server CPU {r.server_cpu:4.0%}  "
        f"load-generator CPU {r.client_cpu:4.0%}  machine busy {r.machine_busy:4.0%}  "
        f"other processes {r.foreign:4.0%}{errors}"
    )


async def bench(args: Any, database_url: str, bootstrap_servers: str, workdir: Path) -> int:
    from order_intake.bootstrap import bootstrap

    settings = c.settings_for(database_url, bootstrap_servers, workdir)
    container = bootstrap(settings)
    try:
        seed = await c.seed(container, customers=args.customers)
    finally:
        await container.close()

    ours_port, bare_port = c.free_port(), c.free_port()
    env = c.service_env(database_url, bootstrap_servers, workdir, CASEBRIDGE_ORDER_INTAKE_PORT=str(ours_port))
    ours = c.Process("order-intake-api", [str(c.VENV_BIN / "order-intake"), "api"], env, workdir)
    bare_env = env | {"BENCH_DATABASE_URL": database_url, "BENCH_PORT": str(bare_port)}
    bare = c.Process("bare-app", [sys.executable, str(c.BENCH_DIR / "bare_app.py")], bare_env, workdir)
    body = json.dumps({"product_id": seed.product_id, "description": DESCRIPTION}).encode()
    auth = [{"Authorization": f"Bearer {t}"} for t in seed.tokens]
    targets = [
        Target("noop", bare_port, "/noop", bare, lambda i: {}),
        Target("bare", bare_port, "/rows", bare, lambda i: {}),
        Target("ours", ours_port, "/orders", ours, lambda i: auth[i % len(auth)]),
    ]
    try:
        for process in (bare, ours):
            process.start()
        for process, port in ((bare, bare_port), (ours, ours_port)):
            await c.wait_http_ready(f"http://127.0.0.1:{port}", process)
        for t in targets:
            _, errors, seconds = await _drive(t, args.warmup, args, body)
            print(f"  warm-up {t.name}: {args.warmup} requests in {seconds:.1f}s, errors={dict(errors)}")
            if errors:
                print(t.process.log_tail())
                return 1
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}/{args.rounds}")
            for t in targets:
                requests = args.requests * (2 if t.name == "noop" else 1)
                profiler = None
                if args.py_spy and round_no == 1 and t.name in ("ours", "bare"):
                    out = Path(args.profile_dir) / f"orders_api_{args.database}_{t.name}.txt"
                    profiler = c.Profiler(args.py_spy, t.process.pid, out)
                    profiler.start()
                result = await run_round(t, requests, args, body)
                if profiler is not None:
                    profile = profiler.stop()
                print(_line(result))
                if profiler is not None:
                    print(f"  py-spy profile of {t.name} (CPU samples, {profiler.out}):\n{profile}")
    finally:
        for process in (bare, ours):
            process.stop()

    summary: dict[str, tuple[float, float, float]] = {}
    client = args.client if args.client == "raw" else f"httpx, {args.httpx_pools or args.concurrency} pool(s)"
    print()
    print(
        f"POST /orders vs bare insert: {args.database}, concurrency {args.concurrency}, client {client}, "
        f"{args.rounds} rounds x {args.requests} requests"
    )
    for t in targets:
        rps = c.median([r.rps for r in t.results])
        latencies = [x for r in t.results for x in r.latencies]
        p50, p99 = c.percentile(latencies, 50), c.percentile(latencies, 99)
        summary[t.name] = (rps, p50, p99)
        errors = sum((r.errors for r in t.results), Counter())
        server_cpu = c.median([r.server_cpu for r in t.results])
        client_cpu = c.median([r.client_cpu for r in t.results])
        print(
            f"  {t.name:<5} {rps:7.0f} req/s  p50 {c.ms(p50):>9}  p99 {c.ms(p99):>9}  "
            f"server CPU {server_cpu:4.0%}  load-generator CPU {client_cpu:4.0%}  "
            f"server CPU per request {server_cpu / rps * 1000:.2f} ms  errors {sum(errors.values())}"
        )
    ratio = summary["ours"][0] / summary["bare"][0]
    verdict = "met" if ratio >= GOAL_RATIO else "NOT met"
    print(f"  ratio ours/bare throughput {ratio:.2f}  (goal >= {GOAL_RATIO}: {verdict})")
    print(
        f"  latency ours/bare: p50 x{summary['ours'][1] / summary['bare'][1]:.1f}, "
        f"p99 x{summary['ours'][2] / summary['bare'][2]:.1f}"
    )
    print(
        f"  bare/noop throughput {summary['bare'][0] / summary['noop'][0]:.2f} (near 1: bare is client-bound)"
    )
    foreign = max(r.foreign for t in targets for r in t.results)
    warning = "  WARNING: other load skewed these figures" if foreign > 0.1 else ""
    print(f"  other processes used at most {foreign:.0%} of the machine in any round{warning}")
    return 0


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--requests", type=int, default=3000, help="per round and target (noop: twice)")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--customers", type=int, default=8)
    p.add_argument("--client", choices=["httpx", "raw"], default="httpx")
    p.add_argument(
        "--httpx-pools",
        type=int,
        default=0,
        help="httpx.AsyncClient instances sharing the clients (default: one per client)",
    )
    p.add_argument("--py-spy", help="path to py-spy: profile the servers during round 1")
    p.add_argument("--profile-dir", default=tempfile.gettempdir(), help="where py-spy writes")
    args = p.parse_args()
    if args.httpx_pools <= 0:
        args.httpx_pools = args.concurrency
    print(f"machine: {c.machine()}")
    c.report_background_load()
    with (
        c.workdir() as workdir,
        c.broker() as broker,
        c.bench_database(args.database, workdir, args.postgres_url) as url,
    ):
        return int(c.run(bench(args, url, broker.bootstrap_servers, workdir), uvloop=True))


if __name__ == "__main__":
    sys.exit(main())
