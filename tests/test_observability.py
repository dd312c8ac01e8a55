"""The alert rules and dashboards that ship with Casebridge (issue 27, section 5).

- ``promtool check rules`` accepts deploy/prometheus/alerts.yml and ``promtool test rules``
  passes its unit tests (when promtool is installed: Debian's ``prometheus`` package,
  ``make promtool``);
- every metric an alert or a dashboard panel reads, and every label it matches or groups
  on, is in the real ``/metrics`` output of the services, after an order has gone all the
  way to a staff alert and the ledger (so the path's series exist, not only their names);
- every alert has its runbook section in docs/runbooks.md (what it means, how to check,
  how to fix), and each dashboard reads the provisioned Prometheus data source.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from casebridge_shared import metrics
from casebridge_shared.broker import free_port
from casebridge_shared.testing import ApiServer, DatabaseTemplates, metric_value, wait_until
from notifier.testing import WebhookReceiver

from .conftest import ADMIN, Stack, ledger_platform, notifier_knows, notifier_platform
from .test_order_to_case import case_of, place_order

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"

# Series Prometheus makes itself for every target, not exported by the services.
PROMETHEUS_OWN = {"up": {"job", "instance"}}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
# PromQL words that look like names.
KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{(?P<matchers>[^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
# Possessive: a function name must not match as a shorter prefix of itself.
_NAME = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*+)(?!\s*\()")


def promql_references(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """The metric names an expression reads, each with the labels its selectors match on,
    and the labels it groups or matches vectors on (a small reader: the subset we write)."""
    names: dict[str, set[str]] = {}
    for selector in _SELECTOR.finditer(_STRING.sub('""', expr)):
        labels = set(_MATCHER_LABEL.findall(selector["matchers"]))
        if selector["name"] and selector["name"] not in KEYWORDS:
            names.setdefault(selector["name"], set()).update(labels)
    grouping = {
        label.strip() for group in _GROUPING.findall(expr) for label in group.split(",") if label.strip()
    }
    bare = _RANGE.sub(
        "", _GROUPING.sub("", _SELECTOR.sub(lambda m: m["name"] or "", _STRING.sub('""', expr)))
    )
    for name in _NAME.findall(bare):
        if name not in KEYWORDS:
            names.setdefault(name, set())
    return names, grouping


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def expressions() -> dict[str, str]:
    """Every PromQL expression we ship: each alert's, each dashboard panel target's."""
    found = {f"alerts.yml {rule['alert']}": str(rule["expr"]) for rule in alert_rules()}
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found[f"{path.name} {panel['title']!r} {target['refId']}"] = target["expr"]
    return found


class Exposition:
    """What ``/metrics`` answered: each sample name with the label names it was seen with,
    and every name a family declares (a counter's ``_total``, a histogram's ``_bucket``...)."""

    def __init__(self, *texts: str) -> None:
        self.declared: set[str] = set()
        self.labels: dict[str, set[str]] = {}
        for text in texts:
            for family in text_string_to_metric_families(text):
                suffixes = {
                    "counter": ("_total", "_created"),
                    "histogram": ("_bucket", "_count", "_sum", "_created"),
                    "summary": ("_count", "_sum", "_created"),
                }.get(family.type, ("",))
                self.declared |= {family.name + suffix for suffix in suffixes}
                for sample in family.samples:
                    self.labels.setdefault(sample.name, set()).update(sample.labels)

    def problems(self, where: str, expr: str) -> list[str]:
        names, grouping = promql_references(expr)
        problems = []
        known_labels: set[str] = set(TARGET_LABELS)
        for name, matched in names.items():
            if name in PROMETHEUS_OWN:
                labels = PROMETHEUS_OWN[name]
            elif name not in self.declared:
                problems.append(f"{where}: {name} is not exported by any service")
                continue
            elif name in self.labels:
                labels = self.labels[name] | TARGET_LABELS
            else:
                # Exported, but nothing was counted yet on this path (dead letters, failed
                # publishes): its labels as the metric declares them.
                labels = declared_labels(name) | TARGET_LABELS
            known_labels |= labels
            for label in matched - labels:
                problems.append(f"{where}: {name} has no label {label!r} (has {sorted(labels)})")
        for label in grouping - known_labels:
            problems.append(f"{where}: groups on {label!r}, a label of none of {sorted(names)}")
        return problems


def declared_labels(name: str) -> set[str]:
    """The label names of one of our metrics (casebridge_shared.metrics), by a sample's name."""
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(
                    family.type, ("",)
                )
                if name in {family.name + suffix for suffix in suffixes}:
                    labels = set(metric._labelnames)  # not in the exposition until counted
                    return labels | {"le"} if name.endswith("_bucket") else labels
    return set()


def _reader_problems(text: str) -> list[str]:
    return Exposition(text).problems(
        "test", 'sum by (channel) (rate(casebridge_x_total{outcome="dead"}[5m]))'
    )


