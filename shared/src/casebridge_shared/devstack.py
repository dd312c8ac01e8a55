"""``casebridge up``: the whole stack on one machine, the embedded default.

Starts the embedded broker (Tansu), migrates each service's SQLite database
under ``var/``, seeds the demo logins, runs every api and worker under honcho,
waits until all are ready and prints where to go. Ctrl-C stops everything.

Services are found through entry points (``casebridge.api`` and
``casebridge.worker``), so a new service joins the stack by installing it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer

from casebridge_shared.broker import broker_command, port_open

cli = typer.Typer(help="Casebridge developer tools", no_args_is_help=True)


@cli.callback()
def _group() -> None:
    """Keeps `casebridge` a command group even while it has one command."""


# The order the services are started and listed in.
SERVICE_ORDER = ["order-intake", "case-handling", "notifier", "customer-ledger"]
DEFAULT_PORTS = {"order-intake": 8001, "case-handling": 8002, "notifier": 8003, "customer-ledger": 8004}
DEV_SMTP_PORT = 1025  # the notifier's default smtp_port
# Seconds between looks at the services' /readyz while the stack starts: growing from the first
# to the longest.
READY_POLL_FIRST = 0.05
READY_POLL_LONGEST = 0.5
# An api's grace for open requests once stopped, under `up`: well inside honcho's 5 s.
API_STOP_GRACE_SECONDS = 2


@dataclass(frozen=True)
class Service:
    name: str
    has_worker: bool
    # The service's top-level package (``order_intake``), from its api entry point: where its
    # migrations are found without importing it.
    package: str = field(default="")

    @property
    def env_prefix(self) -> str:
        return "CASEBRIDGE_" + self.name.upper().replace("-", "_") + "_"

    def port(self) -> int:
        raw = os.environ.get(self.env_prefix + "PORT") or os.environ.get("CASEBRIDGE_PORT")
        return int(raw) if raw else DEFAULT_PORTS.get(self.name, 8000)

    def host(self) -> str:
        return os.environ.get(self.env_prefix + "HOST") or os.environ.get("CASEBRIDGE_HOST") or "127.0.0.1"

    @property
    def script(self) -> str:
        return str(Path(sys.executable).with_name(self.name))

    def package_dir(self) -> Path | None:
        """The package's folder, found without importing it (its import is the whole app)."""
        spec = importlib.util.find_spec(self.package) if self.package else None
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations)))


def discover() -> list[Service]:
    apis = {ep.name: ep.value.split(":")[0].split(".")[0] for ep in entry_points(group="casebridge.api")}
    workers = {ep.name for ep in entry_points(group="casebridge.worker")}
    ordered = [n for n in SERVICE_ORDER if n in apis] + sorted(set(apis) - set(SERVICE_ORDER))
    return [Service(name, name in workers, apis[name]) for name in ordered]


def _kafka_address() -> tuple[str, int]:
    bootstrap = os.environ.get("CASEBRIDGE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092").split(",")[0]
    host, _, port = bootstrap.rpartition(":")
    return host or "127.0.0.1", int(port)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (our own loopback URL)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# --- is a database current? ----------------------------------------------------------
#
# Asking each service (``<service> db upgrade``) imports its whole app first, 4-10 s a service
# on a busy machine, only for Alembic to find nothing to do. The answer is two small sets:
# the revisions the migration scripts end in, and the revision the database records. Both
# are read here without importing the service, SQLAlchemy or Alembic.


