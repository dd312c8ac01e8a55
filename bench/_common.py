"""Shared plumbing for the benchmarks: a throwaway database, the embedded broker,
servers in subprocesses, seed data through the real services, and statistics.

Not a test helper: the scripts in this folder are run by hand and print results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from casebridge_shared import migrations
from casebridge_shared.broker import EmbeddedBroker, free_port
from casebridge_shared.db import utcnow
from casebridge_shared.testing import pg_exec

POSTGRES_BASE = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
BENCH_DIR = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument(
        "--postgres-url",
        default=POSTGRES_BASE,
        help="server to create the throwaway bench_<random> database on (default: %(default)s)",
    )
    return p


def machine() -> str:
    return f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}"


# --- databases --------------------------------------------------------------


@contextlib.contextmanager
def bench_database(
    kind: str, workdir: Path, postgres_base: str = POSTGRES_BASE, service: str = "order-intake"
) -> Iterator[str]:
    """A fresh database for ``service``, migrated; dropped (or deleted with workdir) afterwards.

    Blocking (Alembic runs its own event loop): call it outside ``asyncio.run``.
    """
    if service == "order-intake":
        from order_intake.db import MIGRATIONS
    elif service == "notifier":
        from notifier.db import MIGRATIONS
    elif service == "customer-ledger":
        from customer_ledger.db import MIGRATIONS
    else:
        from case_handling.db import MIGRATIONS

    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / f'{service}.sqlite3'}"
        migrations.upgrade(MIGRATIONS, url)
        yield url
        return
    name = f"bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(pg_exec(postgres_base, f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(postgres_base).set(database=name).render_as_string(hide_password=False)
        migrations.upgrade(MIGRATIONS, url)
        yield url
    finally:
        asyncio.run(pg_exec(postgres_base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="casebridge-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def broker() -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker()
    b.start()
    try:
        yield b
    finally:
        b.stop()


def settings_for(database_url: str, bootstrap_servers: str, var_dir: Path, **overrides: Any) -> Any:
    from order_intake.settings import Settings

    return Settings(
        environment="test",
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap_servers,
        var_dir=var_dir,
        log_json=True,
        log_level="WARNING",
        **overrides,
    )


def service_env(database_url: str, bootstrap_servers: str, var_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for an ``order-intake`` subprocess (no CASEBRIDGE_* leaking in from outside)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
    env.update(
        {
            "CASEBRIDGE_ENVIRONMENT": "test",
            "CASEBRIDGE_LOG_LEVEL": "WARNING",
            "CASEBRIDGE_LOG_JSON": "true",
            "CASEBRIDGE_VAR_DIR": str(var_dir),
            "CASEBRIDGE_ORDER_INTAKE_DATABASE_URL": database_url,
            "CASEBRIDGE_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "CASEBRIDGE_ORDER_INTAKE_WORKER_METRICS_PORT": "0",
        }
    )
    env.update(extra)
    return env


# --- subprocesses -------------------------------------------------------------


class Process:
    """A server or worker subprocess, its output in a log file, stopped with SIGTERM."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """user+system CPU time the process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen = None


async def wait_http_ready(base_url: str, process: Process, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base_url, timeout=2.0) as client:
        while True:
            process.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{process.name} not ready:\n{process.log_tail()}")
            await asyncio.sleep(0.1)


def api_port() -> int:
    return free_port()


# --- seed data through the real services --------------------------------------


@dataclass
class Seed:
    product_id: str
    customer_ids: list[str]
    tokens: list[str]


async def seed(container: Any, customers: int) -> Seed:
    """A product and some customers, created through the services, plus their tokens."""
    from order_intake.catalog import service as catalog_service
    from order_intake.catalog.models import ProductCreate
    from order_intake.identity import service as identity_service
    from order_intake.identity.models import CustomerRegistration

    await container.keys.load()
    async with container.uow() as uow:
        product = await catalog_service.create_product(
            uow,
            ProductCreate(
                title="Contract review",
                description="A lawyer reviews your contract and explains every clause that matters.",
                deliverables=["Written review", "30-minute call"],
                category="contracts",
                price=Decimal("199.00"),
                currency="EUR",
            ),
        )
    users = []
    for i in range(customers):
        async with container.uow() as uow:
            users.append(
                await identity_service.register_customer(
                    uow,
                    CustomerRegistration(
                        email=f"bench-customer{i}@example.org",
                        password="bench-password-123",  # noqa: S106 (throwaway bench account)
                        full_name=f"Bench Customer {i}",
                    ),
                )
            )
    s = container.settings
    tokens = [
        identity_service.issue_token(
            container.keys,
            user,
            issuer=s.token_issuer,
            audience=s.token_audience,
            lifetime=timedelta(hours=2),
            now=utcnow(),
        )
        for user in users
    ]
    return Seed(product_id=product.id, customer_ids=[u.id for u in users], tokens=tokens)


