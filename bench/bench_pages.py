"""First page load and time to interactive of the screens (issue 26), cold and warm, in Chromium.

The services run as under ``make up``, each api its own process (order-intake, case-handling,
notifier; the embedded broker beside them), seeded through the real services with a customer
and a staff member. For each page in ``PAGES`` this process drives headless Chromium
(Debian's ``/usr/bin/chromium``, Playwright) and measures, in the page's own clock (navigation
start = 0):

* load: navigation start -> the ``load`` event;
* interactive: navigation start -> the page's readiness marker (kit.js ``markReady()``: the
  ``casebridge-ready`` performance mark with ``<html data-ready="1">``);
* bytes: what crossed the wire for the page and everything it loaded (``transferSize``:
  compressed bodies + headers), by the end of interactive.

Cold is a new browser context (empty cache, no service worker); warm is a reload in the same
context (files revalidated by ETag: 304s). A page that needs a session is signed in through
its service's ``POST /session`` before it is opened. Each figure is the median of ``--runs``.

Baseline, run alongside in the same browser: the service's ``/docs`` page (Swagger UI, from
the same server, the same caching), whose "interactive" is its load event. Ratios are page /
baseline. Budget: every page under 300 KB compressed on a cold load.

Add a page: one ``Page(...)`` line in ``PAGES``.

    .venv/bin/python bench/bench_pages.py [--runs 7]
"""

from __future__ import annotations

import statistics
import sys
import warnings
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common as c

from casebridge_shared.auth import Role
from casebridge_shared.logs import configure_logging

BUDGET_BYTES = 300 * 1024
PASSWORD = "bench-password-123"  # noqa: S105 (throwaway bench account)
STAFF_EMAIL = "bench-staff@example.org"
CUSTOMER_EMAIL = "bench-customer0@example.org"


@dataclass(frozen=True)
class Page:
    name: str
    service: str  # "order-intake", "case-handling" or "notifier"
    path: str
    sign_in_as: str | None = None  # an email (password PASSWORD), or None: measured signed out
    ready: bool = True  # False: no readiness marker (the baseline); interactive = load


PAGES = [
    Page("staff alerts, signed out", "notifier", "/app/"),
    Page("staff alerts, signed in", "notifier", "/app/", sign_in_as=STAFF_EMAIL),
    Page("portal catalog, signed out", "order-intake", "/portal/catalog"),
    # <order>: the order bench() places for the customer before measuring.
    Page("portal order page", "order-intake", "/portal/orders/<order>", sign_in_as=CUSTOMER_EMAIL),
    Page("console queue", "case-handling", "/console/", sign_in_as=STAFF_EMAIL),
]
BASELINE = Page("baseline: /docs (Swagger UI)", "notifier", "/docs", ready=False)

