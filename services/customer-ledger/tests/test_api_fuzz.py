"""Schemathesis over customer-ledger's whole OpenAPI: no 5xx and answers as documented, for any input."""

from __future__ import annotations

from fastapi import FastAPI

from casebridge_shared.testing import TokenMinter
from casebridge_shared.testing.fuzz import fuzz_api


async def test_any_input_gets_a_documented_answer_and_no_server_error(
    app: FastAPI, minter: TokenMinter
) -> None:
    app.state.token_verifier = minter.verifier()
    tokens = {
        "admin": minter.token("fuzz-admin", "admin", name="Ada Admin"),
        "customer": minter.token("fuzz-customer", "customer"),
        "anonymous": "",  # no Authorization header
    }
    report = await fuzz_api(app, tokens)
    print(report.summary())
    assert not report.failures, "\n".join(report.failures)
