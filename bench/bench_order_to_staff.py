"""POST /orders -> the new case on connected staff apps' live streams (SSE), end to end.

Everything runs as it does under ``make up``, each part its own process on the
embedded broker: order-intake api + worker, case-handling worker, notifier
worker + api. This process is the customers (``POST /orders`` over HTTP, open
loop at each offered rate, a pool of keep-alive connections) and the staff
(``--streams`` SSE connections to the notifier api with staff tokens). Staff
are in teams of ``--team-size``; each team has its own product category (a
routing rule), so each order alerts one team. Latency = an SSE event's arrival
- the order's slot in the open-loop schedule (when the customer placed it; a
POST that first waits for a free connection counts that wait), for every
(order, staff member) pair, both ``time.perf_counter()`` of this process.

Where the time goes: this process also reads ``casebridge.orders.v1`` and
``casebridge.cases.v1`` and notes when each order's event and its case-opened
event arrive: POST -> order event (order-intake api + relay), -> case-opened
event (case-handling consumer + relay), -> SSE (notifier consumer, api poll,
stream).

Baseline, measured in the same run at each rate: a bare broker hop (aiokafka
producer -> consumer in this process, acks=all). The chain has three such hops.

    .venv/bin/python bench/bench_order_to_staff.py --database sqlite
    .venv/bin/python bench/bench_order_to_staff.py --database postgres
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import _common as c
from aiokafka import TopicPartition

from casebridge_shared.db import utcnow
from casebridge_shared.events import CASES_TOPIC, ORDERS_TOPIC
from casebridge_shared.kafka import guarded_consumer, guarded_producer
from casebridge_shared.logs import configure_logging
from casebridge_shared.testing import create_topics

GOAL_P99 = 0.250  # seconds, at 200 orders/s


@dataclass
class Phase:
    rate: float
    seconds: float
    # order id -> when the customer placed it: the POST's slot in the open-loop schedule,
    # so a POST that first waits for a free connection counts that wait (no coordinated
    # omission)
    sent: dict[str, float] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)  # order id -> its POST's round trip
    waited: list[float] = field(default_factory=list)  # per POST: waiting for a free connection
    team: dict[str, int] = field(default_factory=dict)
    orders_topic: dict[str, float] = field(default_factory=dict)
    cases_topic: dict[str, float] = field(default_factory=dict)
    seen: dict[tuple[str, str], float] = field(default_factory=dict)  # (order, staff) -> SSE arrival
    # Wall-clock split of the notifier's part: event on the topic -> notification written
    # (its created_at) -> SSE arrival, per order's first alert.
    written: dict[str, float] = field(default_factory=dict)
    cases_wall: dict[str, float] = field(default_factory=dict)
    arrived_wall: dict[str, float] = field(default_factory=dict)
    failures: int = 0
    foreign: float = 0.0


@dataclass
class World:
    phases: list[Phase] = field(default_factory=list)
    pending: dict[str, Phase] = field(default_factory=dict)  # idempotency key -> phase, until the id is known
    # Alerts that arrived before this process had read their order's 201 (it can lag
    # behind its own SSE readers when the machine is full): order id -> arrivals.
    early: dict[str, list[tuple[str, float, float, dict[str, Any]]]] = field(default_factory=dict)

    def record(self, phase: Phase, staff_id: str, now: float, wall: float, item: dict[str, Any]) -> None:
        order_id = item["order_id"]
        phase.seen.setdefault((order_id, staff_id), now)
        if order_id not in phase.arrived_wall:
            phase.arrived_wall[order_id] = wall
            phase.written[order_id] = datetime.fromisoformat(item["created_at"]).timestamp()

    def order_known(self, phase: Phase, order_id: str) -> None:
        for staff_id, now, wall, item in self.early.pop(order_id, []):
            self.record(phase, staff_id, now, wall, item)

    def phase_of(self, order_id: str) -> Phase | None:
        for phase in self.phases:
            if order_id in phase.sent:
                return phase
        return None


# --- staff: SSE clients on raw sockets (cheap to parse, so the numbers are not the client's) --------


async def staff_stream(port: int, token: str, staff_id: str, world: World, ready: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            "GET /notifications/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"stream refused: {head[:200]!r}")
    ready.set()
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            # chunked transfer: size lines and SSE lines interleave; only data lines matter
            if line.startswith(b"data: "):
                now, wall = time.perf_counter(), time.time()
                item = json.loads(line[6:])
                order_id = item["order_id"]
                phase = world.phase_of(order_id)
                if phase is not None:
                    world.record(phase, staff_id, now, wall, item)
                else:
                    world.early.setdefault(order_id, []).append((staff_id, now, wall, item))
    finally:
        writer.close()


# --- the customers ---------------------------------------------------------------------------------------


async def run_phase(
    world: World, phase: Phase, port: int, seed: c.Seed, products: list[str], connections: int
) -> None:
    pool: asyncio.Queue[c.RawHttpClient] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(c.RawHttpClient("127.0.0.1", port))
    count = round(phase.rate * phase.seconds)

    async def place(i: int, due: float) -> None:
        client = await pool.get()
        posted = time.perf_counter()
        phase.waited.append(posted - due)
        team = i % len(products)
        body = json.dumps({"product_id": products[team], "description": f"bench order {i}"}).encode()
        headers = {"Authorization": f"Bearer {seed.tokens[i % len(seed.tokens)]}"}
        try:
            status, payload = await client.post("/orders", body, headers)
            if status != 201:
                phase.failures += 1
                print(f"  POST /orders: {status} {payload[:200]!r}")
                return
            order_id = json.loads(payload)["id"]
            phase.sent[order_id] = due
            phase.answered[order_id] = time.perf_counter() - posted
            phase.team[order_id] = team
            world.order_known(phase, order_id)
        except Exception as exc:
            phase.failures += 1
            print(f"  POST /orders failed: {type(exc).__name__}: {exc}")
            await client.aclose()
        finally:
            pool.put_nowait(client)

    monitor = c.LoadMonitor()
    start = time.perf_counter()
    tasks = []
    for i in range(count):
        due = start + i / phase.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(place(i, due)))
    await asyncio.gather(*tasks)
    phase.foreign = monitor.foreign()
    while not pool.empty():
        await pool.get_nowait().aclose()


async def watch_topics(bootstrap: str, world: World, stop: asyncio.Event) -> None:
    consumer = guarded_consumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(t, p) for t in (ORDERS_TOPIC, CASES_TOPIC) for p in range(6)])
        await consumer.seek_to_beginning()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=2000)
            now = time.perf_counter()
            for tp, messages in batches.items():
                for message in messages:
                    event = json.loads(message.value or b"{}")
                    if tp.topic == ORDERS_TOPIC:
                        order_id = (message.key or b"").decode()
                        phase = world.phase_of(order_id)
                        if phase is not None:
                            phase.orders_topic.setdefault(order_id, now)
                    elif event.get("type") == "casebridge.cases.case-opened.v1":
                        order_id = event["data"]["order_id"]
                        phase = world.phase_of(order_id)
                        if phase is not None:
                            phase.cases_topic.setdefault(order_id, now)
                            phase.cases_wall.setdefault(order_id, time.time())
    finally:
        await consumer.stop()


async def bare_hop(bootstrap: str, rate: float, seconds: float) -> list[float]:
    """Produce -> consume latency of one broker hop at ``rate`` messages/s (acks=all)."""
    topic = f"bench-hop-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, topic)
    producer = guarded_producer(bootstrap, acks="all", linger_ms=0)
    consumer = guarded_consumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=10
    )
    await producer.start()
    await producer.send_and_wait(topic, b"warm-up")
    await consumer.start()
    sent: dict[bytes, float] = {}
    got: dict[bytes, float] = {}
    count = round(rate * seconds)

    async def receive() -> None:
        while len(got) < count:
            batches = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for messages in batches.values():
                for m in messages:
                    if m.value in sent:
                        got.setdefault(m.value, now)

    receiver = asyncio.create_task(receive())
    start = time.perf_counter()
    try:
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            key = f"{i}".encode()
            sent[key] = time.perf_counter()
            await producer.send(topic, key)
        await asyncio.wait_for(receiver, timeout=60)
    finally:
        receiver.cancel()
        await producer.stop()
        await consumer.stop()
    return [got[k] - sent[k] for k in got]


# --- setup ---------------------------------------------------------------------------------------


def staff_token(container: Any, staff_id: str) -> str:
    s = container.settings
    now = utcnow()
    return str(
        container.keys.sign(
            {
                "iss": s.token_issuer,
                "aud": s.token_audience,
                "sub": staff_id,
                "iat": int(now.timestamp()),
                "nbf": int(now.timestamp()),
                "exp": int((now + timedelta(hours=2)).timestamp()),
                "roles": ["staff"],
            }
        )
    )


async def products_per_team(container: Any, teams: int) -> list[str]:
    from order_intake.catalog import service as catalog
    from order_intake.catalog.models import ProductCreate

    ids = []
    for t in range(teams):
        async with container.uow() as uow:
            product = await catalog.create_product(
                uow,
                ProductCreate(
                    title=f"Legal check {t}",
                    description="A lawyer checks your case and tells you where you stand.",
                    deliverables=["Written opinion"],
                    category=f"area-{t}",
                    price=Decimal("99.00"),
                    currency="EUR",
                ),
            )
        ids.append(product.id)
    return ids


async def route_teams(notifier_url: str, staff: list[str], team_size: int) -> int:
    from casebridge_shared.db import Database
    from notifier.routing.models import RoutingRule, Team, TeamMember

    db = Database(notifier_url)
    teams = len(staff) // team_size
    try:
        async with db.write_session() as session:
            for t in range(teams):
                session.add(Team(name=f"team-{t}"))
            await session.flush()
            for t in range(teams):
                for member in staff[t * team_size : (t + 1) * team_size]:
                    session.add(TeamMember(team=f"team-{t}", user_id=member))
                session.add(RoutingRule(product_category=f"area-{t}", team=f"team-{t}"))
            await session.commit()
    finally:
        await db.dispose()
    return teams


async def wait_seen(phase: Phase, per_order: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(phase.seen) < len(phase.sent) * per_order:
        await asyncio.sleep(0.05)


def _first(values: list[float]) -> str:
    return c.ms(c.percentile(values, 50))


async def end_to_end(
    args: Any, urls: dict[str, str], bootstrap: str, broker_pid: int, workdir: Path
) -> list[dict[str, Any]]:
    from order_intake.bootstrap import bootstrap as intake_bootstrap

    intake_port, notifier_port = c.api_port(), c.api_port()
    intake_url = f"http://127.0.0.1:{intake_port}"
    settings = c.settings_for(urls["intake"], bootstrap, workdir, token_issuer=intake_url)
    container = intake_bootstrap(settings)
    seed = await c.seed(container, customers=16)
    teams = args.streams // args.team_size
    products = await products_per_team(container, teams)
    staff = [str(uuid.uuid4()) for _ in range(teams * args.team_size)]
    tokens = {s: staff_token(container, s) for s in staff}
    await route_teams(urls["notifier"], staff, args.team_size)

    env = c.service_env(
        urls["intake"],
        bootstrap,
        workdir,
        CASEBRIDGE_TOKEN_ISSUER=intake_url,
        CASEBRIDGE_ORDER_INTAKE_PORT=str(intake_port),
        CASEBRIDGE_CASE_HANDLING_DATABASE_URL=urls["cases"],
        CASEBRIDGE_CASE_HANDLING_WORKER_METRICS_PORT="0",
        CASEBRIDGE_NOTIFIER_DATABASE_URL=urls["notifier"],
        CASEBRIDGE_NOTIFIER_PORT=str(notifier_port),
        CASEBRIDGE_NOTIFIER_WORKER_METRICS_PORT="0",
    )
    processes = {
        "intake api": c.Process("order-intake-api", [str(c.VENV_BIN / "order-intake"), "api"], env, workdir),
        "intake worker": c.Process(
            "order-intake-worker", [str(c.VENV_BIN / "order-intake"), "worker"], env, workdir
        ),
        "case worker": c.Process(
            "case-handling-worker", [str(c.VENV_BIN / "case-handling"), "worker"], env, workdir
        ),
        "notifier worker": c.Process(
            "notifier-worker", [str(c.VENV_BIN / "notifier"), "worker"], env, workdir
        ),
        "notifier api": c.Process("notifier-api", [str(c.VENV_BIN / "notifier"), "api"], env, workdir),
    }
    world = World()
    stop = asyncio.Event()
    watcher: asyncio.Task[None] | None = None
    streams: list[asyncio.Task[None]] = []
    results: list[dict[str, Any]] = []
    try:
        for p in processes.values():
            p.start()
        await c.wait_http_ready(intake_url, processes["intake api"])
        await c.wait_http_ready(f"http://127.0.0.1:{notifier_port}", processes["notifier api"])
        watcher = asyncio.create_task(watch_topics(bootstrap, world, stop))
        readies = []
        for s in staff:
            ready = asyncio.Event()
            readies.append(ready)
            streams.append(asyncio.create_task(staff_stream(notifier_port, tokens[s], s, world, ready)))
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), timeout=60)
        warmup = Phase(rate=10, seconds=2)
        world.phases.append(warmup)
        await run_phase(world, warmup, intake_port, seed, products, args.connections)
        await wait_seen(warmup, args.team_size, 180)
        if len(warmup.seen) < len(warmup.sent) * args.team_size:
            raise RuntimeError(
                f"warm-up alerts did not arrive ({len(warmup.seen)}/{len(warmup.sent) * args.team_size}):\n"
                + processes["notifier worker"].log_tail()
            )
        for rate in args.rates:
            await asyncio.sleep(2)
            hop = await bare_hop(bootstrap, rate, min(args.seconds, 5))
            phase = Phase(rate=rate, seconds=args.seconds)
            world.phases.append(phase)
            clocks: dict[str, c.CpuClock | c.GroupCpuClock] = {
                n: c.CpuClock(p.pid) for n, p in processes.items()
            }
            # The rest of the stack, so the machine's two cores are accounted for.
            clocks["broker"] = c.GroupCpuClock(lambda: c.descendants(broker_pid))
            if args.database == "postgres":
                clocks["PostgreSQL"] = c.GroupCpuClock(c.postgres_pids)
            clocks["benchmark clients"] = c.CpuClock(os.getpid())
            began = time.perf_counter()
            await run_phase(world, phase, intake_port, seed, products, args.connections)
            await wait_seen(phase, args.team_size, 180)
            elapsed = time.perf_counter() - began
            lat = [t - phase.sent[o] for (o, _s), t in phase.seen.items()]
            first_seen: dict[str, float] = {}
            for (o, _s), t in phase.seen.items():
                first_seen[o] = min(t, first_seen.get(o, t))
            to_orders = [phase.orders_topic[o] - phase.sent[o] for o in phase.sent if o in phase.orders_topic]
            to_cases = [
                phase.cases_topic[o] - phase.orders_topic[o]
                for o in phase.sent
                if o in phase.cases_topic and o in phase.orders_topic
            ]
            to_sse = [first_seen[o] - phase.cases_topic[o] for o in first_seen if o in phase.cases_topic]
            consumed = [
                phase.written[o] - phase.cases_wall[o] for o in phase.written if o in phase.cases_wall
            ]
            streamed = [phase.arrived_wall[o] - phase.written[o] for o in phase.written]
            answered = list(phase.answered.values())
            row = {
                "seg_answer": (c.percentile(answered, 50), c.percentile(answered, 99)),
                "seg_wait": (c.percentile(phase.waited, 50), c.percentile(phase.waited, 99)),
                "seg_consumer": (c.percentile(consumed, 50), c.percentile(consumed, 99)),
                "seg_stream": (c.percentile(streamed, 50), c.percentile(streamed, 99)),
                "rate": rate,
                "orders": len(phase.sent),
                "alerts": len(lat),
                "missing": len(phase.sent) * args.team_size - len(lat),
                "failures": phase.failures,
                "p50": c.percentile(lat, 50),
                "p95": c.percentile(lat, 95),
                "p99": c.percentile(lat, 99),
                "max": max(lat) if lat else float("nan"),
                "hop_p50": c.percentile(hop, 50),
                "hop_p99": c.percentile(hop, 99),
                "seg_orders": (c.percentile(to_orders, 50), c.percentile(to_orders, 99)),
                "seg_cases": (c.percentile(to_cases, 50), c.percentile(to_cases, 99)),
                "seg_sse": (c.percentile(to_sse, 50), c.percentile(to_sse, 99)),
                "cpu": {n: clock.lap() / elapsed for n, clock in clocks.items()},
                "foreign": phase.foreign,
            }
            results.append(row)
            print(
                f"  {rate:.0f} orders/s offered: {row['orders']} orders, {row['alerts']} alerts on "
                f"{len(staff)} streams; p50 {c.ms(row['p50'])} p95 {c.ms(row['p95'])} p99 {c.ms(row['p99'])} "
                f"max {c.ms(row['max'])}; missing {row['missing']}, failed POSTs {row['failures']}"
            )
            print(
                "      where the time goes (p50 / p99): POST -> order event "
                f"{c.ms(row['seg_orders'][0])} / {c.ms(row['seg_orders'][1])} (of which waiting for a free "
                f"connection {c.ms(row['seg_wait'][0])} / {c.ms(row['seg_wait'][1])}, then the POST's answer "
                f"{c.ms(row['seg_answer'][0])} / {c.ms(row['seg_answer'][1])}); -> case-opened event "
                f"{c.ms(row['seg_cases'][0])} / {c.ms(row['seg_cases'][1])}; -> first SSE "
                f"{c.ms(row['seg_sse'][0])} / {c.ms(row['seg_sse'][1])} (notifier consumer: on the topic -> "
                f"notification written {c.ms(row['seg_consumer'][0])} / {c.ms(row['seg_consumer'][1])}; api: "
                f"written -> on the stream {c.ms(row['seg_stream'][0])} / {c.ms(row['seg_stream'][1])})"
            )
            print(
                f"      bare broker hop at this rate p50 {c.ms(row['hop_p50'])} p99 {c.ms(row['hop_p99'])}; "
                f"end-to-end p99 / (3 x hop p99) = {row['p99'] / (3 * row['hop_p99']):.1f}"
            )
            print(
                "      CPU: "
                + ", ".join(f"{n} {v:.0%}" for n, v in row["cpu"].items())
                + f"; other processes {row['foreign']:.0%}"
            )
            for p in processes.values():
                p.check_alive()
    finally:
        stop.set()
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
        if watcher is not None:
            await watcher
        for p in reversed(list(processes.values())):
            p.stop()
        await container.close()
    return results


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--rates", type=float, nargs="+", default=[50.0, 100.0, 200.0])
    p.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    p.add_argument("--streams", type=int, default=50, help="connected staff streams (one per staff member)")
    p.add_argument("--team-size", type=int, default=5, help="staff per team; each order alerts one team")
    p.add_argument("--connections", type=int, default=32, help="HTTP connections placing orders")
    args = p.parse_args()
    configure_logging("bench", level="WARNING", json=False)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    print(f"machine: {c.machine()}")
    c.report_background_load()
    with (
        c.workdir() as workdir,
        c.broker() as broker,
        c.bench_database(args.database, workdir, args.postgres_url) as intake,
        c.bench_database(args.database, workdir, args.postgres_url, service="case-handling") as cases,
        c.bench_database(args.database, workdir, args.postgres_url, service="notifier") as notifier,
    ):
        print(f"POST /orders -> SSE on {args.streams} staff streams (teams of {args.team_size})")
        urls = {"intake": intake, "cases": cases, "notifier": notifier}
        assert broker.process is not None
        rows = c.run(end_to_end(args, urls, broker.bootstrap_servers, broker.process.pid, workdir))
    print()
    print(f"summary ({args.database}, {datetime.now(UTC):%Y-%m-%d})")
    for row in rows:
        print(
            f"  {row['rate']:.0f}/s: p50 {c.ms(row['p50'])}  p95 {c.ms(row['p95'])}  p99 {c.ms(row['p99'])}  "
            f"missing {row['missing']}  (bare hop p99 {c.ms(row['hop_p99'])})"
        )
    last = next((r for r in rows if r["rate"] == 200), None)
    if last is not None:
        print(f"  goal p99 <= 250 ms at 200/s: {'met' if last['p99'] <= GOAL_P99 else 'NOT met'}")
    return 0 if all(r["missing"] == 0 and r["failures"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