def script_heads(versions_dir: Path) -> frozenset[str]:
    """The head revisions of a folder of Alembic scripts, read from their source, not run.

    A head is a revision no other script names as its ``down_revision`` (a merge names
    several). Parsed with ``ast``: the scripts' own imports (SQLAlchemy, the service's
    schema steps) are what an import would cost.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in sorted(versions_dir.glob("*.py")):
        values: dict[str, object] = {}
        for node in ast.parse(script.read_text(encoding="utf-8"), str(script)).body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
                target, value = node.target.id, node.value
            elif (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                target, value = node.targets[0].id, node.value
            else:
                continue
            if target in ("revision", "down_revision"):
                values[target] = ast.literal_eval(value)
        revision = values.get("revision")
        if not isinstance(revision, str):
            continue  # not a revision script (a helper module)
        revisions.add(revision)
        down = values.get("down_revision")
        if isinstance(down, str):
            parents.add(down)
        elif isinstance(down, (tuple, list)):
            parents.update(str(d) for d in down)
    return frozenset(revisions - parents)


def sqlite_revisions(path: Path) -> frozenset[str]:
    """The revisions an SQLite database records (``alembic_version``); none for a new one."""
    if not path.exists():
        return frozenset()
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.OperationalError:  # the file exists but was never migrated
        return frozenset()
    finally:
        connection.close()
    return frozenset(str(row[0]) for row in rows)


def service_setting(env: dict[str, str], service: Service, name: str) -> str | None:
    """A setting as the service's settings class reads it: its own prefix first, then
    ``CASEBRIDGE_``, names case-insensitive (pydantic-settings' ``case_sensitive=False``)."""
    lowered = {k.lower(): v for k, v in env.items()}
    for key in (service.env_prefix + name, "CASEBRIDGE_" + name):
        if key.lower() in lowered:
            return lowered[key.lower()]
    return None


def sqlite_database(env: dict[str, str], service: Service) -> Path | None:
    """The service's SQLite file as its settings resolve it, or None for any other database
    (a PostgreSQL URL, an in-memory SQLite): then the service's own command must look."""
    url = service_setting(env, service, "DATABASE_URL")
    if not url:
        var_dir = Path(service_setting(env, service, "VAR_DIR") or "var")
        return (var_dir / f"{service.name}.sqlite3").resolve()
    scheme, _, rest = url.partition(":///")
    if not scheme.startswith("sqlite") or not rest:
        return None
    path = rest.split("?", 1)[0]
    if path in ("", ":memory:") or path.startswith("file:"):
        return None
    return Path(path).resolve()


@dataclass(frozen=True)
class SchemaState:
    """Where a service's database stands against its migration scripts."""

    service: str
    recorded: frozenset[str]
    heads: frozenset[str]

    @property
    def current(self) -> bool:
        return bool(self.heads) and self.recorded == self.heads

    def step(self) -> str:
        """``0009 -> 0010``, what ``up`` says while it migrates."""
        before = ", ".join(sorted(self.recorded)) or "new database"
        return f"{before} -> {', '.join(sorted(self.heads))}"


def schema_state(env: dict[str, str], service: Service) -> SchemaState | None:
    """The service's database against its scripts, or None when only the service can tell
    (not SQLite, or its scripts not where a service keeps them)."""
    package = service.package_dir()
    database = sqlite_database(env, service)
    if package is None or database is None or not (package / "migrations" / "versions").is_dir():
        return None
    return SchemaState(
        service.name, sqlite_revisions(database), script_heads(package / "migrations" / "versions")
    )


def migrate(services: list[Service], env: dict[str, str]) -> list[str]:
    """Bring every service's database to its scripts' heads; a current one is left alone.

    Says for each what it does. The databases are independent, so the migrations that
    are needed run side by side: on a new clone each is mostly the service's imports.
    Returns the names of the services migrated.
    """
    running: list[tuple[Service, subprocess.Popen[bytes]]] = []
    for service in services:
        state = schema_state(env, service)
        if state is not None and state.current:
            typer.echo(f"{service.name}: database current ({', '.join(sorted(state.heads))})")
            continue
        if state is None:
            typer.echo(f"migrating {service.name}: its configured database, to the latest revision ...")
        else:
            typer.echo(f"migrating {service.name}: {state.step()} ...")
        running.append((service, subprocess.Popen([service.script, "db", "upgrade"], env=env)))
    failed = [service.name for service, process in running if process.wait() != 0]
    if failed:
        typer.echo(f"casebridge: migrating {', '.join(failed)} failed (see above)", err=True)
        raise typer.Exit(1)
    return [service.name for service, _ in running]


# --- demo logins ---------------------------------------------------------------------
#
# ``order-intake seed-demo`` is idempotent but, like ``db upgrade``, imports the whole app to
# find, on every later start, that there is nothing to do. What it printed is kept in the
# var dir and used again while it still holds.

DEMO_LOGINS_FILE = "demo-logins.json"


def _demo_fingerprint(service: Service) -> str | None:
    """A hash of the service's demo data (``demo.py``): changed demo logins are seeded again."""
    package = service.package_dir()
    source = package / "demo.py" if package else None
    if source is None or not source.is_file():
        return None
    return hashlib.sha256(source.read_bytes()).hexdigest()


def seeded_logins(service: Service, env: dict[str, str], var_dir: Path) -> list[dict[str, Any]] | None:
    """The logins the last seed printed, if they still hold, else None (seed again).

    They hold while the demo data is the same code and every login is still an account in
    the same SQLite database; anything else (another database kind, a login deleted, the
    file unreadable) seeds again, which is always safe.
    """
    database = sqlite_database(env, service)
    fingerprint = _demo_fingerprint(service)
    try:
        saved = json.loads((var_dir / DEMO_LOGINS_FILE).read_text())
        logins: list[dict[str, Any]] = saved["logins"]
        emails = {str(login["email"]) for login in logins}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if database is None or fingerprint is None or not database.exists():
        return None
    if saved.get("demo") != fingerprint or saved.get("database") != str(database) or not emails:
        return None
    connection = sqlite3.connect(database)
    try:
        marks = ", ".join("?" * len(emails))
        found = connection.execute(f"SELECT email FROM users WHERE email IN ({marks})", sorted(emails))
        present = {str(row[0]) for row in found}
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    return logins if present == emails else None


def seed_demo(service: Service, env: dict[str, str], var_dir: Path) -> list[dict[str, Any]]:
    """The demo logins: those seeded before while they hold, else ``<service> seed-demo``'s."""
    seeded = seeded_logins(service, env, var_dir)
    if seeded is not None:
        typer.echo(f"{service.name}: demo logins already seeded")
        return seeded
    typer.echo(f"seeding {service.name}: demo logins and catalog ...")
    out = subprocess.run(
        [service.script, "seed-demo", "--json"], env=env, check=True, capture_output=True, text=True
    ).stdout
    logins: list[dict[str, Any]] = json.loads(out.strip().splitlines()[-1])
    database = sqlite_database(env, service)
    fingerprint = _demo_fingerprint(service)
    if database is not None and fingerprint is not None:
        saved = {"demo": fingerprint, "database": str(database), "logins": logins}
        # The demo password is in it (the banner prints it too): owner-only all the same.
        descriptor = os.open(var_dir / DEMO_LOGINS_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(saved, file)
    return logins


def login_pages(services: list[Service], login: dict[str, Any]) -> list[str]:
    """The addresses of the pages a demo login opens, on the ports this stack runs on.

    ``seed-demo`` names them as (service, path) pairs; a page of a service that is not
    installed is left out.
    """
    by_name = {s.name: s for s in services}
    urls = []
    for page in login.get("pages", []):
        service = by_name.get(str(page.get("service")))
        if service is not None:
            urls.append(f"http://{service.host()}:{service.port()}{page.get('path', '/')}")
    return urls


def _banner(
    services: list[Service],
    logins: list[dict[str, Any]],
    kafka: str,
    mail: str | None,
    mail_dir: Path | None = None,
) -> str:
    lines = ["", "=" * 78, "Casebridge is up.", ""]
    for service in services:
        base = f"http://{service.host()}:{service.port()}"
        lines.append(f"  {service.name:<16} API docs: {base}/docs    (OpenAPI: {base}/openapi.json)")
    lines.append(f"  {'kafka':<16} {kafka} (embedded Tansu; topics casebridge.*.v1)")
    if mail:
        lines.append(f"  {'mail':<16} {mail} (development SMTP server: every email is kept as a file,")
        lines.append(f"  {'':<16} {mail_dir or 'var/mail'}/*.eml, and named in this log)")
    lines.append("")
    lines.append("Demo logins: sign in on the page shown (or POST /auth/token on order-intake):")
    for login in logins:
        lines.append(f"  {login['role']:<12} {login['email']:<40} {login['password']}")
        for url in login_pages(services, login):
            lines.append(f"  {'':<12}   -> {url}")
    lines.append("")
    lines.append("Ctrl-C stops everything.")
    lines.append("=" * 78)
    return "\n".join(lines)


def bootstrap_admin_env(env: dict[str, str], logins: list[dict[str, Any]]) -> dict[str, str]:
    """The bootstrap-admin settings for ``up``: the listed demo admin, not a second one.

    order-intake's api creates a first admin from ``bootstrap_admin_*`` when no
    account has that email; left at its defaults that was an unlisted
    ``admin@casebridge.example`` / ``changethis``. Pointed at the demo admin
    (created by ``seed-demo`` before the api starts) it creates nothing. A
    bootstrap admin the developer configured is kept.
    """
    configured = any(
        f"CASEBRIDGE_{prefix}BOOTSTRAP_ADMIN_{field}" in env
        for prefix in ("", "ORDER_INTAKE_")
        for field in ("EMAIL", "PASSWORD")
    )
    admin = next((login for login in logins if login["role"] == "admin"), None)
    if configured or admin is None:
        return {}
    return {
        "CASEBRIDGE_ORDER_INTAKE_BOOTSTRAP_ADMIN_EMAIL": str(admin["email"]),
        "CASEBRIDGE_ORDER_INTAKE_BOOTSTRAP_ADMIN_PASSWORD": str(admin["password"]),
    }


@cli.command()
def up(
    var_dir: Annotated[Path, typer.Option(help="Where the SQLite databases live")] = Path("var"),
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for every service")] = 120.0,
) -> None:
    """Run the whole stack on the embedded broker and SQLite, until Ctrl-C."""
    try:
        from honcho.manager import Manager
    except ModuleNotFoundError as exc:
        # Development only: the production image leaves casebridge-shared's devstack extra out.
        raise typer.BadParameter(
            "`casebridge up` is a development tool: install casebridge-shared[devstack] (make install)"
        ) from exc

    var_dir = var_dir.resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("CASEBRIDGE_ENVIRONMENT", "development")
    env.setdefault("CASEBRIDGE_VAR_DIR", str(var_dir))
    # An api waits this long for open live streams (a staff app's alerts) after Ctrl-C; the
    # process manager SIGKILLs whatever still runs 5 s after it (honcho's KILL_WAIT).
    env.setdefault("CASEBRIDGE_SHUTDOWN_GRACE_SECONDS", str(API_STOP_GRACE_SECONDS))
    kafka_host, kafka_port = _kafka_address()
    env.setdefault("CASEBRIDGE_KAFKA_BOOTSTRAP_SERVERS", f"{kafka_host}:{kafka_port}")
    os.environ.update(env)
    services = discover()
    if not services:
        typer.echo("no Casebridge services installed", err=True)
        raise typer.Exit(1)
    order_intake = next((s for s in services if s.name == "order-intake"), None)
    if order_intake is not None:
        env.setdefault("CASEBRIDGE_TOKEN_ISSUER", f"http://{order_intake.host()}:{order_intake.port()}")
        # The customer portal is order-intake's: password-reset links and customer emails point there.
        portal = f"http://{order_intake.host()}:{order_intake.port()}"
        env.setdefault("CASEBRIDGE_ORDER_INTAKE_PORTAL_URL", portal)
        env.setdefault("CASEBRIDGE_NOTIFIER_CUSTOMER_PORTAL_URL", portal)
        # order-intake mails (reset links) where the notifier does: the catcher below, by default.
        for name in ("SMTP_HOST", "SMTP_PORT"):
            if f"CASEBRIDGE_NOTIFIER_{name}" in env:
                env.setdefault(f"CASEBRIDGE_ORDER_INTAKE_{name}", env[f"CASEBRIDGE_NOTIFIER_{name}"])
    notifier = next((s for s in services if s.name == "notifier"), None)
    if notifier is not None:
        # The staff app (served by the notifier) signs in at order-intake from the browser.
        origins = [f"http://{notifier.host()}:{notifier.port()}", f"http://localhost:{notifier.port()}"]
        env.setdefault("CASEBRIDGE_ORDER_INTAKE_CORS_ALLOW_ORIGINS", json.dumps(origins))
        case_handling = next((s for s in services if s.name == "case-handling"), None)
        if case_handling is not None:
            # The staff app's alerts open the case in case-handling's staff console.
            console = f"http://{case_handling.host()}:{case_handling.port()}"
            env.setdefault("CASEBRIDGE_NOTIFIER_CASE_HANDLING_PUBLIC_URL", console)

    migrate(services, env)
    logins: list[dict[str, Any]] = []
    if order_intake is not None:
        logins = seed_demo(order_intake, env, var_dir)
        env.update(bootstrap_admin_env(env, logins))

    manager = Manager()
    mail: str | None = None
    mail_dir: Path | None = None
    smtp_port = int(env.get("CASEBRIDGE_NOTIFIER_SMTP_PORT", DEV_SMTP_PORT))
    local_smtp = env.get("CASEBRIDGE_NOTIFIER_SMTP_HOST", "127.0.0.1") == "127.0.0.1"
    if (
        local_smtp
        and importlib.util.find_spec("aiosmtpd") is not None
        and not port_open("127.0.0.1", smtp_port)
    ):
        # Where the notifier and order-intake send email by default: a catcher that keeps each
        # mail as a file (casebridge_shared.devmail), so alerts and password-reset links can be
        # opened without a mail server; the log names each file, never shows the body.
        mail = f"127.0.0.1:{smtp_port}"
        mail_dir = var_dir / "mail"
        handler = "casebridge_shared.devmail.MailFolder"
        manager.add_process(
            "mail",
            shlex.join([sys.executable, "-m", "aiosmtpd", "-n", "-l", mail, "-c", handler, str(mail_dir)]),
            env=env,
        )
    for service in services:
        manager.add_process(f"{service.name}-api", shlex.join([service.script, "api"]), env=env)
        if service.has_worker:
            manager.add_process(f"{service.name}-worker", shlex.join([service.script, "worker"]), env=env)

    def announce_when_ready() -> None:
        deadline = time.monotonic() + ready_timeout
        pending = {s.name: f"http://{s.host()}:{s.port()}/readyz" for s in services}
        # A refused connection costs nothing, so look often at first and less often the
        # longer the start takes: the banner comes within a tenth of the last one ready.
        interval = READY_POLL_FIRST
        while time.monotonic() < deadline and manager.returncode is None:
            pending = {n: u for n, u in pending.items() if not _ready(u)}
            if not pending and port_open(kafka_host, kafka_port):
                print(_banner(services, logins, f"{kafka_host}:{kafka_port}", mail, mail_dir), flush=True)
                return
            time.sleep(interval)
            interval = min(interval * 1.5, READY_POLL_LONGEST)
        if manager.returncode is None:
            print(f"casebridge: not ready after {ready_timeout}s: {', '.join(pending)}", flush=True)

    # The broker runs beside the process manager, not under it: honcho stops its processes
    # with SIGTERM, on which Tansu waits about 5 s for its clients to leave (past honcho's
    # KILL_WAIT), while on SIGINT it ends at once, and it keeps nothing to lose. It is
    # stopped last, once every worker has closed its Kafka clients: stopped with them, it
    # left the workers' last commits and leave-group calls hanging for their stop grace.
    # Its own session keeps a terminal's Ctrl-C from reaching it before that.
    broker = subprocess.Popen(
        broker_command(kafka_host, kafka_port), env=env | {"RUST_LOG": "warn"}, start_new_session=True
    )
    threading.Thread(target=announce_when_ready, daemon=True).start()
    try:
        manager.loop()
    finally:
        stop_broker(broker)
    sys.exit(manager.returncode or 0)


def stop_broker(broker: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """End the embedded broker with SIGINT (at once, unlike SIGTERM); SIGKILL if it hangs."""
    if broker.poll() is None:
        broker.send_signal(signal.SIGINT)
    try:
        broker.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        broker.kill()
        broker.wait()


def main() -> None:
    # `up` has no use for the contracts tooling, whose import (schemas, every service's events)
    # took a second of the restart on a busy machine; every other command line lists it.
    if sys.argv[1:2] != ["up"]:
        try:
            from casebridge_shared.contracts import cli as contracts_cli

            cli.add_typer(contracts_cli, name="contracts")
        except ImportError:  # pragma: no cover - contracts tooling not installed
            pass
    cli()
