"""ClaimMapping: roles from configurable claim paths through a role mapping; the oidc settings' checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from casebridge_shared.auth import Department, Role
from casebridge_shared.oidc import ClaimMapping, claim_at
from casebridge_shared.problems import Unauthorized
from casebridge_shared.settings import ServiceSettings

BASE = {"sub": "u-1", "iat": 1_000, "exp": 2_000}


def mapping(**settings: object) -> ClaimMapping:
    return ClaimMapping.from_settings(ServiceSettings(environment="test", **settings))  # type: ignore[arg-type]


def test_claim_paths_reach_into_nested_claims() -> None:
    claims = {"resource_access": {"casebridge": {"roles": ["x"]}}, "groups": "a b"}
    assert claim_at(claims, "resource_access.casebridge.roles") == ["x"]
    assert claim_at(claims, "resource_access.other.roles") is None
    assert claim_at(claims, "groups.nested") is None


def test_without_a_mapping_provider_roles_named_like_ours_count_and_others_are_ignored() -> None:
    m = mapping()
    assert m.roles({**BASE, "roles": ["staff", "reader", "admin"]}) == {Role.STAFF, Role.ADMIN}
    assert m.roles({**BASE, "roles": "supervisor offline_access"}) == {Role.SUPERVISOR}
    assert m.roles({**BASE, "realm_access": {"roles": ["admin"]}}) == frozenset()  # not a configured path


def test_with_a_mapping_only_mapped_names_grant_roles_from_every_configured_path() -> None:
    m = mapping(
        oidc_roles_claims=["realm_access.roles", "resource_access.casebridge.roles"],
        oidc_role_mapping={"cb-admins": "admin", "cb-desk": ["staff", "auditor"]},
    )
    claims = {
        **BASE,
        "realm_access": {"roles": ["cb-admins", "admin"]},
        "resource_access": {"casebridge": {"roles": ["cb-desk"]}},
    }
    assert m.roles(claims) == {Role.ADMIN, Role.STAFF, Role.AUDITOR}
    assert m.roles({**BASE, "realm_access": {"roles": ["admin", "staff"]}}) == frozenset()


def test_subject_email_name_and_department_come_from_the_configured_claims() -> None:
    m = mapping(oidc_subject_claim="oid", oidc_email_claim="upn", oidc_department_claim="ext.dept")
    p = m.principal(
        {**BASE, "oid": "o-9", "upn": "e@firm.example", "name": "Erin", "ext": {"dept": "finance"}}
    )
    assert (p.subject, p.email, p.name, p.department) == ("o-9", "e@firm.example", "Erin", Department.FINANCE)
    assert (p.issued_at, p.expires_at) == (1_000.0, 2_000.0)
    with pytest.raises(Unauthorized, match="oid"):
        m.principal(BASE)  # no oid claim


def test_required_claims_must_match_exactly() -> None:
    m = mapping(oidc_required_claims={"tid": "t-1"})
    assert m.principal({**BASE, "tid": "t-1"}).subject == "u-1"
    for wrong in ({}, {"tid": "t-2"}, {"tid": ["t-1"]}):
        with pytest.raises(Unauthorized, match="tid"):
            m.principal({**BASE, **wrong})


@pytest.mark.parametrize(
    "bad",
    [
        {"oidc_algorithms": ["HS256"]},
        {"oidc_algorithms": ["none"]},
        {"oidc_algorithms": []},
        {"oidc_role_mapping": {"cb-admins": "root"}},
        {"oidc_roles_claims": ["realm_access..roles"]},
        {"oidc_subject_claim": ""},
    ],
)
def test_unsafe_or_meaningless_oidc_settings_are_refused_at_startup(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ServiceSettings(environment="test", **bad)  # type: ignore[arg-type]
