"""docker-compose.yml, checked against the Compose specification and against the code it runs.

There is no Docker engine here, so the checks are static:

- the file validates against the Compose specification's JSON Schema,
  ``tests/data/compose-spec.json`` (the compose-spec project's schema, Apache-2.0,
  ``tests/data/compose-spec.LICENSE``; copied unchanged from the one that the
  check-jsonschema 0.39.0 wheel on PyPI vendors, ``check_jsonschema/builtin_schemas/
  vendor/compose-spec.json``; its sha256 is pinned below);
- every ``CASEBRIDGE_`` variable on a Casebridge container is a settings field of that
  container's service, and that environment (required secrets filled in) builds the
  service's ``Settings``; secrets only come from required compose variables;
- every long-running container has a health check, and the api's and worker's probe
  the port the settings give them; one-shot migrations are waited for, never restarted;
- every command is a console script of the service's package and a real subcommand;
- every ``depends_on`` target exists; every service database is created by
  ``deploy/postgres-init.sql``; ``deploy/Dockerfile`` installs every service it runs
  (through ``requirements/production.in``; tests/test_production_image.py checks the image).
- Kafka: every broker authenticates every listener and denies by default; the three brokers
  are one cluster (cluster id, quorum voters) with replication factor 3 and min ISR 2,
  every client bootstraps from all of them, none waits for some brokers only, and each has
  an EXTERNAL listener declared, advertised and published; ``deploy/compose.laptop.yml``,
  merged onto the file, is the same with one broker and replication factor 1.

Each check returns a list of problems; the tests at the end mutate a copy of the file
and show that each check reports what it is for. Services whose package is not
installed yet are skipped (``pytest.importorskip``); ``order-intake`` always runs.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from unittest import mock

import click
import click.testing
import jsonschema
import pytest
import typer
import typer.testing
import yaml
from pydantic import BaseModel, SecretStr, ValidationError

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PRODUCTION_REQUIREMENTS = ROOT / "requirements" / "production.in"
POSTGRES_INIT = ROOT / "deploy" / "postgres-init.sql"
KAFKA_ACLS = ROOT / "deploy" / "kafka" / "acls.txt"
KAFKA_ACLS_DOC = ROOT / "docs" / "kafka-acls.md"
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"

COMMON_PREFIX = "CASEBRIDGE_"

# What a deployer puts in .env: the values for the file's required ${VAR:?...} variables.
DEPLOYER_ENV = {
    "POSTGRES_PASSWORD": "a-real-postgres-password",
    "CASEBRIDGE_BOOTSTRAP_ADMIN_EMAIL": "admin@example.com",
    "CASEBRIDGE_BOOTSTRAP_ADMIN_PASSWORD": "a-real-admin-password",
    "CASEBRIDGE_SIGNING_KEYS_SECRET": "a-real-signing-keys-secret",
    "CASEBRIDGE_SERVICE_CLIENT_SECRET": "a-real-service-client-secret",
    "KAFKA_ADMIN_PASSWORD": "a-real-kafka-admin-password",
    "KAFKA_ORDER_INTAKE_PASSWORD": "order-intake-kafka-password",
    "KAFKA_CASE_HANDLING_PASSWORD": "case-handling-kafka-password",
    "KAFKA_NOTIFIER_PASSWORD": "notifier-kafka-password",
    "KAFKA_CUSTOMER_LEDGER_PASSWORD": "customer-ledger-kafka-password",
    "CASEBRIDGE_METRICS_TOKEN": "a-real-metrics-token",
    "GRAFANA_ADMIN_PASSWORD": "a-real-grafana-password",
}


@dataclass(frozen=True)
class ServiceInfo:
    script: str  # console script, e.g. order-intake
    package: str  # import package, e.g. order_intake
    directory: str  # e.g. services/order-intake
    has_worker: bool

    @property
    def env_prefix(self) -> str:
        return COMMON_PREFIX + self.script.upper().replace("-", "_") + "_"

    @property
    def settings_module(self) -> str:
        return f"{self.package}.settings"


SERVICES = {
    info.script: info
    for info in (
        ServiceInfo("order-intake", "order_intake", "services/order-intake", has_worker=True),
        ServiceInfo("case-handling", "case_handling", "services/case-handling", has_worker=True),
        ServiceInfo("notifier", "notifier", "services/notifier", has_worker=True),
        ServiceInfo("customer-ledger", "customer_ledger", "services/customer-ledger", has_worker=True),
    )
}

Compose = dict[str, Any]


# --- reading the file ------------------------------------------------------------------


def load_compose() -> Compose:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def services(compose: Compose) -> dict[str, dict[str, Any]]:
    return compose.get("services") or {}


def casebridge_containers(compose: Compose) -> dict[str, dict[str, Any]]:
    """The containers built from deploy/Dockerfile (as opposed to kafka, postgres)."""
    return {name: svc for name, svc in services(compose).items() if "build" in svc}


def command_of(svc: dict[str, Any]) -> list[str]:
    command = svc.get("command")
    return command if isinstance(command, list) else []


def environment_of(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {p[0]: p[1] if len(p) > 1 else "" for p in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def depends_on_of(svc: dict[str, Any]) -> dict[str, str]:
    """depends_on as {target: condition}, for the short (list) and long (mapping) forms."""
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def containers_of(compose: Compose, script: str) -> dict[str, dict[str, Any]]:
    return {
        name: svc for name, svc in casebridge_containers(compose).items() if command_of(svc)[:1] == [script]
    }


# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, $$.
_INTERPOLATION = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")
_REQUIRED_VARIABLE = re.compile(r"^\$\{\w+:\?[^}]+\}$")


class MissingVariableError(Exception):
    pass


def interpolate(value: str, deploy_env: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"]
        current = deploy_env.get(name)
        if op in (":?", "?") and (current is None or (op == ":?" and not current)):
            raise MissingVariableError(f"{name}: {arg}")
        if op == ":-" and not current:
            return arg
        if op == "-" and current is None:
            return arg
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


def field_names(settings_cls: type[BaseModel]) -> set[str]:
    return {name.lower() for name in settings_cls.model_fields}


def field_for(variable: str, info: ServiceInfo) -> tuple[str | None, str | None]:
    """(field name, problem) for a CASEBRIDGE_ variable set on one of ``info``'s containers."""
    upper = variable.upper()
    if upper.startswith(info.env_prefix):
        return upper.removeprefix(info.env_prefix).lower(), None
    for other in SERVICES.values():
        if other is not info and upper.startswith(other.env_prefix):
            return None, f"{variable} is {other.script}'s setting, not {info.script}'s"
    return upper.removeprefix(COMMON_PREFIX).lower(), None


@contextlib.contextmanager
def process_environment(env: dict[str, str]) -> Iterator[None]:
    """os.environ as a container would see it: no CASEBRIDGE_ variables but ``env``'s."""
    kept = {k: v for k, v in os.environ.items() if not k.upper().startswith(COMMON_PREFIX)}
    with mock.patch.dict(os.environ, kept | env, clear=True):
        yield


def build_settings(
    settings_cls: type[BaseModel], svc: dict[str, Any], deploy_env: dict[str, str]
) -> BaseModel:
    env = {k: interpolate(v, deploy_env) for k, v in environment_of(svc).items()}
    with process_environment(env):
        return settings_cls()


def load_settings_class(info: ServiceInfo) -> type[BaseModel]:
    if info.script == "order-intake":
        from order_intake.settings import Settings

        return Settings
    module = pytest.importorskip(info.settings_module)
    settings_cls: type[BaseModel] = module.Settings
    return settings_cls


# --- the checks: each returns the problems it finds ------------------------------------


def schema_problems(compose: Compose) -> list[str]:
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(compose), key=lambda e: list(map(str, e.path)))
    ]


def script_problems(compose: Compose) -> list[str]:
    """Every Casebridge container runs one of the known services, as an argument list."""
    problems = []
    for name, svc in casebridge_containers(compose).items():
        command = svc.get("command")
        if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
            problems.append(f"{name}: command must be a non-empty list of strings, got {command!r}")
        elif command[0] not in SERVICES:
            problems.append(f"{name}: {command[0]!r} is not a Casebridge service script")
    return problems


