"""Running a worker process: signals, a metrics port, and its async tasks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from aiokafka.errors import KafkaError
from prometheus_client import make_wsgi_app
from pydantic import SecretStr

from casebridge_shared import health, metrics
from casebridge_shared.db import is_transient_database_error
from casebridge_shared.kafka import KafkaSettingsInvalid, TopicMisconfigured, check_client_settings
from casebridge_shared.keyfiles import owner_only_umask
from casebridge_shared.logs import configure_logging
from casebridge_shared.problems import Unauthorized
from casebridge_shared.settings import ServiceSettings
from casebridge_shared.telemetry import setup_telemetry

log = structlog.get_logger(__name__)


async def until_any(*events: asyncio.Event, timeout: float) -> None:
    """Until one of ``events`` is set, or ``timeout`` seconds: a worker loop's idle wait that a
    stop or a wake-up cuts short."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class Backoff:
    """Bounded exponential backoff: ``first``, twice that, ... up to ``longest`` seconds."""

    def __init__(self, first: float = 0.2, longest: float = 10.0) -> None:
        self.first = first
        self.longest = longest
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.longest)
        return delay

    def reset(self) -> None:
        self._next = self.first


def is_transient(exc: BaseException) -> bool:
    """A fault of a dependency that is expected to end: the database or the broker away."""
    return is_transient_database_error(exc) or isinstance(exc, KafkaError)


async def periodic(
    name: str,
    step: Callable[[], Awaitable[bool]],
    stop: asyncio.Event,
    *,
    idle_seconds: float,
    wake: asyncio.Event | None = None,
    backoff: Backoff | None = None,
) -> None:
    """A worker loop that outlives every fault: ``step()`` until ``stop`` is set.

    ``step`` returns True when more work is waiting (it runs again at once), False
    when it is idle (it runs again after ``idle_seconds``, or when ``wake`` is set).
    An exception never ends the loop, nor the ``asyncio.gather`` of the worker's
    parts, which would end the process: it is logged (a database or broker away as
    a warning, anything else with its traceback) and the step is tried again after
    a bounded exponential backoff, reset by the next success. Only cancellation
    (the worker stopping) gets through.
    """
    backoff = backoff or Backoff()
    failures = 0
    waits = (stop, wake) if wake is not None else (stop,)
    while not stop.is_set():
        if wake is not None:
            wake.clear()  # before looking: a wake-up meanwhile is not lost
        try:
            more = await step()
        except Exception as exc:
            failures += 1
            delay = backoff.next()
            error = f"{type(exc).__name__}: {exc}"[:300]
            if is_transient(exc):
                log.warning(f"{name}.unavailable", error=error, failures=failures, retry_in=delay)
            else:
                log.error(f"{name}.failed", error=error, failures=failures, retry_in=delay, exc_info=exc)
            await until_any(stop, timeout=delay)
            continue
        if failures:
            log.info(f"{name}.recovered", after_failures=failures)
            failures = 0
            backoff.reset()
        if not more:
            await until_any(*waits, timeout=idle_seconds)


