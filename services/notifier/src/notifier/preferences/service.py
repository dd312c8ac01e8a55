"""Which channels a notification goes out on for a person, now. No HTTP here.

In-app is always kept (it is the record the person can come back to) unless
they turned it off for that kind. Quiet hours hold back push and email, but
an escalation is sent anyway: it exists because something is already late.
"""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.db import utcnow
from casebridge_shared.versioning import check_version
from notifier.notifications.models import Channel, Kind
from notifier.preferences.models import DEFAULT_CHANNELS, Preference, PreferencesRead, PreferencesWrite


def in_quiet_hours(preference: Preference, at: datetime) -> bool:
    start, end = preference.quiet_hours_start, preference.quiet_hours_end
    if start is None or end is None or start == end:
        return False
    local: time = at.astimezone(ZoneInfo(preference.timezone)).time()
    if start < end:
        return start <= local < end
    return local >= start or local < end  # over midnight, e.g. 22:00-07:00


def channels_for(preference: Preference | None, kind: Kind, at: datetime) -> set[Channel]:
    if preference is None:
        return set(DEFAULT_CHANNELS[kind])
    chosen = preference.channels.get(kind.value)
    channels = {Channel(c) for c in chosen} if chosen is not None else set(DEFAULT_CHANNELS[kind])
    if kind is not Kind.CASE_ESCALATED and in_quiet_hours(preference, at):
        channels -= {Channel.PUSH, Channel.EMAIL}
    return channels


def as_read(preference: Preference | None) -> PreferencesRead:
    stored = preference.channels if preference else {}
    channels = {k: [Channel(c) for c in stored.get(k.value, DEFAULT_CHANNELS[k])] for k in Kind}
    return PreferencesRead(
        channels=channels,
        quiet_hours_start=preference.quiet_hours_start if preference else None,
        quiet_hours_end=preference.quiet_hours_end if preference else None,
        timezone=preference.timezone if preference else "UTC",
        version=preference.version if preference else 0,
    )


async def get(session: AsyncSession, user_id: str) -> Preference | None:
    return await session.get(Preference, user_id)


async def put(
    session: AsyncSession, user_id: str, body: PreferencesWrite, expected_version: int | None = None
) -> Preference:
    stored = await session.get(Preference, user_id)
    # No row yet is version 0 (the defaults): that is what a first read's ETag names.
    check_version(stored.version if stored else 0, expected_version)
    if stored is not None:
        stored.version += 1
    preference = stored or Preference(user_id=user_id)
    preference.channels = {k.value: [c.value for c in v] for k, v in body.channels.items()}
    preference.quiet_hours_start = body.quiet_hours_start
    preference.quiet_hours_end = body.quiet_hours_end
    preference.timezone = body.timezone
    preference.updated_at = utcnow()
    session.add(preference)
    await session.flush()
    return preference
