"""Schemathesis over customer-ledger's whole OpenAPI: no 5xx and answers as documented, for any input."""

from __future__ import annotations

from fastapi import FastAPI

from casebridge_shared.testing import TokenMinter
from casebridge_shared.testing.fuzz import fuzz_api

# The browser sign-in exchanges the credentials at order-intake, which this test does not run:
# every attempt is then a documented 503 "the token issuer cannot be reached". It is tested
# with a real order-intake in tests/test_browser_sessions.py and tests/test_workspace_pages.py.
NEEDS_ORDER_INTAKE = ("POST /session",)


async def test_any_input_gets_a_documented_answer_and_no_server_error(
    app: FastAPI, minter: TokenMinter
) -> None:
    app.state.token_verifier = minter.verifier()
    tokens = {
        "admin": minter.token("fuzz-admin", "admin", name="Ada Admin"),
        "customer": minter.token("fuzz-customer", "customer"),
        "anonymous": "",  # no Authorization header
    }
    report = await fuzz_api(app, tokens, exclude=NEEDS_ORDER_INTAKE)
    print(report.summary())
    assert report.skipped == list(NEEDS_ORDER_INTAKE)
    assert not report.failures, "\n".join(report.failures)