def test_the_expression_reader_finds_names_labels_and_groupings() -> None:
    names, grouping = promql_references(
        'histogram_quantile(0.95, sum by (service, le) (rate(a_bucket{route!~".*/stream|x"}[5m]))) > 1 '
        'and (sum(rate(b_total{service="n"}[10m])) or vector(0)) == 0 and on(job) up'
    )
    assert names == {"a_bucket": {"route"}, "b_total": {"service"}, "up": set()}
    assert grouping == {"service", "le", "job"}
    # The checker reports a missing metric, a missing label and a grouping on nothing.
    seen = '# TYPE casebridge_x counter\ncasebridge_x_total{channel="push",outcome="dead"} 1.0\n'
    assert _reader_problems(seen) == []
    assert any("has no label 'outcome'" in p for p in _reader_problems(seen.replace("outcome", "result")))
    assert any("groups on 'channel'" in p for p in _reader_problems(seen.replace("channel", "kind")))
    assert any("not exported" in p for p in _reader_problems(seen.replace("casebridge_x", "casebridge_y")))


# --- promtool -------------------------------------------------------------------------------

PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = "promtool is not installed (Debian package `prometheus`; `make promtool` installs it)"


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    assert PROMTOOL is not None
    checked = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_TESTS.name], capture_output=True, text=True, cwd=RULE_TESTS.parent
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


# --- runbooks and dashboards ------------------------------------------------------------------


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_a_runbook_section_that_says_what_why_and_how() -> None:
    text = RUNBOOKS.read_text()
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))
    rules = alert_rules()
    assert len({rule["alert"] for rule in rules}) == len(rules), "alert names must be unique"
    for rule in rules:
        name = rule["alert"]
        assert name in sections, f"docs/runbooks.md has no section '## {name}'"
        for part in ("What it means", "How to check", "How to fix"):
            assert f"**{part}**" in sections[name], f"runbook {name}: no '{part}'"
        assert rule["annotations"]["runbook_url"] == f"docs/runbooks.md#{_anchor(name)}"
        assert rule["labels"]["severity"] in ("warning", "critical")
    assert set(sections) - {rule["alert"] for rule in rules} == set(), "runbook sections without an alert"


def test_dashboards_read_the_provisioned_prometheus() -> None:
    [source] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert DASHBOARDS, "no dashboards in deploy/grafana/dashboards"
    uids = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        uids.append(board["uid"])
        assert board["panels"], path.name
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == source["uid"], (path.name, panel["title"])
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    assert len(set(uids)) == len(uids), "dashboard uids must be unique"


# --- the real /metrics ------------------------------------------------------------------------


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[ApiServer]:
    server = ApiServer(lambda: app, free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.mark.slow
async def test_every_metric_the_alerts_and_dashboards_read_is_exported(
    stack: Stack, db_templates: DatabaseTemplates, tmp_path: Path
) -> None:
    hooks = WebhookReceiver()
    async with (
        notifier_platform(stack, db_templates, tmp_path) as alerts,
        ledger_platform(stack, db_templates, tmp_path) as ledger,
        serving(hooks.app) as hook_server,
    ):
        staff_token = await stack.staff("sam@casebridge.example", "staff")
        product_id = await stack.product()
        await notifier_knows(alerts, "sam@casebridge.example")
        admin_alerts = stack.client(alerts, await stack.login(*ADMIN))
        hook = await admin_alerts.post("/webhooks", json={"url": f"{hook_server.url}/hook"})
        assert hook.status_code == 201, hook.text

        # An order, all the way: a case, a staff alert (in-app and webhook).
        customer = await stack.register_customer("ada@example.org")
        order_id = await place_order(customer, product_id)
        await case_of(stack.client(stack.cases, staff_token), order_id)
        staff_alerts = stack.client(alerts, staff_token)

        async def alerted() -> bool:
            listed = (await staff_alerts.get("/notifications")).json()
            return any(n["order_id"] == order_id for n in listed["items"]) and bool(hooks.received)

        await wait_until(alerted, timeout=90, message="the staff alert and the webhook")

        platforms = (stack.intake, stack.cases, alerts, ledger)

        async def scrape() -> list[str]:
            texts = []
            for platform in platforms:
                async with httpx.AsyncClient(base_url=platform.api.url, timeout=30) as c:
                    answer = await c.get("/metrics")
                    assert answer.status_code == 200
                    texts.append(answer.text)
            return texts

        async def path_observed() -> bool:
            text = "\n".join((await scrape())[:1])  # one process here: every api answers the same registry
            return all(
                metric_value(text, name, **labels) > 0
                for name, labels in (
                    ("casebridge_consumer_event_age_seconds_count", {"service": "case-handling"}),
                    ("casebridge_consumer_event_age_seconds_count", {"service": "notifier"}),
                    ("casebridge_notifier_deliveries_total", {"channel": "in_app", "outcome": "delivered"}),
                    ("casebridge_notifier_deliveries_total", {"channel": "webhook", "outcome": "delivered"}),
                    ("casebridge_relay_published_total", {"service": "case-handling"}),
                )
            )

        await wait_until(path_observed, timeout=60, message="the path's series on /metrics")
        exposition = Exposition(*await scrape())

    problems = [p for where, expr in expressions().items() for p in exposition.problems(where, expr)]
    assert problems == [], "\n".join(problems)
