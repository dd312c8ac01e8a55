"""Who may write to a case: one rule, checked by every write (docs/case-handling.md).

- Staff work the cases assigned to them. An open case nobody is assigned to may
  be claimed and worked by any staff member (that is how work is picked up).
- A case assigned to someone else is refused (403) for every write: transitions,
  analysis, communications, the solution, attachments and the service
  information with its internal notes alike.
- Supervisors and admins may do every write on every case, and they alone
  assign (or reassign) and cancel cases.
"""

from __future__ import annotations

from enum import StrEnum

from casebridge_shared.auth import STAFF_ROLES, Principal, Role
from casebridge_shared.problems import Forbidden


class CaseWrite(StrEnum):
    CLAIM = "claim"
    ASSIGN = "assign"
    START = "start"
    ANALYSIS = "analysis"
    COMMUNICATION = "communication"
    SOLUTION = "solution"
    CLOSE = "close"
    CANCEL = "cancel"
    UPDATE = "update"  # service information and internal notes (PATCH)
    ATTACH = "attach"


SUPERVISOR_ROLES = frozenset({Role.SUPERVISOR, Role.ADMIN})
SUPERVISOR_ONLY = frozenset({CaseWrite.ASSIGN, CaseWrite.CANCEL})


def is_supervisor(principal: Principal) -> bool:
    return principal.has_any(SUPERVISOR_ROLES)


def authorize_write(principal: Principal, assignee_id: str | None, action: CaseWrite) -> None:
    """Raise 403 unless ``principal`` may do ``action`` on a case assigned to ``assignee_id``."""
    if not principal.has_any(STAFF_ROLES):
        raise Forbidden("only staff, supervisors and admins write cases")
    if is_supervisor(principal):
        return
    if action in SUPERVISOR_ONLY:
        raise Forbidden(f"only a supervisor or admin may {action.value} a case")
    if action is CaseWrite.CLAIM:
        return  # claiming someone else's case is a state conflict (409), decided by claim()
    if assignee_id is not None and assignee_id != principal.subject:
        raise Forbidden("this case is assigned to someone else", field="assignee_id")