# --- statistics -----------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def run(coro: Any, *, uvloop: bool = False) -> Any:
    """``asyncio.run``; with ``uvloop=True`` on uvloop (as uvicorn serves), to keep a load generator lean."""
    if uvloop:
        import uvloop as _uvloop

        with asyncio.Runner(loop_factory=_uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


class RawHttpClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: one connection, one request at a time.

    Used only to cross-check httpx's numbers: it costs a fraction of httpx's CPU per
    request, so on a 2-core machine it shows how much of a result is the load generator.
    Understands exactly what uvicorn sends back (a Content-Length body).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Content-Type: application/json"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_and_headers = await self._reader.readuntil(b"\r\n\r\n")
        lines = status_and_headers.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self._reader.readexactly(length)
        return status, payload

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = None


def summarize_collapsed(path: Path, top: int = 25, include_idle: bool = False) -> str:
    """Top functions by inclusive and by own share of samples, from py-spy ``--format raw`` output.

    Each line of that file is ``frame;frame;...;leaf count`` (root first).
    """
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_short_frame(f) for f in stack.split(";")]
        if not include_idle and _idle(frames):
            continue
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    out = [f"{total} busy samples"]
    out.append("  inclusive:")
    out += [f"    {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    out.append("  own (leaf):")
    out += [f"    {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    return "\n".join(out)


def _short_frame(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(file).parts
    short = "/".join(parts[-2:]) if parts else file
    return f"{name} ({short})"


def _idle(frames: list[str]) -> bool:
    leaf = frames[-1] if frames else ""
    return any(w in leaf for w in ("select (selectors.py)", "wait (threading.py)", "poll (", "run_once"))


class Profiler:
    """py-spy sampling another process (``--format raw``), started and stopped around a phase."""

    def __init__(self, py_spy: str, pid: int, out: Path, rate: int = 250) -> None:
        self.out = out
        self.argv = [py_spy, "record", "-p", str(pid), "-r", str(rate), "--format", "raw", "-o", str(out)]
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.popen = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # attached before the phase starts

    def stop(self) -> str:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGINT)
        self.popen.wait(timeout=30)
        return summarize_collapsed(self.out)


def cpu_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def report_background_load(max_wait: float = 300.0, seconds: float = 2.0, threshold: float = 0.1) -> float:
    """Wait (up to ``max_wait`` s) for the machine to be idle, then print how busy it was.

    Other load on a 2-core machine skews every figure, so we do not start into it.
    """
    deadline = time.monotonic() + max_wait
    waited = 0.0
    while True:
        busy0, total0 = cpu_busy_ticks()
        time.sleep(seconds)
        busy1, total1 = cpu_busy_ticks()
        busy = (busy1 - busy0) / max(1, total1 - total0)
        if busy <= threshold or time.monotonic() > deadline:
            break
        waited += seconds
    warning = "  WARNING: the machine is not idle, results will be skewed" if busy > threshold else ""
    after = f" (after waiting {waited:.0f}s for other load to end)" if waited else ""
    print(f"background CPU load before start: {busy:.0%} of {os.cpu_count()} CPUs{after}{warning}")
    return busy


class CpuClock:
    """CPU seconds another process used between laps."""

    def __init__(self, pid: int) -> None:
        self.path = Path(f"/proc/{pid}/stat")
        self.last = self._now()

    def _now(self) -> float:
        fields = self.path.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def lap(self) -> float:
        now = self._now()
        used, self.last = now - self.last, now
        return used


class GroupCpuClock:
    """CPU seconds a changing set of processes used between laps; one that appears meanwhile counts whole."""

    def __init__(self, pids: Callable[[], set[int]]) -> None:
        self.pids = pids
        self.last = self._per_process()

    def _per_process(self) -> dict[int, int]:
        ticks: dict[int, int] = {}
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks[pid] = int(fields[11]) + int(fields[12])
        return ticks

    def lap(self) -> float:
        now = self._per_process()
        used = sum(t - self.last.get(pid, 0) for pid, t in now.items())
        self.last = now
        return used / os.sysconf("SC_CLK_TCK")


def postgres_pids() -> set[int]:
    """Every PostgreSQL server process on this machine (the backends come and go)."""
    _, names = _process_table()
    return {pid for pid, name in names.items() if name.startswith("postgres")}


def _process_table() -> tuple[dict[int, int], dict[int, str]]:
    """Every process's parent and name, from /proc."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        pid = int(stat.parent.name)
        names[pid] = text[text.find("(") + 1 : text.rfind(")")]
        parents[pid] = int(text.rsplit(")", 1)[1].split()[1])
    return parents, names


def descendants(root: int, parents: dict[int, int] | None = None) -> set[int]:
    """``root`` and every process below it."""
    if parents is None:
        parents, _ = _process_table()
    found = {root}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    return found


def _tree_and_postgres_pids() -> set[int]:
    """This process, its descendants, and every PostgreSQL process (our database server)."""
    parents, names = _process_table()
    ours = descendants(os.getpid(), parents)
    return ours | {pid for pid, name in names.items() if name.startswith("postgres")}


def jiffies(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total


class LoadMonitor:
    """How much of the machine went to processes that are not ours during a phase.

    Ours: this process and its descendants (broker, servers, worker) and PostgreSQL.
    Exited children are counted through their parent's cutime/cstime.
    """

    def __init__(self) -> None:
        self.pids = _tree_and_postgres_pids()
        self.busy0, self.total0 = cpu_busy_ticks()
        self.ours0 = jiffies(self.pids)

    def foreign(self) -> float:
        """Share of the whole machine (all CPUs) used by other processes since start."""
        pids = self.pids | _tree_and_postgres_pids()
        busy1, total1 = cpu_busy_ticks()
        ours1 = jiffies(pids)
        return max(0.0, ((busy1 - self.busy0) - (ours1 - self.ours0)) / max(1, total1 - self.total0))
