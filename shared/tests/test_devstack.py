"""`make up` (casebridge up): no login the banner does not list."""

from __future__ import annotations

from casebridge_shared.devstack import bootstrap_admin_env

LOGINS = [
    {"role": "admin", "email": "admin@demo.casebridge.example", "password": "casebridge-demo"},
    {"role": "staff", "email": "staff@demo.casebridge.example", "password": "casebridge-demo"},
]


def test_the_bootstrap_admin_is_the_listed_demo_admin() -> None:
    env = bootstrap_admin_env({"CASEBRIDGE_ENVIRONMENT": "development"}, LOGINS)
    assert env == {
        "CASEBRIDGE_ORDER_INTAKE_BOOTSTRAP_ADMIN_EMAIL": "admin@demo.casebridge.example",
        "CASEBRIDGE_ORDER_INTAKE_BOOTSTRAP_ADMIN_PASSWORD": "casebridge-demo",
    }


def test_a_bootstrap_admin_the_developer_configured_is_kept() -> None:
    for name in ("CASEBRIDGE_BOOTSTRAP_ADMIN_EMAIL", "CASEBRIDGE_ORDER_INTAKE_BOOTSTRAP_ADMIN_PASSWORD"):
        assert bootstrap_admin_env({name: "x"}, LOGINS) == {}
    assert bootstrap_admin_env({}, LOGINS[1:]) == {}