def env_problems(compose: Compose, info: ServiceInfo, settings_cls: type[BaseModel]) -> list[str]:
    fields = field_names(settings_cls)
    problems = []
    for name, svc in containers_of(compose, info.script).items():
        for variable in environment_of(svc):
            if not variable.upper().startswith(COMMON_PREFIX):
                continue
            field, problem = field_for(variable, info)
            if problem:
                problems.append(f"{name}: {problem}")
            elif field not in fields:
                problems.append(f"{name}: {variable} is not a setting of {info.script} (no field {field!r})")
    return problems


def settings_problems(compose: Compose, info: ServiceInfo, settings_cls: type[BaseModel]) -> list[str]:
    """The container's environment must build Settings, and only with the deployer's secrets."""
    problems = []
    for name, svc in containers_of(compose, info.script).items():
        try:
            build_settings(settings_cls, svc, {})
        except (ValidationError, ValueError, MissingVariableError):
            pass
        else:
            problems.append(f"{name}: starts without any deployer-supplied secret")
        try:
            build_settings(settings_cls, svc, DEPLOYER_ENV)
        except (ValidationError, ValueError, MissingVariableError) as exc:
            problems.append(f"{name}: its environment does not build {info.script}'s Settings: {exc}")
    return problems


def secret_problems(compose: Compose, info: ServiceInfo, settings_cls: type[BaseModel]) -> list[str]:
    """Secret settings and database passwords come from required variables, never literals."""
    secret_fields = {
        name.lower()
        for name, field in settings_cls.model_fields.items()
        if field.annotation is SecretStr or isinstance(field.default, SecretStr)
    }
    problems = []
    for name, svc in containers_of(compose, info.script).items():
        for variable, value in environment_of(svc).items():
            if not variable.upper().startswith(COMMON_PREFIX):
                continue
            field, _ = field_for(variable, info)
            if field in secret_fields and not _REQUIRED_VARIABLE.match(value):
                problems.append(f"{name}: {variable} must be a required variable ${{NAME:?...}}")
            password = re.search(r"://[^/@:]+:([^@]*)@", value)
            if password and not _REQUIRED_VARIABLE.match(password.group(1)):
                problems.append(f"{name}: the password in {variable} must be a required variable")
    return problems


def one_shot_services(compose: Compose) -> set[str]:
    return {
        target
        for svc in services(compose).values()
        for target, condition in depends_on_of(svc).items()
        if condition == "service_completed_successfully"
    }


def healthcheck_problems(compose: Compose) -> list[str]:
    one_shot = one_shot_services(compose)
    problems = []
    for name, svc in services(compose).items():
        if name in one_shot:
            if svc.get("restart", "no") != "no":
                problems.append(f"{name}: runs once (others wait for it to finish) but restarts")
            continue
        check = svc.get("healthcheck")
        if not check or check.get("disable") or not check.get("test") or check["test"] in (["NONE"], "NONE"):
            problems.append(f"{name}: long-running service without a healthcheck")
    for name, svc in services(compose).items():
        for target, condition in depends_on_of(svc).items():
            target_svc = services(compose).get(target) or {}
            if condition == "service_healthy" and not target_svc.get("healthcheck"):
                problems.append(f"{name}: waits for {target} to be healthy, which has no healthcheck")
    return problems


def layout_problems(compose: Compose, info: ServiceInfo) -> list[str]:
    """<svc>-migrate runs `db upgrade`; <svc>-api (and -worker) wait for it to succeed."""
    all_services = services(compose)
    expected = {f"{info.script}-migrate": ["db", "upgrade"], f"{info.script}-api": ["api"]}
    if info.has_worker:
        expected[f"{info.script}-worker"] = ["worker"]
    problems = []
    for name, args in expected.items():
        svc = all_services.get(name)
        if svc is None:
            problems.append(f"{name}: missing")
            continue
        if command_of(svc) != [info.script, *args]:
            problems.append(f"{name}: command should be {[info.script, *args]}, is {svc.get('command')}")
        if not name.endswith("-migrate"):
            condition = depends_on_of(svc).get(f"{info.script}-migrate")
            if condition != "service_completed_successfully":
                problems.append(
                    f"{name}: must depend on {info.script}-migrate with "
                    f"condition service_completed_successfully (has {condition})"
                )
    return problems


def port_problems(compose: Compose, info: ServiceInfo, settings: Any) -> list[str]:
    """The api publishes and probes its settings' port; the worker probes its operations port
    (``/healthz``: its ``/metrics`` wants the metrics token)."""
    problems = []
    for name, svc in containers_of(compose, info.script).items():
        role = command_of(svc)[1:2]
        probe = " ".join(map(str, (svc.get("healthcheck") or {}).get("test") or []))
        if role == ["api"]:
            url = f"http://127.0.0.1:{settings.port}/readyz"
            if url not in probe:
                problems.append(f"{name}: healthcheck should GET {url}: {probe!r}")
            targets = {
                str(p.get("target")) if isinstance(p, dict) else str(p).rsplit(":", 1)[-1].split("/")[0]
                for p in svc.get("ports") or []
            }
            if str(settings.port) not in targets:
                problems.append(f"{name}: port {settings.port} is not published ({svc.get('ports')})")
        elif role == ["worker"]:
            url = f"http://127.0.0.1:{settings.worker_metrics_port}/healthz"
            if url not in probe:
                problems.append(f"{name}: healthcheck should GET {url}: {probe!r}")
    return problems


def _console_script(script: str) -> Any:
    matches = entry_points(group="console_scripts", name=script)
    return next(iter(matches), None)


def _help_exit_code(app: Any, script: str, args: list[str]) -> tuple[int | None, str]:
    argv = [*args, "--help"]
    if isinstance(app, typer.Typer):
        result = typer.testing.CliRunner().invoke(app, argv)
        return result.exit_code, result.output
    if isinstance(app, click.Command):
        result = click.testing.CliRunner().invoke(app, argv)
        return result.exit_code, result.output
    if callable(app):  # a main() that parses sys.argv itself
        out = io.StringIO()
        code: int | None = 0
        with (
            mock.patch.object(sys, "argv", [script, *argv]),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(out),
        ):
            try:
                app()
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        return code, out.getvalue()
    return None, f"{app!r} is neither a typer/click app nor callable"


def command_problems(compose: Compose, info: ServiceInfo) -> list[str]:
    entry = _console_script(info.script)
    if entry is None:
        return [f"{info.script}: no such console script installed"]
    if entry.value.split(":")[0].split(".")[0] != info.package:
        return [f"{info.script}: console script {entry.value!r} is not in package {info.package}"]
    app = entry.load()
    problems = []
    for name, svc in containers_of(compose, info.script).items():
        args = command_of(svc)[1:]
        code, output = _help_exit_code(app, info.script, args)
        if code != 0:
            problems.append(f"{name}: `{info.script} {' '.join(args)}` is not a command: {output[-500:]}")
    return problems


def depends_on_problems(compose: Compose) -> list[str]:
    known = set(services(compose))
    problems = []
    for name, svc in services(compose).items():
        for target in depends_on_of(svc):
            if target not in known:
                problems.append(f"{name}: depends on {target!r}, which is not a service")
            elif target == name:
                problems.append(f"{name}: depends on itself")
    return problems


def database_problems(compose: Compose, init_sql: str) -> list[str]:
    """Each service has its own database, created by deploy/postgres-init.sql, mounted for the image."""
    created = set(re.findall(r"^\s*CREATE DATABASE\s+(\w+)", init_sql, re.IGNORECASE | re.MULTILINE))
    problems = []
    owner: dict[str, str] = {}
    for info in SERVICES.values():
        for name, svc in containers_of(compose, info.script).items():
            url = interpolate(environment_of(svc).get(info.env_prefix + "DATABASE_URL", ""), DEPLOYER_ENV)
            match = re.fullmatch(r"postgresql\+asyncpg://[^@]+@postgres:5432/(\w+)", url)
            if not match:
                problems.append(f"{name}: {info.env_prefix}DATABASE_URL is not a postgres URL: {url!r}")
                continue
            database = match.group(1)
            if database not in created:
                problems.append(f"{name}: database {database} is not created by {POSTGRES_INIT.name}")
            if owner.setdefault(database, info.script) != info.script:
                problems.append(f"{name}: database {database} is also {owner[database]}'s")
    postgres = services(compose).get("postgres") or {}
    mounts = [str(v) for v in postgres.get("volumes") or []]
    if not any("deploy/postgres-init.sql:/docker-entrypoint-initdb.d/" in m for m in mounts):
        problems.append("postgres: deploy/postgres-init.sql is not mounted in /docker-entrypoint-initdb.d")
    return problems


