"""Accounts and the keys that sign their tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, Index, String, Text
from sqlmodel import Field

from casebridge_shared.db import UTCDateTime, new_id, utcnow
from order_intake.db import Base


class User(Base, table=True):
    __tablename__ = "users"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    email: str = Field(sa_column=Column(String(320), unique=True, nullable=False))
    password_hash: str = Field(sa_column=Column(Text, nullable=False))
    full_name: str = Field(max_length=200)
    phone: str | None = Field(default=None, max_length=40)
    roles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    department: str | None = Field(default=None, max_length=40)
    active: bool = True
    # Tokens issued before this are refused everywhere (sessions revoked, or disabled).
    sessions_not_before: datetime | None = Field(default=None, sa_type=UTCDateTime)
    version: int = 1
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SigningKey(Base, table=True):
    __tablename__ = "signing_keys"

    kid: str = Field(primary_key=True, max_length=64)
    algorithm: str = Field(max_length=16)
    private_pem: str = Field(sa_column=Column(Text, nullable=False))
    public_jwk: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    retired_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class LoginThrottle(Base, table=True):
    """Failed-login counter of one account (email) or one client address (identity/throttle.py).

    In the database, not in memory, so every api process sees the same counts.
    """

    __tablename__ = "login_throttles"
    __table_args__ = (Index("ix_login_throttles_last_failure_at", "last_failure_at"),)

    key: str = Field(primary_key=True, max_length=400)  # "account:<email>" or "address:<ip>"
    failures: int = 0
    last_failure_at: datetime = Field(sa_type=UTCDateTime)
    blocked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RefreshToken(Base, table=True):
    """One refresh token: opaque to the client, stored here only as its SHA-256.

    Every use replaces it by a new one of the same family (rotation); a token used a
    second time means it was stolen (or replayed), and the whole family is revoked
    (OAuth 2.0 Security BCP, RFC 9700 section 4.14).
    """

    __tablename__ = "refresh_tokens"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    token_hash: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    family_id: str = Field(max_length=36, index=True)
    user_id: str = Field(max_length=36, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PasswordReset(Base, table=True):
    """One emailed password-reset link: stored only as the SHA-256 of its token, good for one use.

    A newer request replaces the older links of the same account (they are marked used), and a
    successful reset or password change burns every outstanding one.
    """

    __tablename__ = "password_resets"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    token_hash: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    user_id: str = Field(max_length=36, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# --- API shapes -----------------------------------------------------------

from pydantic import BaseModel, ConfigDict, EmailStr, ValidationInfo, field_validator  # noqa: E402
from pydantic import Field as PydanticField  # noqa: E402
from pydantic_core import PydanticCustomError  # noqa: E402

from casebridge_shared.auth import Department, Role  # noqa: E402
from order_intake.identity.passwords import MAX_LENGTH, MIN_LENGTH, password_problem  # noqa: E402

_NAME = PydanticField(min_length=1, max_length=200)
_PHONE = PydanticField(default=None, min_length=3, max_length=40, pattern=r"^[0-9 +()./-]+$")
_PASSWORD = PydanticField(
    min_length=MIN_LENGTH,
    max_length=MAX_LENGTH,
    description=f"at least {MIN_LENGTH} characters, not blank, not a common password, "
    "not containing the email's local part",
)


def _policy(password: str | None, email: str | None) -> str | None:
    if password is None:
        return None
    problem = password_problem(password, email)
    if problem is not None:
        raise PydanticCustomError("password_policy", problem)
    return password


class _NewPassword(BaseModel):
    """A body that sets a password for the account named by its ``email``."""

    @field_validator("password", mode="after", check_fields=False)
    @classmethod
    def _password_policy(cls, password: str, info: ValidationInfo) -> str | None:
        return _policy(password, info.data.get("email"))


class CustomerRegistration(_NewPassword):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    password: str = _PASSWORD
    full_name: str = _NAME
    phone: str | None = _PHONE


class UserCreate(_NewPassword):
    """An admin creating a staff, supervisor, admin or department user."""

    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    password: str = _PASSWORD
    full_name: str = _NAME
    phone: str | None = _PHONE
    roles: list[Role] = PydanticField(min_length=1)
    department: Department | None = None


class ProfileUpdate(BaseModel):
    """What a user may change about themselves (A3)."""

    model_config = ConfigDict(extra="forbid")

    full_name: str | None = PydanticField(default=None, min_length=1, max_length=200)
    phone: str | None = _PHONE
    password: str | None = PydanticField(default=None, min_length=MIN_LENGTH, max_length=MAX_LENGTH)
    current_password: str | None = PydanticField(default=None, max_length=MAX_LENGTH)

    @field_validator("password", mode="after")
    @classmethod
    def _password_policy(cls, password: str | None) -> str | None:
        return _policy(password, None)  # the email part is checked by update_profile


class PasswordResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr


class PasswordResetConfirm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = PydanticField(min_length=1, max_length=200)
    new_password: str = PydanticField(min_length=MIN_LENGTH, max_length=MAX_LENGTH)

    @field_validator("new_password", mode="after")
    @classmethod
    def _password_policy(cls, password: str) -> str | None:
        return _policy(password, None)  # the email part is checked once the token names the account


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = PydanticField(min_length=1, max_length=MAX_LENGTH)
    new_password: str = PydanticField(min_length=MIN_LENGTH, max_length=MAX_LENGTH)

    @field_validator("new_password", mode="after")
    @classmethod
    def _password_policy(cls, password: str) -> str | None:
        return _policy(password, None)  # the email part is checked by change_password


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    full_name: str
    phone: str | None
    roles: list[str]
    department: str | None
    active: bool
    version: int
    created_at: datetime
    updated_at: datetime


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 (the OAuth2 token type, not a secret)
    expires_in: int
    # Opaque; exchange it (grant_type=refresh_token) for a new pair before it expires.
    refresh_token: str | None = None
    refresh_expires_in: int | None = None
