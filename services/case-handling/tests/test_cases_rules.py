"""The case rules on their own, no database and no HTTP: the state machine (ALLOWED_FROM),
who may write (rules.authorize_write) and what the console offers (service.allowed_actions).

The HTTP stories in test_cases_api.py show the same rules at work through the API; these tables
name every state, role and assignee so a changed rule shows here as the one row it changes.
"""

from __future__ import annotations

import pytest

from case_handling.cases.models import ALLOWED_FROM, FINAL_STATUSES, Case, CaseStatus
from case_handling.cases.rules import CaseWrite, authorize_write, is_supervisor
from case_handling.cases.service import allowed_actions
from casebridge_shared.auth import Principal, Role
from casebridge_shared.problems import Forbidden

NEW, ASSIGNED, IN_PROGRESS, PROPOSED, CLOSED, CANCELLED = (
    CaseStatus.NEW,
    CaseStatus.ASSIGNED,
    CaseStatus.IN_PROGRESS,
    CaseStatus.SOLUTION_PROPOSED,
    CaseStatus.CLOSED,
    CaseStatus.CANCELLED,
)
ME, SOMEONE_ELSE = "staff-me", "staff-other"


def _principal(*roles: Role) -> Principal:
    return Principal(subject=ME, roles=frozenset(roles))


STAFF = _principal(Role.STAFF)
SUPERVISOR = _principal(Role.SUPERVISOR)
ADMIN = _principal(Role.ADMIN)
CUSTOMER = _principal(Role.CUSTOMER)
AUDITOR = _principal(Role.AUDITOR)


@pytest.mark.parametrize(
    ("rule", "from_states"),
    [
        ("claim", {NEW, ASSIGNED}),
        ("assign", {NEW, ASSIGNED, IN_PROGRESS}),
        ("start", {ASSIGNED}),
        ("solution", {IN_PROGRESS, PROPOSED}),
        ("close", {PROPOSED}),
        ("cancel", {NEW, ASSIGNED, IN_PROGRESS, PROPOSED}),
        ("work", {NEW, ASSIGNED, IN_PROGRESS, PROPOSED}),
    ],
)
def test_each_state_rule_starts_from_exactly_these_states(rule: str, from_states: set[CaseStatus]) -> None:
    assert ALLOWED_FROM[rule] == from_states
    assert not ALLOWED_FROM[rule] & FINAL_STATUSES  # nothing moves a closed or cancelled case


def test_the_state_rules_are_exactly_those_listed() -> None:
    assert set(ALLOWED_FROM) == {"claim", "assign", "start", "solution", "close", "cancel", "work"}
    assert {CLOSED, CANCELLED} == FINAL_STATUSES


@pytest.mark.parametrize(
    ("principal", "supervisor"),
    [(STAFF, False), (SUPERVISOR, True), (ADMIN, True), (CUSTOMER, False), (AUDITOR, False)],
)
def test_supervisors_and_admins_are_supervisors(principal: Principal, supervisor: bool) -> None:
    assert is_supervisor(principal) is supervisor


@pytest.mark.parametrize("action", list(CaseWrite))
@pytest.mark.parametrize("assignee", [None, ME, SOMEONE_ELSE])
@pytest.mark.parametrize("principal", [CUSTOMER, AUDITOR])
def test_whoever_is_not_staff_writes_nothing(
    principal: Principal, assignee: str | None, action: CaseWrite
) -> None:
    with pytest.raises(Forbidden, match="only staff, supervisors and admins"):
        authorize_write(principal, assignee, action)


@pytest.mark.parametrize("action", list(CaseWrite))
@pytest.mark.parametrize("assignee", [None, ME, SOMEONE_ELSE])
@pytest.mark.parametrize("principal", [SUPERVISOR, ADMIN])
def test_supervisors_and_admins_write_every_case(
    principal: Principal, assignee: str | None, action: CaseWrite
) -> None:
    authorize_write(principal, assignee, action)  # no Forbidden


@pytest.mark.parametrize("action", [CaseWrite.ASSIGN, CaseWrite.CANCEL])
@pytest.mark.parametrize("assignee", [None, ME, SOMEONE_ELSE])
def test_staff_never_assign_or_cancel(assignee: str | None, action: CaseWrite) -> None:
    with pytest.raises(Forbidden, match=f"only a supervisor or admin may {action} a case"):
        authorize_write(STAFF, assignee, action)