class WorkerSettings(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def log_level(self) -> str: ...
    @property
    def log_json(self) -> bool: ...
    @property
    def worker_metrics_port(self) -> int: ...
    @property
    def metrics_token(self) -> SecretStr: ...


S = TypeVar("S", bound=WorkerSettings)


GIL_SWITCH_INTERVAL_SECONDS = 0.0005
# After SIGINT/SIGTERM a worker's parts get this long to finish what they are doing
# (a marking, a commit) before they are cancelled: a process supervisor (honcho,
# Kubernetes) kills what is still running after its own grace, 5 s for ``make up``.
STOP_GRACE_SECONDS = 2.5
# The exit status of a worker that refuses to start on its configuration (sysexits' EX_CONFIG).
EXIT_CONFIGURATION = 78


class _ThreadingWSGIServer(WSGIServer):
    daemon_threads = True

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self._handle, args=(request, client_address), daemon=True)
        thread.start()

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes every few seconds are not news."""


def operations_app(readiness: health.Readiness, metrics_token: str = "") -> Callable[..., Iterable[bytes]]:
    """A worker's operations port: ``/metrics``, ``/healthz`` (alive) and ``/readyz``.

    With ``metrics_token``, ``/metrics`` wants it as a bearer token (as the api's does).

    Not ready while one of its parts reports a problem that needs someone to act
    (``casebridge_shared.health``), answered as problem+json with the problems.
    """
    metrics_app = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        body: dict[str, Any]
        if path == "/healthz":
            body, status, kind = {"status": "ok"}, "200 OK", "application/json"
        elif path == "/readyz":
            problems = readiness.problems()
            if problems:
                body = {
                    "type": "https://casebridge.dev/problems/unavailable",
                    "title": "Not ready",
                    "status": 503,
                    "detail": "; ".join(f"{part}: {detail}" for part, detail in sorted(problems.items())),
                    "problems": problems,
                }
                status, kind = "503 Service Unavailable", "application/problem+json"
            else:
                body, status, kind = {"status": "ready"}, "200 OK", "application/json"
        elif metrics.authorized(metrics_token, environ.get("HTTP_AUTHORIZATION")):
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        else:
            body = Unauthorized("/metrics needs the metrics bearer token (setting metrics_token)").body(path)
            payload = json.dumps(body).encode()
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Type", "application/problem+json"),
                    ("Content-Length", str(len(payload))),
                    ("WWW-Authenticate", "Bearer"),
                ],
            )
            return [payload]
        payload = json.dumps(body).encode()
        start_response(status, [("Content-Type", kind), ("Content-Length", str(len(payload)))])
        return [payload]

    return app


def serve_operations(
    host: str, port: int, readiness: health.Readiness = health.WORKER, metrics_token: str = ""
) -> WSGIServer:
    """Serve :func:`operations_app` on ``host:port`` from a daemon thread (port 0: any free one)."""
    server = make_server(
        host,
        port,
        operations_app(readiness, metrics_token),
        server_class=_ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_worker(
    name: str,
    main: Callable[[asyncio.Event], Awaitable[None]],
    *,
    metrics_host: str = "127.0.0.1",
    metrics_port: int = 0,
    metrics_token: str = "",
) -> None:
    """Run ``main(stop)`` until SIGINT/SIGTERM sets ``stop``."""
    # The database drivers hand every statement to a thread (aiosqlite) or
    # back through the loop; with CPython's default 5 ms GIL switch interval
    # the event loop waits up to that long for each hand-over while another
    # thread is busy. A tenth of that cut the order-to-case latency by more than
    # half on SQLite (bench/bench_order_to_case.py; see ADR-0013).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
    if metrics_port:
        serve_operations(metrics_host, metrics_port, metrics_token=metrics_token)

    async def run_main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("worker.started", worker=name, metrics_port=metrics_port or None)
        await run_until_stopped(main, stop, name=name)
        log.info("worker.stopped", worker=name)

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(run_main())


async def run_until_stopped(
    main: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
    *,
    name: str,
    grace: float = STOP_GRACE_SECONDS,
) -> None:
    """``main(stop)`` until it returns; once ``stop`` is set, at most ``grace`` seconds more.

    Most parts notice ``stop`` at once, but one in the middle of a call that waits on
    something away (a consumer joining its group on a broker that does not answer,
    a connection to a database refusing them) would hold the process for as long
    as that call's own timeout. What is cut short here is what the loops are built
    to lose: uncommitted work is done again after the restart.
    """
    task = asyncio.ensure_future(main(stop))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await asyncio.wait({task}, timeout=grace)
        if not task.done():
            log.warning("worker.stop_overdue", worker=name, grace_seconds=grace)
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
    finally:
        stopping.cancel()
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (as ``uvicorn`` picks it for the apis), else asyncio's.

    So a worker runs on the same loop as the apis of its service. A worker hands
    every SQLite statement to aiosqlite's thread and back, and asyncio's own loop
    wakes through a self-pipe and a Python selector each time; uvloop does that
    in C (a small gain, measured; see ADR-0013).
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a platform uvloop does not support
        return None
    return uvloop.new_event_loop


def run_service_worker(
    service: str, settings: S, work: Callable[[S, asyncio.Event], Awaitable[None]]
) -> None:
    """A service's ``worker`` command: its logging, its metrics port, ``work(settings, stop)``."""
    owner_only_umask()
    configure_logging(f"{service}-worker", level=settings.log_level, json=settings.log_json)
    setup_telemetry(service)
    try:
        if isinstance(settings, ServiceSettings):
            check_client_settings(settings)
        run_worker(
            service,
            lambda stop: work(settings, stop),
            metrics_host=settings.host,
            metrics_port=settings.worker_metrics_port,
            metrics_token=settings.metrics_token.get_secret_value(),
        )
    except (TopicMisconfigured, KafkaSettingsInvalid) as exc:
        # Raised only by the checks at the start (Kafka TLS files that cannot be used;
        # with kafka_topic_creation=never, topics not as provisioned): waiting would
        # not heal them, an operator has to act.
        log.error("worker.refused_to_start", worker=service, reason=str(exc))
        print(f"{service} worker: refusing to start: {exc}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(EXIT_CONFIGURATION)
    # Everything is closed (database pools, Kafka clients) or was given up on. The
    # interpreter's own teardown, a full garbage collection of every object the
    # process made, then took seconds on a busy machine, past a supervisor's grace.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
