"""The password policy (OWASP ASVS 5.0 V6.2): length, not blank, not common, not the email.

No composition rules (ASVS 6.2.5): any character counts, spaces included; length
is counted in Unicode code points. See ADR-0008 (docs/adr/0008-identity.md).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

MIN_LENGTH = 12
MAX_LENGTH = 256
# A local part this short ("a@…") would refuse too many good passwords by accident.
MIN_LOCAL_PART = 3


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common breached passwords, lowercased."""
    text = resources.files("order_intake.identity").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def password_problem(password: str, email: str | None = None) -> str | None:
    """Why ``password`` is refused, or None when it is acceptable."""
    if not password.strip():
        return "the password must not be blank"
    if len(password) < MIN_LENGTH:
        return f"the password must have at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"the password must have at most {MAX_LENGTH} characters"
    if password.strip().lower() in common_passwords():
        return "this password is on a list of commonly used (breached) passwords; choose another"
    if email:
        local = email.strip().lower().partition("@")[0]
        if len(local) >= MIN_LOCAL_PART and local in password.lower():
            return "the password must not contain your email address"
    return None


def check_password(password: str, email: str | None = None) -> str:
    """A pydantic validator: the password, or ValueError with the reason."""
    problem = password_problem(password, email)
    if problem is not None:
        raise ValueError(problem)
    return password
