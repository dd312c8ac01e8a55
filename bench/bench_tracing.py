"""What tracing costs a request: ``POST /orders`` latency with the OpenTelemetry SDK off, on
without an exporter (the default), and exporting over OTLP.

Three ``order-intake api`` subprocesses on the same fresh database, alike but for their
environment:

* disabled: ``OTEL_SDK_DISABLED=true``, the no-op API: the baseline, no span at all;
* off: the default, no ``OTEL_EXPORTER_OTLP_ENDPOINT``: the SDK makes the request's span (the
  trace id of its logs, events and answer) and drops it, no processor, nothing instrumented;
* on: ``OTEL_EXPORTER_OTLP_ENDPOINT`` at a collector stand-in in this process (answers every
  OTLP/HTTP export with 200): FastAPI, httpx, SQLAlchemy and aiokafka instrumented, spans
  batched and exported.

The load generator is this process: ``--concurrency`` closed-loop clients on the minimal
keep-alive client of _common.py (far less client CPU than httpx). Rounds alternate the three;
latency percentiles pool every request of every round. Printed: each server's p50/p99 and
mean, the server's CPU per request (steadier than latency on a busy machine), and the ratios
disabled/off (1.0 = the default costs nothing) and off/on.

    .venv/bin/python bench/bench_tracing.py
    .venv/bin/python bench/bench_tracing.py --database postgres
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import _common as c

DESCRIPTION = "Please review the non-compete clause of my employment contract."


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that takes every export and keeps only the count."""

    exports = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        type(self).exports += 1
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Variant:
    name: str
    env: dict[str, str]
    port: int
    process: c.Process | None = None
    latencies: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0  # the server's CPU over the measured rounds
    requests: int = 0


async def _drive(
    variant: Variant, total: int, concurrency: int, body: bytes, tokens: list[str]
) -> Counter[str]:
    counter = itertools.count()
    errors: Counter[str] = Counter()
    clients = [c.RawHttpClient("127.0.0.1", variant.port) for _ in range(concurrency)]

    async def one(client: c.RawHttpClient) -> None:
        while (i := next(counter)) < total:
            started = time.perf_counter()
            status, _ = await client.post(
                "/orders", body, {"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
            )
            variant.latencies.append(time.perf_counter() - started)
            if status != 201:
                errors[str(status)] += 1

    try:
        await asyncio.gather(*(one(cl) for cl in clients))
    finally:
        for cl in clients:
            await cl.aclose()
    return errors


async def bench(args: Any, database_url: str, bootstrap_servers: str, workdir: Path) -> int:
    from order_intake.bootstrap import bootstrap

    container = bootstrap(c.settings_for(database_url, bootstrap_servers, workdir))
    try:
        seed = await c.seed(container, customers=args.customers)
    finally:
        await container.close()

    collector = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    quiet = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "",
        "OTEL_SDK_DISABLED": "",
    }
    variants = [
        Variant("disabled", quiet | {"OTEL_SDK_DISABLED": "true"}, c.free_port()),
        Variant("off", quiet, c.free_port()),
        Variant("on", quiet | {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, c.free_port()),
    ]
    body = json.dumps({"product_id": seed.product_id, "description": DESCRIPTION}).encode()
    try:
        for v in variants:
            env = c.service_env(
                database_url, bootstrap_servers, workdir, CASEBRIDGE_ORDER_INTAKE_PORT=str(v.port)
            )
            v.process = c.Process(
                f"order-intake-api-{v.name}", [str(c.VENV_BIN / "order-intake"), "api"], env | v.env, workdir
            )
            v.process.start()
        for v in variants:
            assert v.process is not None
            await c.wait_http_ready(f"http://127.0.0.1:{v.port}", v.process)
        for v in variants:
            errors = await _drive(v, args.warmup, args.concurrency, body, seed.tokens)
            v.latencies.clear()
            if errors:
                print(f"  warm-up {v.name}: errors {dict(errors)}")
                return 1
        for round_no in range(1, args.rounds + 1):
            for v in variants:
                assert v.process is not None
                cpu = v.process.cpu_seconds()
                errors = await _drive(v, args.requests, args.concurrency, body, seed.tokens)
                v.cpu_seconds += v.process.cpu_seconds() - cpu
                v.requests += args.requests
                if errors:
                    print(f"  round {round_no} {v.name}: errors {dict(errors)}")
                    return 1
    finally:
        for v in variants:
            if v.process is not None:
                v.process.stop()
        collector.shutdown()

    print(
        f"POST /orders, {args.rounds} rounds x {args.requests} requests, concurrency {args.concurrency}, "
        f"{args.database}"
    )
    means: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for v in variants:
        means[v.name] = statistics.fmean(v.latencies)
        cpu[v.name] = v.cpu_seconds / v.requests
        print(
            f"  {v.name:<8} p50 {c.ms(c.percentile(v.latencies, 50)):>9}  "
            f"p99 {c.ms(c.percentile(v.latencies, 99)):>9}  mean {c.ms(means[v.name]):>9}  "
            f"server CPU per request {c.ms(cpu[v.name]):>9}"
        )
    print(f"  OTLP exports received (on): {_Collector.exports}")
    print(f"  latency ratio disabled/off {means['disabled'] / means['off']:.2f} (1.00: off costs nothing)")
    print(f"  latency ratio off/on       {means['off'] / means['on']:.2f} (what exporting costs)")
    print(
        f"  server CPU ratio disabled/off {cpu['disabled'] / cpu['off']:.2f}, "
        f"off/on {cpu['off'] / cpu['on']:.2f}"
    )
    return 0


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--requests", type=int, default=1000, help="per round and server")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--customers", type=int, default=8)
    args = p.parse_args()
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