@pytest.mark.parametrize("assignee", [None, ME, SOMEONE_ELSE])
def test_staff_may_try_to_claim_any_case(assignee: str | None) -> None:
    # Someone else's case is refused later, by claim(), as a state conflict (409), not here.
    authorize_write(STAFF, assignee, CaseWrite.CLAIM)


WORK = [w for w in CaseWrite if w not in {CaseWrite.ASSIGN, CaseWrite.CANCEL, CaseWrite.CLAIM}]


@pytest.mark.parametrize("action", WORK)
@pytest.mark.parametrize("assignee", [None, ME])
def test_staff_work_their_own_cases_and_unassigned_ones(assignee: str | None, action: CaseWrite) -> None:
    authorize_write(STAFF, assignee, action)


@pytest.mark.parametrize("action", WORK)
def test_staff_may_not_work_a_case_assigned_to_someone_else(action: CaseWrite) -> None:
    with pytest.raises(Forbidden, match="assigned to someone else") as refused:
        authorize_write(STAFF, SOMEONE_ELSE, action)
    assert refused.value.field == "assignee_id"


WORKING = ["analysis", "communication", "attach", "update"]
NOTHING: list[str] = []


@pytest.mark.parametrize(
    ("principal", "assignee", "status", "expected"),
    [
        # Staff, a case nobody has: pick it up and work on it; never assign or cancel.
        (STAFF, None, NEW, ["claim", *WORKING]),
        (STAFF, None, ASSIGNED, ["claim", "start", *WORKING]),
        (STAFF, None, IN_PROGRESS, [*WORKING, "solution"]),
        (STAFF, None, PROPOSED, [*WORKING, "solution", "close"]),
        (STAFF, None, CLOSED, NOTHING),
        (STAFF, None, CANCELLED, NOTHING),
        # Staff, their own case: no claim (it is theirs already).
        (STAFF, ME, NEW, WORKING),
        (STAFF, ME, ASSIGNED, ["start", *WORKING]),
        (STAFF, ME, IN_PROGRESS, [*WORKING, "solution"]),
        (STAFF, ME, PROPOSED, [*WORKING, "solution", "close"]),
        (STAFF, ME, CLOSED, NOTHING),
        (STAFF, ME, CANCELLED, NOTHING),
        # Staff, someone else's case: nothing at all.
        (STAFF, SOMEONE_ELSE, NEW, NOTHING),
        (STAFF, SOMEONE_ELSE, ASSIGNED, NOTHING),
        (STAFF, SOMEONE_ELSE, IN_PROGRESS, NOTHING),
        (STAFF, SOMEONE_ELSE, PROPOSED, NOTHING),
        # A supervisor, a case nobody has: everything the state allows.
        (SUPERVISOR, None, NEW, ["claim", "assign", *WORKING, "cancel"]),
        (SUPERVISOR, None, ASSIGNED, ["claim", "assign", "start", *WORKING, "cancel"]),
        (SUPERVISOR, None, IN_PROGRESS, ["assign", *WORKING, "solution", "cancel"]),
        (SUPERVISOR, None, PROPOSED, [*WORKING, "solution", "close", "cancel"]),
        (SUPERVISOR, None, CLOSED, NOTHING),
        (SUPERVISOR, None, CANCELLED, NOTHING),
        # A supervisor, someone else's case: the same but claim (they reassign instead).
        (SUPERVISOR, SOMEONE_ELSE, NEW, ["assign", *WORKING, "cancel"]),
        (SUPERVISOR, SOMEONE_ELSE, ASSIGNED, ["assign", "start", *WORKING, "cancel"]),
        (SUPERVISOR, SOMEONE_ELSE, IN_PROGRESS, ["assign", *WORKING, "solution", "cancel"]),
        (SUPERVISOR, SOMEONE_ELSE, PROPOSED, [*WORKING, "solution", "close", "cancel"]),
        (ADMIN, SOMEONE_ELSE, IN_PROGRESS, ["assign", *WORKING, "solution", "cancel"]),
        (ADMIN, SOMEONE_ELSE, CLOSED, NOTHING),
        # Whoever is not staff is offered nothing.
        (CUSTOMER, None, NEW, NOTHING),
        (CUSTOMER, ME, IN_PROGRESS, NOTHING),
        (AUDITOR, None, PROPOSED, NOTHING),
    ],
)
def test_the_console_offers_what_the_state_and_the_write_rule_both_allow(
    principal: Principal, assignee: str | None, status: CaseStatus, expected: list[str]
) -> None:
    # Only the status and the assignee matter to the rules: the rest of the case is left out.
    case = Case(status=status, assignee_id=assignee)
    assert allowed_actions(case, principal) == expected
