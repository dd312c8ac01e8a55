"""Fuzz a service's whole OpenAPI with schemathesis, in the test suite (issue 25: no 5xx for any input).

:func:`fuzz_api` serves an app whose lifespan the test already runs (its ``app``
fixture: the real database, real tokens) with uvicorn on a free port, and sends
every operation of its OpenAPI, as each named token, schemathesis' coverage
cases (every parameter's and field's boundaries, wrong types, nulls, missing
fields: a fixed list) and then bounded, derandomized random ones (hypothesis:
``max_examples`` per operation and token, valid and invalid alike, no deadline,
no example database), checking two things of every answer:

* ``not_a_server_error``: no 5xx, whatever the input;
* ``response_schema_conformance``: the body matches the response model the
  OpenAPI documents for that status (problem+json included).

The requests are sent from a worker thread (schemathesis is synchronous), so
the app keeps running on the test's event loop, where its database engine lives.
Every failure is collected (the first few per operation), none stops the run:
the test then fails listing them all (Authorization shown as ``[Filtered]``).
Needs the dev requirements (schemathesis): only test modules import it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from casebridge_shared.broker import free_port
from casebridge_shared.testing import ApiServer

if TYPE_CHECKING:
    from fastapi import FastAPI

FAILURES_PER_OPERATION = 3


@dataclass
class FuzzReport:
    """What a run sent and found."""

    operations: int = 0
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    seconds_by_operation: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        ranked = sorted(self.seconds_by_operation.items(), key=lambda kv: -kv[1])[:3]
        slowest = ", ".join(f"{label} {seconds:.1f}s" for label, seconds in ranked)
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        return (
            f"{self.operations} operations, {self.requests} requests in {self.seconds:.1f}s ({codes}); "
            f"{len(self.failures)} failures; slowest: {slowest}"
        )


async def fuzz_api(
    app: FastAPI,
    tokens: dict[str, str],
    *,
    max_examples: int = 10,
    exclude: Collection[str] = (),
) -> FuzzReport:
    """Fuzz every operation of ``app`` (but ``exclude``, labels like ``"GET /stream"``) as each token.

    ``tokens`` maps a name (``"admin"``, ``"customer"``) to a bearer token; the
    empty string sends no ``Authorization`` header at all.
    """
    server = ApiServer(lambda: app, free_port(), lifespan=False)
    await server.start()
    try:
        schema = schemathesis.openapi.from_dict(app.openapi())
        return await asyncio.to_thread(_run, schema, server.url, tokens, max_examples, set(exclude))
    finally:
        await server.stop()


def _run(
    schema: Any, base_url: str, tokens: dict[str, str], max_examples: int, exclude: set[str]
) -> FuzzReport:
    report = FuzzReport()
    started = time.monotonic()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            label = f"{operation.method.upper()} {operation.path}"
            if label in exclude:
                report.skipped.append(label)
                continue
            report.operations += 1
            operation_started = time.monotonic()
            for name, token in tokens.items():
                _fuzz_operation(operation, label, name, token, base_url, session, max_examples, report)
            report.seconds_by_operation[label] = time.monotonic() - operation_started
    report.seconds = time.monotonic() - started
    return report


MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]


def _fuzz_operation(
    operation: Any,
    label: str,
    token_name: str,
    token: str,
    base_url: str,
    session: requests.Session,
    max_examples: int,
    report: FuzzReport,
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    found: list[str] = []

    def send(case: Any) -> int:
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=60)
        report.requests += 1
        report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
        except BaseException as exc:  # schemathesis raises a BaseExceptionGroup of its failures
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            if len(found) < FAILURES_PER_OPERATION:
                found.append(
                    f"{label} as {token_name}: {response.status_code} {_describe(exc)}\n"
                    f"    {case.as_curl_command()}\n    -> {response.text[:300]}"
                )
        return int(response.status_code)

    # The coverage phase: each parameter's and field's boundaries and types (the
    # smallest and largest value, one past them, null, a wrong type, a missing field),
    # valid requests first. An operation that refuses the token a valid request
    # (401/403) checks the token before the input: the rest would only test that again.
    schema = operation.schema
    config = schema.config.generation_for(operation=operation)
    for case in schema.iter_coverage_cases(operation, generation_modes=MODES, generation_config=config):
        valid = case.meta is not None and case.meta.generation.mode == schemathesis.GenerationMode.POSITIVE
        if send(case) in (401, 403) and valid:
            break

    # Then random valid and invalid requests (derandomized: the same ones every run).
    strategy = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in MODES))

    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        send(case)

    try:
        fuzz()
    except Exception as exc:  # a strategy the generator cannot satisfy is a finding as well
        found.append(f"{label} as {token_name}: could not generate: {type(exc).__name__}: {exc}")
    report.failures.extend(found)


def _describe(exc: BaseException) -> str:
    inner = getattr(exc, "exceptions", None) or (exc,)
    return "; ".join(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}" for e in inner)
