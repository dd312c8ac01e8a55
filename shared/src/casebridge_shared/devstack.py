"""``casebridge up``: the whole stack on one machine, the embedded default.

Starts the embedded broker (Tansu), migrates each service's SQLite database
under ``var/``, seeds the demo logins, runs every api and worker under honcho,
waits until all are ready and prints where to go. Ctrl-C stops everything.

Services are found through entry points (``casebridge.api`` and
``casebridge.worker``), so a new service joins the stack by installing it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Service:
    name: str
    has_worker: bool

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


def discover() -> list[Service]:
    apis = {ep.name for ep in entry_points(group="casebridge.api")}
    workers = {ep.name for ep in entry_points(group="casebridge.worker")}
    ordered = [n for n in SERVICE_ORDER if n in apis] + sorted(apis - set(SERVICE_ORDER))
    return [Service(name, name in workers) for name in ordered]


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

    for service in services:
        typer.echo(f"migrating {service.name} ...")
        subprocess.run([service.script, "db", "upgrade"], env=env, check=True)
    logins: list[dict[str, Any]] = []
    if order_intake is not None:
        out = subprocess.run(
            [order_intake.script, "seed-demo", "--json"], env=env, check=True, capture_output=True, text=True
        ).stdout
        logins = json.loads(out.strip().splitlines()[-1])
        env.update(bootstrap_admin_env(env, logins))

    manager = Manager()
    manager.add_process(
        "broker", shlex.join(broker_command(kafka_host, kafka_port)), env=env | {"RUST_LOG": "warn"}
    )
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
        while time.monotonic() < deadline and manager.returncode is None:
            pending = {n: u for n, u in pending.items() if not _ready(u)}
            if not pending and port_open(kafka_host, kafka_port):
                print(_banner(services, logins, f"{kafka_host}:{kafka_port}", mail, mail_dir), flush=True)
                return
            time.sleep(0.25)
        if manager.returncode is None:
            print(f"casebridge: not ready after {ready_timeout}s: {', '.join(pending)}", flush=True)

    threading.Thread(target=announce_when_ready, daemon=True).start()
    manager.loop()
    sys.exit(manager.returncode or 0)


def main() -> None:
    try:
        from casebridge_shared.contracts import cli as contracts_cli

        cli.add_typer(contracts_cli, name="contracts")
    except ImportError:  # pragma: no cover - contracts tooling not installed
        pass
    cli()