def dockerfile_problems(
    compose: Compose, dockerfile: str, production_requirements: str | None = None
) -> list[str]:
    """The image installs requirements/production.in, which lists every service the file runs.

    (tests/test_production_image.py checks the rest: stages, no development-only packages.)
    """
    if production_requirements is None:
        production_requirements = PRODUCTION_REQUIREMENTS.read_text()
    installed = set(re.findall(r"^\./(services/[\w-]+)\s*$", production_requirements, re.MULTILINE))
    problems = []
    if not re.search(r"^FROM\s+python:3\.11-slim\b", dockerfile, re.MULTILINE):
        problems.append("deploy/Dockerfile: base image must be python:3.11-slim")
    if not re.search(r"pip install -c constraints\.txt -r requirements/production\.in\b", dockerfile):
        problems.append(
            "deploy/Dockerfile: must install with -c constraints.txt -r requirements/production.in"
        )
    if not re.search(r"^\./shared\s*$", production_requirements, re.MULTILINE):
        problems.append("requirements/production.in: does not install shared")
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("deploy/Dockerfile: must end as a non-root USER")
    used = {command_of(svc)[0] for svc in casebridge_containers(compose).values() if command_of(svc)}
    for script in sorted(used & set(SERVICES)):
        if SERVICES[script].directory not in installed:
            problems.append(f"requirements/production.in: does not install {SERVICES[script].directory}")
    for name, svc in casebridge_containers(compose).items():
        build = svc["build"] if isinstance(svc["build"], dict) else {"context": svc["build"]}
        if build.get("context") != "." or build.get("dockerfile") != "deploy/Dockerfile":
            problems.append(f"{name}: must build deploy/Dockerfile from the repository root")
    return problems


# --- the file as it is -----------------------------------------------------------------


@pytest.fixture
def compose() -> Compose:
    return load_compose()


@pytest.fixture(params=sorted(SERVICES))
def service(request: pytest.FixtureRequest) -> ServiceInfo:
    info: ServiceInfo = SERVICES[request.param]
    return info


def test_vendored_schema_is_the_published_one() -> None:
    digest = hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()
    assert digest == SCHEMA_SHA256, "tests/data/compose-spec.json changed: update its provenance above"
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_FILE.read_text()))


def test_compose_file_follows_the_compose_specification(compose: Compose) -> None:
    assert schema_problems(compose) == []


def test_every_container_runs_a_known_service(compose: Compose) -> None:
    assert script_problems(compose) == []
    assert {command_of(svc)[0] for svc in casebridge_containers(compose).values()} == set(SERVICES)


def test_variables_are_settings_of_their_service(compose: Compose, service: ServiceInfo) -> None:
    settings_cls = load_settings_class(service)
    assert containers_of(compose, service.script)
    assert env_problems(compose, service, settings_cls) == []


def test_environment_builds_production_settings(compose: Compose, service: ServiceInfo) -> None:
    settings_cls = load_settings_class(service)
    assert settings_problems(compose, service, settings_cls) == []
    assert secret_problems(compose, service, settings_cls) == []
    for svc in containers_of(compose, service.script).values():
        settings: Any = build_settings(settings_cls, svc, DEPLOYER_ENV)
        assert settings.environment.value == "production"
        assert settings.host == "0.0.0.0"  # noqa: S104 (in a container: that is the point)
        assert settings.database_url.startswith("postgresql+asyncpg://")
        assert settings.kafka_bootstrap_servers == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
        assert settings.kafka_replication_factor == 3
        assert settings.kafka_enable_idempotence is True
        assert settings.token_issuer == "http://order-intake-api:8001"
        # /metrics is not open in production: every api and worker wants the scrape token.
        assert settings.metrics_token.get_secret_value() == DEPLOYER_ENV["CASEBRIDGE_METRICS_TOKEN"]
        assert port_problems(compose, service, settings) == []


def test_long_running_services_have_healthchecks(compose: Compose) -> None:
    assert healthcheck_problems(compose) == []
    assert {"kafka-1", "kafka-2", "kafka-3", "postgres"} <= set(services(compose)) - one_shot_services(
        compose
    )


def test_each_service_migrates_before_it_starts(compose: Compose, service: ServiceInfo) -> None:
    assert layout_problems(compose, service) == []


def test_commands_are_real_console_scripts_and_subcommands(compose: Compose, service: ServiceInfo) -> None:
    if service.script != "order-intake":
        pytest.importorskip(service.package)
    assert command_problems(compose, service) == []


def test_depends_on_targets_exist(compose: Compose) -> None:
    assert depends_on_problems(compose) == []


def test_each_service_has_its_own_database(compose: Compose) -> None:
    assert database_problems(compose, POSTGRES_INIT.read_text()) == []


def test_dockerfile_installs_every_service_and_drops_root(compose: Compose) -> None:
    assert dockerfile_problems(compose, DOCKERFILE.read_text()) == []


def _compose_cli() -> list[str] | None:
    beside_python = Path(sys.executable).with_name("docker-compose")
    if beside_python.exists():
        return [str(beside_python)]
    if found := shutil.which("docker-compose"):
        return [found]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60).returncode == 0
    ):
        return [docker, "compose"]
    return None


def test_docker_compose_accepts_the_file_when_it_is_installed(tmp_path: Path) -> None:
    """The real Compose CLI (no engine needed for `config`), where a developer has it."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose CLI here; the schema test covers the file")
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    no_dotenv = tmp_path / "empty.env"  # a developer's .env must not supply the secrets
    no_dotenv.write_text("")
    run = [*cli, "--project-directory", str(ROOT), "--env-file", str(no_dotenv)]
    run += ["-f", str(COMPOSE_FILE), "config", "--quiet"]
    ok = subprocess.run(run, env=base | DEPLOYER_ENV, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(run, env=base, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr


# --- Kafka: principals and ACLs (issue 27) ------------------------------------------------

Acl = tuple[str, str, str, str]  # principal, operation, resource type, name


def parse_acls(text: str) -> set[Acl]:
    """deploy/kafka/acls.txt: ``principal operation resource name`` per line, # comments."""
    rules: set[Acl] = set()
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            assert len(fields) == 4, f"acls.txt: not 'principal operation resource name': {line!r}"
            rules.add((fields[0], fields[1], fields[2], fields[3]))
    return rules


def kafka_principal(compose: Compose, info: ServiceInfo) -> str:
    env = environment_of(services(compose).get(f"{info.script}-worker") or {})
    return env.get(f"{info.env_prefix}KAFKA_SASL_USERNAME", "")


def needed_acls(compose: Compose) -> set[Acl]:
    """What each service's worker uses, from its bootstrap.py, as the ACLs it needs."""
    import importlib

    from casebridge_shared.inbox import dead_letter_topic

    rules: set[Acl] = set()
    for info in SERVICES.values():
        bootstrap = importlib.import_module(f"{info.package}.bootstrap")
        principal = kafka_principal(compose, info)
        for topic in (*bootstrap.PUBLISHED_TOPICS, dead_letter_topic(bootstrap.CONSUMER_GROUP)):
            rules.add((principal, "Write", "topic", topic))
        for topic in bootstrap.CONSUMED_TOPICS:
            rules.add((principal, "Read", "topic", topic))
        rules.add((principal, "Read", "group", bootstrap.CONSUMER_GROUP))
    return rules


def acl_problems(compose: Compose, acl_text: str) -> list[str]:
    """The ACL file grants each service exactly what its code uses: nothing missing, nothing more."""
    granted, needed = parse_acls(acl_text), needed_acls(compose)
    problems = [f"acls.txt: missing {' '.join(rule)}" for rule in sorted(needed - granted)]
    problems += [
        f"acls.txt: grants more than the code uses: {' '.join(rule)}" for rule in sorted(granted - needed)
    ]
    return problems


@dataclass(frozen=True)
class KafkaDocRow:
    """One service's row of the table in docs/kafka-acls.md."""

    principal: str
    writes: frozenset[str]
    dead_letters: frozenset[str]
    reads: frozenset[str]
    groups: frozenset[str]


