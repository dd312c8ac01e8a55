"""Each person's choice of channels per kind of notification, and their quiet hours."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import available_timezones

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Column, Integer
from sqlmodel import Field

from casebridge_shared.db import UTCDateTime, utcnow
from notifier.db import Base
from notifier.notifications.models import Channel, Kind

PERSON_CHANNELS = (Channel.IN_APP, Channel.PUSH, Channel.EMAIL)

# What someone who never set preferences gets: every alert in the app and on
# their phone; email only for what must not be missed.
DEFAULT_CHANNELS: dict[Kind, list[Channel]] = {
    Kind.CASE_OPENED: [Channel.IN_APP, Channel.PUSH],
    Kind.CASE_ASSIGNED: [Channel.IN_APP, Channel.PUSH, Channel.EMAIL],
    Kind.SOLUTION_PROPOSED: [Channel.IN_APP, Channel.PUSH],
    Kind.CASE_CANCELLED: [Channel.IN_APP, Channel.PUSH],
    Kind.CASE_ESCALATED: [Channel.IN_APP, Channel.PUSH, Channel.EMAIL],
    Kind.CUSTOMER_MESSAGE: [Channel.IN_APP, Channel.PUSH],
}


class Preference(Base, table=True):
    __tablename__ = "preferences"

    user_id: str = Field(primary_key=True, max_length=36)
    # kind -> list of channels; kinds not named fall back to DEFAULT_CHANNELS.
    channels: dict[str, list[str]] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    quiet_hours_start: time | None = None
    quiet_hours_end: time | None = None
    timezone: str = Field(default="UTC", max_length=64)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # One more with every change: the preferences' ETag (0 while there is no row: the defaults).
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))


class PreferencesWrite(BaseModel):
    channels: dict[Kind, list[Channel]] = {}
    quiet_hours_start: time | None = None
    quiet_hours_end: time | None = None
    timezone: str = "UTC"

    @field_validator("channels")
    @classmethod
    def _person_channels(cls, value: dict[Kind, list[Channel]]) -> dict[Kind, list[Channel]]:
        for kind, channels in value.items():
            for channel in channels:
                if channel not in PERSON_CHANNELS:
                    raise ValueError(f"{kind}: {channel} is not a personal channel (in_app, push, email)")
        return {k: sorted(set(v)) for k, v in value.items()}

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value not in available_timezones():
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)")
        return value


class PreferencesRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    channels: dict[Kind, list[Channel]]
    quiet_hours_start: time | None
    quiet_hours_end: time | None
    timezone: str
    version: int = PydanticField(0, description="0: the defaults, never saved")
