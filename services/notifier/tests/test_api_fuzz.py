"""Schemathesis over the notifier's whole OpenAPI: no 5xx and answers as documented, for any input."""

from __future__ import annotations

from fastapi import FastAPI

from casebridge_shared.testing.fuzz import fuzz_api

from .conftest import People

# The live stream never ends by itself (it is an endless SSE response), so a
# generated request to it would never get a whole answer to check; its input
# handling is tested in test_notifications_api.py.
STREAMS = ("GET /notifications/stream",)
# The browser sign-in exchanges the credentials at order-intake, which this test does not run:
# every attempt is then a documented 503 "the token issuer cannot be reached". It is tested
# with a real order-intake in tests/test_browser_sessions.py and the pages' browser tests.
NEEDS_ORDER_INTAKE = ("POST /session",)


async def test_any_input_gets_a_documented_answer_and_no_server_error(app: FastAPI, people: People) -> None:
    admin = await people.add("admin", name="Ada Admin")
    customer = await people.add("customer", name="Carla Customer")
    tokens = {
        "admin": people.minter.token(admin.user_id, "admin"),
        "customer": people.minter.token(customer.user_id, "customer"),
        "anonymous": "",  # no Authorization header
    }
    report = await fuzz_api(app, tokens, exclude=STREAMS + NEEDS_ORDER_INTAKE)
    print(report.summary())
    assert sorted(report.skipped) == sorted(STREAMS + NEEDS_ORDER_INTAKE)
    assert not report.failures, "\n".join(report.failures)