def kafka_doc_rows(doc: str) -> dict[str, KafkaDocRow]:
    """The table under "Each service's topics and groups" in docs/kafka-acls.md, by service."""
    section = doc.split("## Each service's topics and groups", 1)[1].split("\n#", 1)[0]
    rows: dict[str, KafkaDocRow] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not cells[1].startswith("`"):
            continue
        names = [frozenset(re.findall(r"`([^`]+)`", cell)) for cell in cells[1:]]
        (principal,) = names[0]
        rows[cells[0]] = KafkaDocRow(principal, *names[1:])
    return rows


def doc_table_acls(doc: str) -> set[Acl]:
    """The table in docs/kafka-acls.md, as the ACLs it says each principal has."""
    rules: set[Acl] = set()
    for row in kafka_doc_rows(doc).values():
        rules |= {(row.principal, "Write", "topic", n) for n in row.writes | row.dead_letters}
        rules |= {(row.principal, "Read", "topic", n) for n in row.reads}
        rules |= {(row.principal, "Read", "group", n) for n in row.groups}
    return rules


def kafka_doc_problems(doc: str) -> list[str]:
    """Where docs/kafka-acls.md differs from what each service's code declares (bootstrap.py)."""
    import importlib

    from casebridge_shared.inbox import dead_letter_topic

    rows = kafka_doc_rows(doc)
    problems = [f"kafka-acls.md: no row for {name}" for name in sorted(set(SERVICES) - set(rows))]
    problems += [f"kafka-acls.md: {name} is no service" for name in sorted(set(rows) - set(SERVICES))]
    for name, info in SERVICES.items():
        row = rows.get(name)
        if row is None:
            continue
        bootstrap = importlib.import_module(f"{info.package}.bootstrap")
        declared = {
            "writes": frozenset(bootstrap.PUBLISHED_TOPICS),
            "dead-letter topic": frozenset({dead_letter_topic(bootstrap.CONSUMER_GROUP)}),
            "reads": frozenset(bootstrap.CONSUMED_TOPICS),
            "consumer group": frozenset({bootstrap.CONSUMER_GROUP}),
        }
        documented = {
            "writes": row.writes,
            "dead-letter topic": row.dead_letters,
            "reads": row.reads,
            "consumer group": row.groups,
        }
        for column, names in declared.items():
            if documented[column] != names:
                problems.append(
                    f"kafka-acls.md: {name} {column} says {sorted(documented[column])}, "
                    f"the code {sorted(names)}"
                )
    return problems


def kafka_brokers(compose: Compose, *, active_only: bool = True) -> dict[str, dict[str, Any]]:
    """The Kafka nodes (services with KAFKA_PROCESS_ROLES), without those only a profile starts."""
    return {
        name: svc
        for name, svc in services(compose).items()
        if "KAFKA_PROCESS_ROLES" in environment_of(svc) and not (active_only and svc.get("profiles"))
    }


def listener_protocols(broker_env: dict[str, str]) -> dict[str, str]:
    return dict(
        item.split(":", 1)
        for item in broker_env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "").split(",")
        if item
    )