TIMINGS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const mark = performance.getEntriesByName("casebridge-ready")[0];
  const bytes = [nav, ...performance.getEntriesByType("resource")]
    .reduce((sum, e) => sum + (e.transferSize || 0), 0);
  return { load: nav.loadEventEnd, ready: mark ? mark.startTime : null, bytes,
           requests: 1 + performance.getEntriesByType("resource").length };
}"""


async def _settled(page: Any, spec: Page) -> dict[str, float]:
    from casebridge_shared.testing.browser import until_ready, until_true

    await until_true(page, "performance.getEntriesByType('navigation')[0].loadEventEnd > 0", timeout=60)
    if spec.ready:
        await until_ready(page, timeout=60)
    timings: dict[str, float] = await page.evaluate(TIMINGS)
    if not spec.ready:
        timings["ready"] = timings["load"]
    return timings


async def measure(browser: Any, spec: Page, base_url: str) -> dict[str, dict[str, float]]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        if spec.sign_in_as is not None:
            answer = await context.request.post(
                f"{base_url}/session", data={"email": spec.sign_in_as, "password": PASSWORD}
            )
            assert answer.ok, await answer.text()
        page = await context.new_page()
        await page.goto(base_url + spec.path)
        cold = await _settled(page, spec)
        await page.reload()
        warm = await _settled(page, spec)
        return {"cold": cold, "warm": warm}
    finally:
        await context.close()


def _median(runs: list[dict[str, dict[str, float]]], kind: str, key: str) -> float:
    return statistics.median(r[kind][key] for r in runs)


async def bench(args: Any, urls: dict[str, str], bootstrap: str, workdir: Path) -> list[dict[str, Any]]:
    from casebridge_shared.testing.browser import chromium
    from order_intake.bootstrap import bootstrap as intake_bootstrap
    from order_intake.identity import service as identity_service
    from order_intake.identity.models import UserCreate

    ports = {name: c.api_port() for name in ("order-intake", "case-handling", "notifier")}
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    settings = c.settings_for(urls["order-intake"], bootstrap, workdir, token_issuer=base["order-intake"])
    container = intake_bootstrap(settings)
    seeded = await c.seed(container, customers=1)
    async with container.uow() as uow:
        await identity_service.create_user(
            uow, UserCreate(email=STAFF_EMAIL, password=PASSWORD, full_name="Bench Staff", roles=[Role.STAFF])
        )
    await container.close()

    env = c.service_env(
        urls["order-intake"],
        bootstrap,
        workdir,
        CASEBRIDGE_TOKEN_ISSUER=base["order-intake"],
        CASEBRIDGE_ORDER_INTAKE_PORT=str(ports["order-intake"]),
        CASEBRIDGE_CASE_HANDLING_DATABASE_URL=urls["case-handling"],
        CASEBRIDGE_CASE_HANDLING_PORT=str(ports["case-handling"]),
        CASEBRIDGE_NOTIFIER_DATABASE_URL=urls["notifier"],
        CASEBRIDGE_NOTIFIER_PORT=str(ports["notifier"]),
        CASEBRIDGE_NOTIFIER_CASE_HANDLING_PUBLIC_URL=base["case-handling"],
    )
    processes = {
        name: c.Process(f"{name}-api", [str(c.VENV_BIN / name), "api"], env, workdir) for name in ports
    }
    rows: list[dict[str, Any]] = []
    try:
        for p in processes.values():
            p.start()
        for name, p in processes.items():
            await c.wait_http_ready(base[name], p, timeout=180)  # a loaded machine starts slowly
        order_id = await _an_order(base["order-intake"], seeded)
        async with chromium() as browser:
            for spec in PAGES:
                spec = replace(spec, path=spec.path.replace("<order>", order_id))
                page_runs, base_runs = [], []
                for _ in range(args.runs):  # interleaved: page and baseline see the same machine
                    page_runs.append(await measure(browser, spec, base[spec.service]))
                    base_runs.append(await measure(browser, BASELINE, base[BASELINE.service]))
                row: dict[str, Any] = {"page": spec, "runs": page_runs, "baseline": base_runs}
                rows.append(row)
                report(row)
    finally:
        for p in processes.values():
            p.stop()
    return rows


async def _an_order(intake: str, seeded: Any) -> str:
    """The customer's order (through order-intake's API) whose page is measured."""
    import httpx

    async with httpx.AsyncClient(
        base_url=intake, headers={"Authorization": f"Bearer {seeded.tokens[0]}"}, timeout=30
    ) as client:
        r = await client.post(
            "/orders", json={"product_id": seeded.product_id, "description": "Please review my contract."}
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def report(row: dict[str, Any]) -> None:
    spec: Page = row["page"]
    runs, base = row["runs"], row["baseline"]
    print(f"\n{spec.name}  ({spec.service} {spec.path})")
    for kind in ("cold", "warm"):
        load, ready = _median(runs, kind, "load"), _median(runs, kind, "ready")
        size, requests = _median(runs, kind, "bytes"), _median(runs, kind, "requests")
        b_load, b_ready, b_size = (_median(base, kind, k) for k in ("load", "ready", "bytes"))
        kb = size / 1024
        page = f"load {load:.0f} ms, interactive {ready:.0f} ms, {kb:.1f} KB in {requests:.0f} requests"
        baseline = f"baseline load {b_load:.0f} ms, {b_size / 1024:.1f} KB"
        ratios = (load / b_load, ready / b_ready, size / max(b_size, 1))
        ratio = "ratio load {:.2f}, interactive {:.2f}, bytes {:.2f}".format(*ratios)
        print(f"  {kind}: {page}  | {baseline}  | {ratio}")
    cold_bytes = _median(runs, "cold", "bytes")
    verdict = "under" if cold_bytes < BUDGET_BYTES else "OVER"
    print(f"  budget: {cold_bytes / 1024:.1f} KB cold, {verdict} 300 KB")


def main() -> int:
    p = c.parser("First load and time to interactive of the screens, cold and warm (issue 26)")
    p.add_argument("--runs", type=int, default=7)
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
        urls = {"order-intake": intake, "case-handling": cases, "notifier": notifier}
        rows = c.run(bench(args, urls, broker.bootstrap_servers, workdir))
    print(f"\nsummary ({args.database}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, median of {args.runs})")
    for row in rows:
        cold_bytes = _median(row["runs"], "cold", "bytes")
        print(
            f"  {row['page'].name}: cold interactive {_median(row['runs'], 'cold', 'ready'):.0f} ms, "
            f"warm {_median(row['runs'], 'warm', 'ready'):.0f} ms, {cold_bytes / 1024:.1f} KB cold"
        )
    over = [r for r in rows if _median(r["runs"], "cold", "bytes") >= BUDGET_BYTES]
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
