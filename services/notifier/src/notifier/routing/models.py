"""Teams of staff and which team a product category's new cases go to (editable by admins)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlalchemy import Column, ForeignKey, Integer, String
from sqlmodel import Field

from casebridge_shared.db import UTCDateTime, utcnow
from notifier.db import Base

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,99}$"


class Team(Base, table=True):
    __tablename__ = "teams"

    name: str = Field(primary_key=True, max_length=100)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # One more with every change: the team's ETag.
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))


class TeamMember(Base, table=True):
    __tablename__ = "team_members"

    team: str = Field(
        sa_column=Column(String(100), ForeignKey("teams.name", ondelete="CASCADE"), primary_key=True)
    )
    user_id: str = Field(primary_key=True, max_length=36)


class RoutingRule(Base, table=True):
    __tablename__ = "routing_rules"

    product_category: str = Field(primary_key=True, max_length=100)
    team: str = Field(sa_column=Column(String(100), ForeignKey("teams.name"), nullable=False))
    # SLA: a new case nobody claimed within this time alerts the supervisors,
    # and again after the second threshold.
    claim_within_minutes: int = 15
    escalate_again_after_minutes: int = 30
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # One more with every change: the rule's ETag.
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))


# -- API shapes ---------------------------------------------------------------


class TeamWrite(BaseModel):
    members: list[str] = PydanticField(
        default_factory=list, max_length=500, description="User ids of the team's staff members"
    )


class TeamRead(BaseModel):
    name: str
    members: list[str]
    updated_at: datetime
    version: int


class RoutingRuleWrite(BaseModel):
    team: str = PydanticField(pattern=NAME_PATTERN, description="Name of an existing team")
    claim_within_minutes: int = PydanticField(default=15, ge=1, le=7 * 24 * 60)
    escalate_again_after_minutes: int = PydanticField(
        default=30, ge=1, le=7 * 24 * 60, description="Must be later than claim_within_minutes"
    )


class RoutingRuleRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    product_category: str
    team: str
    claim_within_minutes: int
    escalate_again_after_minutes: int
    updated_at: datetime
    version: int