def kafka_security_problems(compose: Compose) -> list[str]:
    """Every broker authenticates everyone and denies by default; each service is its own principal."""
    problems = []
    brokers = kafka_brokers(compose)
    if not brokers:
        problems.append("no Kafka broker")
    jaas_configs: list[str] = []
    for broker, svc in brokers.items():
        kafka_env = environment_of(svc)
        protocols = listener_protocols(kafka_env)
        for listener, protocol in protocols.items():
            if not protocol.startswith("SASL_"):
                problems.append(f"{broker}: listener {listener} is {protocol}, without authentication")
            else:
                jaas_configs.append(
                    kafka_env.get(f"KAFKA_LISTENER_NAME_{listener}_PLAIN_SASL_JAAS_CONFIG", "")
                )
        for listener in ("CLIENTS", "EXTERNAL"):
            if protocols.get(listener) != "SASL_SSL":
                problems.append(f"{broker}: the {listener} listener must be SASL_SSL")
        expected_authorizer = {
            "KAFKA_AUTHORIZER_CLASS_NAME": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND": "false",
            "KAFKA_SUPER_USERS": "User:admin",
            "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        }
        for variable, value in expected_authorizer.items():
            if kafka_env.get(variable) != value:
                problems.append(f"{broker}: {variable} must be {value!r}, is {kafka_env.get(variable)!r}")
    # The services' users on every listener clients use (CLIENTS and EXTERNAL, each broker).
    client_jaas = [
        environment_of(svc).get(f"KAFKA_LISTENER_NAME_{listener}_PLAIN_SASL_JAAS_CONFIG", "")
        for svc in brokers.values()
        for listener in ("CLIENTS", "EXTERNAL")
    ]
    principals: dict[str, str] = {}
    for info in SERVICES.values():
        principal = kafka_principal(compose, info)
        if not principal or principal == "admin":
            problems.append(
                f"{info.script}: needs its own Kafka principal ({info.env_prefix}KAFKA_SASL_USERNAME)"
            )
            continue
        if principal in principals:
            problems.append(f"{info.script}: shares Kafka principal {principal} with {principals[principal]}")
        principals[principal] = info.script
        for jaas in client_jaas:
            if not re.search(rf'user_{re.escape(principal)}="\$\{{KAFKA_\w+_PASSWORD:\?', jaas):
                problems.append(f"kafka: no PLAIN user {principal} (with a required password variable)")
                break
        for name, svc in containers_of(compose, info.script).items():
            env = environment_of(svc)
            if env.get("CASEBRIDGE_KAFKA_SECURITY_PROTOCOL") != "SASL_SSL":
                problems.append(f"{name}: must connect to Kafka with SASL_SSL")
            if env.get("CASEBRIDGE_KAFKA_TOPIC_CREATION") != "never":
                problems.append(f"{name}: must not create topics (kafka_topic_creation=never)")
            if env.get(f"{info.env_prefix}KAFKA_SASL_USERNAME") != principal:
                problems.append(f"{name}: another Kafka principal than its worker's")
            if name.endswith(("-api", "-worker")):
                if depends_on_of(svc).get("kafka-init") != "service_completed_successfully":
                    problems.append(f"{name}: must wait for kafka-init (topics and ACLs)")
                cafile = env.get("CASEBRIDGE_KAFKA_SSL_CAFILE", "")
                if not any(str(v).endswith(f":{cafile}:ro") for v in svc.get("volumes") or []):
                    problems.append(f"{name}: the Kafka CA {cafile!r} is not mounted")
    init = services(compose).get("kafka-init") or {}
    if command_of(init) != ["sh", "/opt/casebridge-kafka/kafka-init.sh"]:
        problems.append("kafka-init: must run deploy/kafka/kafka-init.sh")
    if "./deploy/kafka:/opt/casebridge-kafka:ro" not in (init.get("volumes") or []):
        problems.append("kafka-init: must mount deploy/kafka (acls.txt) at /opt/casebridge-kafka")
    return problems


# --- each check can fail ---------------------------------------------------------------

ORDER_INTAKE = SERVICES["order-intake"]


def _order_intake_check(check: Callable[..., list[str]]) -> Callable[[Compose], list[str]]:
    from order_intake.settings import Settings

    return lambda c: check(c, ORDER_INTAKE, Settings)


def _env(c: Compose, name: str) -> dict[str, Any]:
    # A fresh mapping: the file shares one per service through a YAML anchor.
    c["services"][name]["environment"] = dict(c["services"][name]["environment"])
    env: dict[str, Any] = c["services"][name]["environment"]
    return env


def _order_intake_port_problems(c: Compose) -> list[str]:
    from order_intake.settings import Settings

    return port_problems(
        c, ORDER_INTAKE, build_settings(Settings, c["services"]["order-intake-api"], DEPLOYER_ENV)
    )


MUTATIONS: dict[str, tuple[Callable[[Compose], None], Callable[[Compose], list[str]], str]] = {
    "unknown key": (
        lambda c: c["services"]["order-intake-api"].update(restart_policy="always"),
        schema_problems,
        "restart_policy",
    ),
    "bad depends_on condition": (
        lambda c: c["services"]["order-intake-api"]["depends_on"]["kafka-init"].update(
            condition="service_up"
        ),
        schema_problems,
        "service_up",
    ),
    "bogus CASEBRIDGE_ variable": (
        lambda c: _env(c, "order-intake-api").update(CASEBRIDGE_ORDER_INTAKE_BOGUS_FIELD="1"),
        _order_intake_check(env_problems),
        "CASEBRIDGE_ORDER_INTAKE_BOGUS_FIELD",
    ),
    "misspelt common variable": (
        lambda c: _env(c, "order-intake-worker").update(CASEBRIDGE_KAFKA_BOOTSTRAP_SERVER="kafka:9092"),
        _order_intake_check(env_problems),
        "CASEBRIDGE_KAFKA_BOOTSTRAP_SERVER",
    ),
    "another service's variable": (
        lambda c: _env(c, "order-intake-api").update(CASEBRIDGE_NOTIFIER_PORT="8003"),
        _order_intake_check(env_problems),
        "notifier's setting",
    ),
    "value that does not parse": (
        lambda c: _env(c, "order-intake-api").update(CASEBRIDGE_ORDER_INTAKE_PORT="eighty"),
        _order_intake_check(settings_problems),
        "does not build",
    ),
    "development secret left in": (
        lambda c: _env(c, "order-intake-migrate").update(
            CASEBRIDGE_ORDER_INTAKE_BOOTSTRAP_ADMIN_PASSWORD="changethis"
        ),
        _order_intake_check(settings_problems),
        "does not build",
    ),
    "nothing required from the deployer": (
        lambda c: _env(c, "order-intake-migrate").update(
            CASEBRIDGE_ORDER_INTAKE_DATABASE_URL="postgresql+asyncpg://casebridge:pw@postgres:5432/order_intake",
            CASEBRIDGE_ORDER_INTAKE_BOOTSTRAP_ADMIN_EMAIL="admin@example.com",
            CASEBRIDGE_ORDER_INTAKE_BOOTSTRAP_ADMIN_PASSWORD="a-literal-password-in-the-file",
            CASEBRIDGE_ORDER_INTAKE_SIGNING_KEYS_SECRET="hunter3",
            CASEBRIDGE_ORDER_INTAKE_KAFKA_SASL_PASSWORD="another-literal-password",
            CASEBRIDGE_ORDER_INTAKE_SERVICE_CLIENT_SECRET="a-literal-service-secret",
            CASEBRIDGE_METRICS_TOKEN="a-literal-metrics-token",
        ),
        _order_intake_check(settings_problems),
        "order-intake-migrate: starts without any deployer-supplied secret",
    ),
    "literal secret": (
        lambda c: _env(c, "order-intake-api").update(
            CASEBRIDGE_ORDER_INTAKE_BOOTSTRAP_ADMIN_PASSWORD="hunter2"
        ),
        _order_intake_check(secret_problems),
        "BOOTSTRAP_ADMIN_PASSWORD must be a required variable",
    ),
    "literal database password": (
        lambda c: _env(c, "order-intake-api").update(
            CASEBRIDGE_ORDER_INTAKE_DATABASE_URL="postgresql+asyncpg://casebridge:pw@postgres:5432/order_intake"
        ),
        _order_intake_check(secret_problems),
        "password in CASEBRIDGE_ORDER_INTAKE_DATABASE_URL",
    ),
    "healthcheck removed": (
        lambda c: c["services"]["order-intake-worker"].pop("healthcheck"),
        healthcheck_problems,
        "order-intake-worker: long-running service without a healthcheck",
    ),
    "healthcheck disabled": (
        lambda c: c["services"]["kafka-2"].update(healthcheck={"disable": True}),
        healthcheck_problems,
        "kafka-2: long-running service without a healthcheck",
    ),
    "one-shot restarts": (
        lambda c: c["services"]["order-intake-migrate"].update(restart="unless-stopped"),
        healthcheck_problems,
        "order-intake-migrate: runs once",
    ),
    "healthcheck on the wrong port": (
        lambda c: c["services"]["order-intake-api"].update(
            healthcheck={"test": ["CMD", "curl", "-f", "http://127.0.0.1:8002/readyz"]}
        ),
        _order_intake_port_problems,
        "healthcheck should GET http://127.0.0.1:8001/readyz",
    ),
    "port not published": (
        lambda c: c["services"]["order-intake-api"].update(ports=["8080:8080"]),
        _order_intake_port_problems,
        "port 8001 is not published",
    ),
    "api does not wait for migrations": (
        lambda c: c["services"]["order-intake-api"]["depends_on"].pop("order-intake-migrate"),
        lambda c: layout_problems(c, ORDER_INTAKE),
        "order-intake-api: must depend on order-intake-migrate",
    ),
    "no such subcommand": (
        lambda c: c["services"]["order-intake-worker"].update(command=["order-intake", "serve"]),
        lambda c: command_problems(c, ORDER_INTAKE),
        "`order-intake serve` is not a command",
    ),
    "no such sub-subcommand": (
        lambda c: c["services"]["order-intake-migrate"].update(command=["order-intake", "db", "migrate"]),
        lambda c: command_problems(c, ORDER_INTAKE),
        "`order-intake db migrate` is not a command",
    ),
    "no such console script": (
        lambda c: c["services"]["order-intake-api"].update(command=["order-intke", "api"]),
        script_problems,
        "'order-intke' is not a Casebridge service script",
    ),
    "shell-string command": (
        lambda c: c["services"]["order-intake-api"].update(command="order-intake api"),
        script_problems,
        "must be a non-empty list",
    ),
    "depends_on a missing service": (
        lambda c: c["services"]["notifier-api"]["depends_on"].update(redis={"condition": "service_healthy"}),
        depends_on_problems,
        "notifier-api: depends on 'redis'",
    ),
    "database nobody creates": (
        lambda c: _env(c, "notifier-api").update(
            CASEBRIDGE_NOTIFIER_DATABASE_URL="postgresql+asyncpg://casebridge:${POSTGRES_PASSWORD:?x}@postgres:5432/notify"
        ),
        lambda c: database_problems(c, POSTGRES_INIT.read_text()),
        "database notify is not created",
    ),
    "two services, one database": (
        lambda c: _env(c, "notifier-api").update(
            CASEBRIDGE_NOTIFIER_DATABASE_URL="postgresql+asyncpg://casebridge:${POSTGRES_PASSWORD:?x}@postgres:5432/order_intake"
        ),
        lambda c: database_problems(c, POSTGRES_INIT.read_text()),
        "database order_intake is also order-intake's",
    ),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_each_check_reports_what_it_is_for(compose: Compose, case: str) -> None:
    mutate, check, expected = MUTATIONS[case]
    assert not [p for p in check(compose) if expected in p], "the unmodified file must pass this check"
    broken = copy.deepcopy(compose)
    mutate(broken)
    problems = check(broken)
    assert any(expected in p for p in problems), problems


DOCKERFILE_MUTATIONS = {
    "service not in the image": (
        PRODUCTION_REQUIREMENTS,
        ("./services/notifier\n", ""),
        "does not install services/notifier",
    ),
    "runs as root": (DOCKERFILE, ("USER casebridge:casebridge", "USER root"), "non-root USER"),
    "no constraints": (DOCKERFILE, ("-c constraints.txt", ""), "must install with -c constraints.txt"),
    "another base image": (DOCKERFILE, ("FROM python:3.11-slim", "FROM python:3.13"), "python:3.11-slim"),
}


@pytest.mark.parametrize("case", sorted(DOCKERFILE_MUTATIONS))
def test_dockerfile_check_reports_what_it_is_for(compose: Compose, case: str) -> None:
    mutated, (old, new), expected = DOCKERFILE_MUTATIONS[case]
    texts = {path: path.read_text() for path in (DOCKERFILE, PRODUCTION_REQUIREMENTS)}
    assert old in texts[mutated]
    assert not [p for p in dockerfile_problems(compose, *texts.values()) if expected in p]
    texts[mutated] = texts[mutated].replace(old, new)
    assert any(expected in p for p in dockerfile_problems(compose, *texts.values())), case


def test_interpolation_follows_compose() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET}-${UNSET:-d}-${EMPTY:-d}-${EMPTY-d}-$$SET", env) == "v-d-d--$SET"
    assert interpolate("${SET:?no}", env) == "v"
    with pytest.raises(MissingVariableError, match="EMPTY"):
        interpolate("${EMPTY:?set it}", env)
    with pytest.raises(MissingVariableError, match="UNSET"):
        interpolate("${UNSET?set it}", env)


def test_kafka_acls_are_what_each_service_uses(compose: Compose) -> None:
    for info in SERVICES.values():
        pytest.importorskip(info.package)
    assert acl_problems(compose, KAFKA_ACLS.read_text()) == []


def test_kafka_acl_table_in_the_docs_matches_the_file() -> None:
    assert doc_table_acls(KAFKA_ACLS_DOC.read_text()) == parse_acls(KAFKA_ACLS.read_text())


def test_kafka_acl_doc_matches_each_services_code() -> None:
    for info in SERVICES.values():
        pytest.importorskip(info.package)
    doc = KAFKA_ACLS_DOC.read_text()
    assert kafka_doc_problems(doc) == []
    # And it notices: a topic a service reads left out, a group renamed, a service missing.
    left_out = doc.replace(
        "| `casebridge.orders.v1`, `casebridge.catalog.v1`, `casebridge.identity.v1` | `case-handling` |",
        "| `casebridge.orders.v1`, `casebridge.catalog.v1` | `case-handling` |",
    )
    assert left_out != doc
    assert kafka_doc_problems(left_out) == [
        "kafka-acls.md: case-handling reads says ['casebridge.catalog.v1', 'casebridge.orders.v1'], the code "
        "['casebridge.catalog.v1', 'casebridge.identity.v1', 'casebridge.orders.v1']"
    ]
    renamed = doc.replace("| `notifier` |\n", "| `notifications` |\n")
    assert renamed != doc
    renamed_problems = [p.split(" says")[0] for p in kafka_doc_problems(renamed)]
    assert renamed_problems == ["kafka-acls.md: notifier consumer group"]
    without = "\n".join(line for line in doc.splitlines() if not line.startswith("| notifier |"))
    assert kafka_doc_problems(without) == ["kafka-acls.md: no row for notifier"]


def test_kafka_authenticates_everyone_and_denies_by_default(compose: Compose) -> None:
    assert kafka_security_problems(compose) == []
    env = environment_of(services(compose)["kafka-init"])
    for broker in kafka_brokers(compose).values():
        assert env["TOPIC_PARTITIONS"] == environment_of(broker)["KAFKA_NUM_PARTITIONS"]
    settings_env = environment_of(services(compose)["order-intake-worker"])
    assert env["TOPIC_PARTITIONS"] == settings_env["CASEBRIDGE_KAFKA_TOPIC_PARTITIONS"]


ACL_MUTATIONS = {
    "a service may write another's topic": (
        "case_handling     Write      topic     casebridge.orders.v1\n",
        "grants more than the code uses: case_handling Write topic casebridge.orders.v1",
    ),
    "a read is missing": (None, "missing notifier Read topic casebridge.identity.v1"),
}


@pytest.mark.parametrize("case", sorted(ACL_MUTATIONS))
def test_acl_check_reports_what_it_is_for(compose: Compose, case: str) -> None:
    for info in SERVICES.values():
        pytest.importorskip(info.package)
    added, expected = ACL_MUTATIONS[case]
    text = KAFKA_ACLS.read_text()
    if added is None:
        line = next(x for x in text.splitlines(keepends=True) if "notifier" in x and "identity" in x)
        text = text.replace(line, "")
    else:
        text += added
    assert any(expected in p for p in acl_problems(compose, text)), acl_problems(compose, text)


def _rename_external_user(c: Compose, broker: str, user: str) -> None:
    env = _env(c, broker)
    key = "KAFKA_LISTENER_NAME_EXTERNAL_PLAIN_SASL_JAAS_CONFIG"
    env[key] = env[key].replace(f"user_{user}=", f"user_{user}_renamed=")


KAFKA_MUTATIONS: dict[str, tuple[Callable[[Compose], None], str]] = {
    "plaintext listener": (
        lambda c: _env(c, "kafka-1").update(
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,CLIENTS:SASL_SSL,EXTERNAL:SASL_SSL"
        ),
        "kafka-1: listener CONTROLLER is PLAINTEXT",
    ),
    "external listener without TLS": (
        lambda c: _env(c, "kafka-2").update(
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:SASL_SSL,CLIENTS:SASL_SSL,EXTERNAL:SASL_PLAINTEXT"
        ),
        "kafka-2: the EXTERNAL listener must be SASL_SSL",
    ),
    "everyone allowed on one broker": (
        lambda c: _env(c, "kafka-3").update(KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND="true"),
        "kafka-3: KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND must be 'false'",
    ),
    "a service's user missing on the external listener": (
        lambda c: _rename_external_user(c, "kafka-3", "notifier"),
        "kafka: no PLAIN user notifier",
    ),
    "shared principal": (
        lambda c: [
            _env(c, name).update(CASEBRIDGE_NOTIFIER_KAFKA_SASL_USERNAME="order_intake")
            for name in ("notifier-api", "notifier-worker", "notifier-migrate")
        ],
        "shares Kafka principal order_intake",
    ),
    "service creates topics": (
        lambda c: _env(c, "case-handling-worker").update(CASEBRIDGE_KAFKA_TOPIC_CREATION="auto"),
        "case-handling-worker: must not create topics",
    ),
    "worker does not wait for kafka-init": (
        lambda c: c["services"]["notifier-worker"]["depends_on"].pop("kafka-init"),
        "notifier-worker: must wait for kafka-init",
    ),
}


@pytest.mark.parametrize("case", sorted(KAFKA_MUTATIONS))
def test_kafka_security_check_reports_what_it_is_for(compose: Compose, case: str) -> None:
    mutate, expected = KAFKA_MUTATIONS[case]
    assert not [p for p in kafka_security_problems(compose) if expected in p]
    broken = copy.deepcopy(compose)
    mutate(broken)
    problems = kafka_security_problems(broken)
    assert any(expected in p for p in problems), problems


# --- the observability profile (issue 27, section 5) ------------------------------------


def observability_problems(compose: Compose, prometheus_config: dict[str, Any]) -> list[str]:
    """Prometheus scrapes every api and worker on its settings' port with the metrics token,
    loads the alert rules; Grafana gets the dashboards; neither runs without the profile."""
    problems = []
    all_services = services(compose)
    for name in ("prometheus", "grafana"):
        if "observability" not in (all_services.get(name) or {}).get("profiles", []):
            problems.append(f"{name}: should run only in the observability profile")
    prometheus = all_services.get("prometheus") or {}
    secret = (compose.get("secrets") or {}).get("metrics_token") or {}
    if secret.get("environment") != "CASEBRIDGE_METRICS_TOKEN" or "metrics_token" not in (
        prometheus.get("secrets") or []
    ):
        problems.append("prometheus: needs the metrics_token secret from CASEBRIDGE_METRICS_TOKEN")
    mounts = " ".join(map(str, prometheus.get("volumes") or []))
    for source in ("./deploy/prometheus/prometheus.yml:", "./deploy/prometheus/alerts.yml:"):
        if source not in mounts:
            problems.append(f"prometheus: {source.rstrip(':')} is not mounted")
    if "/etc/prometheus/alerts.yml" not in prometheus_config.get("rule_files", []):
        problems.append("prometheus.yml: does not load /etc/prometheus/alerts.yml")
    scraped: set[str] = set()
    for job in prometheus_config.get("scrape_configs", []):
        credentials = (job.get("authorization") or {}).get("credentials_file")
        if credentials != "/run/secrets/metrics_token":
            problems.append(f"prometheus.yml: job {job.get('job_name')} scrapes without the metrics token")
        scraped |= {t for config in job.get("static_configs", []) for t in config.get("targets", [])}
    for name, svc in casebridge_containers(compose).items():
        role = command_of(svc)[1:2]
        env = environment_of(svc)
        info = SERVICES[command_of(svc)[0]]
        if role == ["api"]:
            port = env.get(f"{info.env_prefix}PORT")
        elif role == ["worker"]:
            port = env.get(f"{info.env_prefix}WORKER_METRICS_PORT")
        else:
            continue
        if f"{name}:{port}" not in scraped:
            problems.append(f"prometheus.yml: {name}:{port} is not scraped")
    grafana_mounts = " ".join(map(str, (all_services.get("grafana") or {}).get("volumes") or []))
    if "./deploy/grafana/dashboards:" not in grafana_mounts:
        problems.append("grafana: the dashboards are not mounted")
    return problems


PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"


def test_the_observability_profile_scrapes_every_api_and_worker_with_the_token(compose: Compose) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert observability_problems(compose, config) == []
    # Each check reports what it is for.
    broken = copy.deepcopy(config)
    broken["scrape_configs"][1]["static_configs"][0]["targets"].pop()
    assert any("is not scraped" in p for p in observability_problems(compose, broken))
    broken = copy.deepcopy(config)
    del broken["scrape_configs"][0]["authorization"]
    assert any("without the metrics token" in p for p in observability_problems(compose, broken))
    unprofiled = copy.deepcopy(compose)
    del unprofiled["services"]["grafana"]["profiles"]
    assert any("grafana: should run only" in p for p in observability_problems(unprofiled, config))


# --- Kafka: three brokers in production, one on a laptop (issue 27, section 4) ---------------

LAPTOP_OVERRIDE = ROOT / "deploy" / "compose.laptop.yml"


def kafka_cluster_problems(compose: Compose, *, replication: int, min_isr: int) -> list[str]:
    """The brokers form one cluster with this replication; every client knows every broker."""
    problems = []
    brokers = kafka_brokers(compose)
    envs = {name: environment_of(svc) for name, svc in brokers.items()}
    if len(brokers) < replication:
        problems.append(f"{len(brokers)} broker(s) cannot hold {replication} replicas")
    if min_isr >= replication and replication > 1:
        problems.append(f"min.insync.replicas {min_isr} leaves no broker to lose of {replication}")
    node_ids = {name: env.get("KAFKA_NODE_ID", "") for name, env in envs.items()}
    if len(set(node_ids.values())) != len(node_ids):
        problems.append(f"brokers share a node id: {node_ids}")
    expected_voters = {f"{node_ids[name]}@{name}:9093" for name in brokers}
    per_broker = {
        "CLUSTER_ID": None,
        "KAFKA_CONTROLLER_QUORUM_VOTERS": None,
        "KAFKA_DEFAULT_REPLICATION_FACTOR": str(replication),
        "KAFKA_MIN_INSYNC_REPLICAS": str(min_isr),
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": str(replication),
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": str(replication),
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": str(min_isr),
    }
    for variable, wanted in per_broker.items():
        values = {name: env.get(variable) for name, env in envs.items()}
        if len(set(values.values())) > 1:
            problems.append(f"brokers differ in {variable}: {values}")
        for name, value in values.items():
            if wanted is not None and value != wanted:
                problems.append(f"{name}: {variable} must be {wanted}, is {value}")
    for name, env in envs.items():
        voters = set(env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "").split(","))
        if voters != expected_voters:
            problems.append(
                f"{name}: quorum voters {sorted(voters)}, the brokers are {sorted(expected_voters)}"
            )
    # What each broker tells clients inside the network; the clients' bootstrap lists all.
    internal = set()
    for name, env in envs.items():
        advertised = dict(
            item.split("://", 1) for item in env.get("KAFKA_ADVERTISED_LISTENERS", "").split(",") if item
        )
        if advertised.get("CLIENTS") != f"{name}:9092":
            problems.append(f"{name}: advertises CLIENTS at {advertised.get('CLIENTS')}, not {name}:9092")
        internal.add(f"{name}:9092")
    init_env = environment_of(services(compose).get("kafka-init") or {})
    bootstraps = {"kafka-init": init_env.get("BROKER_BOOTSTRAP", "")}
    bootstraps |= {
        name: environment_of(svc).get("CASEBRIDGE_KAFKA_BOOTSTRAP_SERVERS", "")
        for name, svc in casebridge_containers(compose).items()
    }
    for name, bootstrap in bootstraps.items():
        if set(bootstrap.split(",")) != internal:
            problems.append(f"{name}: bootstrap {bootstrap!r} is not every broker {sorted(internal)}")
    # Topics are created with the brokers' factor, by kafka-init and in the services' settings.
    if init_env.get("TOPIC_REPLICATION_FACTOR") != str(replication):
        problems.append(f"kafka-init: TOPIC_REPLICATION_FACTOR must be {replication}")
    for name, svc in casebridge_containers(compose).items():
        factor = environment_of(svc).get("CASEBRIDGE_KAFKA_REPLICATION_FACTOR")
        if factor != str(replication):
            problems.append(f"{name}: CASEBRIDGE_KAFKA_REPLICATION_FACTOR must be {replication}, is {factor}")
    # Health: kafka-init waits for every broker; nobody waits for some brokers only.
    for name, svc in services(compose).items():
        if svc.get("profiles"):
            continue
        waits_for = set(depends_on_of(svc)) & set(kafka_brokers(compose, active_only=False))
        if waits_for and waits_for != set(brokers):
            problems.append(f"{name}: depends on {sorted(waits_for)}, not on every broker {sorted(brokers)}")
    if {
        b
        for b, cond in depends_on_of(services(compose).get("kafka-init") or {}).items()
        if b in brokers and cond == "service_healthy"
    } != set(brokers):
        problems.append("kafka-init: must wait for every broker to be healthy")
    return problems


def external_listener_problems(compose: Compose) -> list[str]:
    """Each broker listens on EXTERNAL, advertises it at the deployer's host name and publishes it."""
    problems = []
    ports_seen: dict[str, str] = {}
    for name, svc in kafka_brokers(compose).items():
        env = environment_of(svc)
        listeners = dict(item.split("://", 1) for item in env.get("KAFKA_LISTENERS", "").split(",") if item)
        advertised = dict(
            item.split("://", 1) for item in env.get("KAFKA_ADVERTISED_LISTENERS", "").split(",") if item
        )
        if "EXTERNAL" not in listeners:
            problems.append(f"{name}: no EXTERNAL listener")
            continue
        port = listeners["EXTERNAL"].rsplit(":", 1)[-1]
        external = advertised.get("EXTERNAL", "")
        if not re.fullmatch(rf"\$\{{KAFKA_EXTERNAL_HOST:-[\w.-]+\}}:{port}", external):
            problems.append(
                f"{name}: EXTERNAL must be advertised as ${{KAFKA_EXTERNAL_HOST:-...}}:{port}: {external!r}"
            )
        published = [str(p) for p in svc.get("ports") or []]
        if not any(p.endswith(f":{port}:{port}") for p in published):
            problems.append(f"{name}: the EXTERNAL port {port} is not published on the same host port")
        if port in ports_seen:
            problems.append(f"{name}: EXTERNAL port {port} is also {ports_seen[port]}'s")
        ports_seen[port] = name
        if listener_protocols(env).get("EXTERNAL") != "SASL_SSL":
            problems.append(f"{name}: the EXTERNAL listener must be SASL_SSL")
    return problems


def test_three_brokers_with_replication_3_and_min_isr_2(compose: Compose) -> None:
    assert sorted(kafka_brokers(compose)) == ["kafka-1", "kafka-2", "kafka-3"]
    assert kafka_cluster_problems(compose, replication=3, min_isr=2) == []


def test_every_broker_has_a_declared_and_advertised_external_listener(compose: Compose) -> None:
    assert external_listener_problems(compose) == []


def _set_broker_env(c: Compose, broker: str, **values: str) -> None:
    _env(c, broker).update(values)


CLUSTER_MUTATIONS: dict[str, tuple[Callable[[Compose], None], str]] = {
    "another cluster id": (
        lambda c: _set_broker_env(c, "kafka-2", CLUSTER_ID="another-cluster-id-000"),
        "brokers differ in CLUSTER_ID",
    ),
    "a voter missing": (
        lambda c: _set_broker_env(
            c, "kafka-3", KAFKA_CONTROLLER_QUORUM_VOTERS="1@kafka-1:9093,2@kafka-2:9093"
        ),
        "kafka-3: quorum voters",
    ),
    "replication 1 on one broker": (
        lambda c: _set_broker_env(c, "kafka-1", KAFKA_DEFAULT_REPLICATION_FACTOR="1"),
        "kafka-1: KAFKA_DEFAULT_REPLICATION_FACTOR must be 3",
    ),
    "min isr 3": (
        lambda c: [
            _set_broker_env(c, b, KAFKA_MIN_INSYNC_REPLICAS="3") for b in ("kafka-1", "kafka-2", "kafka-3")
        ],
        "KAFKA_MIN_INSYNC_REPLICAS must be 2",
    ),
    "internal topics on one replica": (
        lambda c: _set_broker_env(c, "kafka-2", KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1"),
        "kafka-2: KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR must be 3",
    ),
    "a client knows one broker": (
        lambda c: _env(c, "notifier-worker").update(CASEBRIDGE_KAFKA_BOOTSTRAP_SERVERS="kafka-1:9092"),
        "notifier-worker: bootstrap 'kafka-1:9092' is not every broker",
    ),
    "services create topics with replication 1": (
        lambda c: _env(c, "case-handling-api").update(CASEBRIDGE_KAFKA_REPLICATION_FACTOR="1"),
        "case-handling-api: CASEBRIDGE_KAFKA_REPLICATION_FACTOR must be 3",
    ),
    "kafka-init creates topics with replication 1": (
        lambda c: _env(c, "kafka-init").update(TOPIC_REPLICATION_FACTOR="1"),
        "kafka-init: TOPIC_REPLICATION_FACTOR must be 3",
    ),
    "a worker waits for one broker": (
        lambda c: c["services"]["order-intake-worker"]["depends_on"].update(
            {"kafka-1": {"condition": "service_healthy"}}
        ),
        "order-intake-worker: depends on ['kafka-1'], not on every broker",
    ),
    "kafka-init does not wait for a broker": (
        lambda c: c["services"]["kafka-init"]["depends_on"].pop("kafka-3"),
        "kafka-init: depends on ['kafka-1', 'kafka-2'], not on every broker",
    ),
    "a third broker gone": (
        lambda c: c["services"].pop("kafka-3"),
        "2 broker(s) cannot hold 3 replicas",
    ),
}


@pytest.mark.parametrize("case", sorted(CLUSTER_MUTATIONS))
def test_cluster_check_reports_what_it_is_for(compose: Compose, case: str) -> None:
    mutate, expected = CLUSTER_MUTATIONS[case]
    broken = copy.deepcopy(compose)
    mutate(broken)
    problems = kafka_cluster_problems(broken, replication=3, min_isr=2)
    assert any(expected in p for p in problems), problems


EXTERNAL_MUTATIONS: dict[str, tuple[Callable[[Compose], None], str]] = {
    "no external listener": (
        lambda c: _set_broker_env(c, "kafka-2", KAFKA_LISTENERS="CLIENTS://:9092,CONTROLLER://:9093"),
        "kafka-2: no EXTERNAL listener",
    ),
    "advertised at a fixed name": (
        lambda c: _set_broker_env(
            c, "kafka-1", KAFKA_ADVERTISED_LISTENERS="CLIENTS://kafka-1:9092,EXTERNAL://kafka-1:9094"
        ),
        "kafka-1: EXTERNAL must be advertised",
    ),
    "not published": (
        lambda c: c["services"]["kafka-3"].update(ports=[]),
        "kafka-3: the EXTERNAL port 9096 is not published",
    ),
    "two brokers on one port": (
        lambda c: _set_broker_env(
            c,
            "kafka-2",
            KAFKA_LISTENERS="CLIENTS://:9092,CONTROLLER://:9093,EXTERNAL://:9094",
            KAFKA_ADVERTISED_LISTENERS="CLIENTS://kafka-2:9092,EXTERNAL://${KAFKA_EXTERNAL_HOST:-localhost}:9094",
        ),
        "EXTERNAL port 9094 is also",
    ),
}


@pytest.mark.parametrize("case", sorted(EXTERNAL_MUTATIONS))
def test_external_listener_check_reports_what_it_is_for(compose: Compose, case: str) -> None:
    mutate, expected = EXTERNAL_MUTATIONS[case]
    broken = copy.deepcopy(compose)
    mutate(broken)
    problems = external_listener_problems(broken)
    assert any(expected in p for p in problems), problems


# The laptop shape: deploy/compose.laptop.yml merged onto the file, as `docker compose -f
# docker-compose.yml -f deploy/compose.laptop.yml` does (Compose's merge rules, for what the
# override uses: mappings merge, sequences append, command and healthcheck.test replace,
# !override replaces, !reset removes).


@dataclass
class _Override:
    value: Any


class _Reset:
    pass


class _ComposeOverrideLoader(yaml.SafeLoader):
    pass


def _construct_override(loader: yaml.SafeLoader, node: yaml.Node) -> _Override:
    if isinstance(node, yaml.MappingNode):
        return _Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return _Override(loader.construct_sequence(node, deep=True))
    return _Override(loader.construct_scalar(node))  # type: ignore[arg-type]


_ComposeOverrideLoader.add_constructor("!override", _construct_override)
_ComposeOverrideLoader.add_constructor("!reset", lambda loader, node: _Reset())


def merge_compose(base: Any, override: Any, path: tuple[str, ...] = ()) -> Any:
    if isinstance(override, _Override):
        return copy.deepcopy(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if isinstance(value, _Reset):
                merged.pop(key, None)
            elif key in merged:
                merged[key] = merge_compose(merged[key], value, (*path, key))
            else:
                merged[key] = merge_compose({}, value, (*path, key)) if isinstance(value, dict) else value
        return merged
    if isinstance(base, list) and isinstance(override, list) and path[-1:] not in (("command",), ("test",)):
        return base + [item for item in override if item not in base]
    return copy.deepcopy(override)


def load_laptop_compose() -> Compose:
    override = yaml.load(LAPTOP_OVERRIDE.read_text(), Loader=_ComposeOverrideLoader)  # noqa: S506 (SafeLoader)
    merged: Compose = merge_compose(load_compose(), override)
    return merged


def test_merge_follows_compose() -> None:
    base = {
        "services": {
            "a": {"environment": {"X": "1", "Y": "2"}, "depends_on": {"b": {}, "c": {}}, "ports": ["1:1"]}
        }
    }
    override = yaml.load(
        "services:\n  a:\n    environment: {Y: '3'}\n    depends_on: !override {c: {}}\n    ports: ['2:2']\n"
        "    command: !reset null\n",
        Loader=_ComposeOverrideLoader,  # noqa: S506
    )
    assert merge_compose(base, override) == {
        "services": {
            "a": {"environment": {"X": "1", "Y": "3"}, "depends_on": {"c": {}}, "ports": ["1:1", "2:2"]}
        }
    }


def test_the_laptop_shape_is_one_broker_with_replication_1() -> None:
    laptop = load_laptop_compose()
    assert schema_problems(laptop) == []
    assert sorted(kafka_brokers(laptop)) == ["kafka-1"]
    assert kafka_cluster_problems(laptop, replication=1, min_isr=1) == []
    assert external_listener_problems(laptop) == []
    assert kafka_security_problems(laptop) == []
    assert healthcheck_problems(laptop) == []
    assert depends_on_problems(laptop) == []
    # Nothing started in this shape waits for a broker it does not start.
    inactive = {name for name, svc in services(laptop).items() if svc.get("profiles")}
    assert {"kafka-2", "kafka-3"} <= inactive
    for name, svc in services(laptop).items():
        if name not in inactive:
            assert not set(depends_on_of(svc)) & inactive, name
    # The production file is unchanged by loading the override.
    assert kafka_cluster_problems(load_compose(), replication=3, min_isr=2) == []


def test_the_laptop_environment_builds_each_services_settings(service: ServiceInfo) -> None:
    laptop = load_laptop_compose()
    settings_cls = load_settings_class(service)
    assert env_problems(laptop, service, settings_cls) == []
    for svc in containers_of(laptop, service.script).values():
        settings: Any = build_settings(settings_cls, svc, DEPLOYER_ENV)
        assert settings.kafka_bootstrap_servers == "kafka-1:9092"
        assert settings.kafka_replication_factor == 1


def test_docker_compose_accepts_the_laptop_shape_when_it_is_installed(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose CLI here; the merge and schema tests cover the override")
    no_dotenv = tmp_path / "empty.env"
    no_dotenv.write_text("")
    run = [*cli, "--project-directory", str(ROOT), "--env-file", str(no_dotenv)]
    run += ["-f", str(COMPOSE_FILE), "-f", str(LAPTOP_OVERRIDE), "config", "--services"]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)} | DEPLOYER_ENV
    result = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    started = set(result.stdout.split())
    assert "kafka-1" in started and not {"kafka-2", "kafka-3"} & started
