"""Keeping the directory of people current from identity events. No HTTP here."""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.events import CloudEvent
from casebridge_shared.inbox import Handler
from casebridge_shared.outbox import UnitOfWork
from casebridge_shared.revocation import ACCESS_EVENTS, AccessChanged, record
from notifier import memo
from notifier.db import revocations
from notifier.directory.events import ROLES_CHANGED, USER_CREATED, USER_UPDATED, UserSnapshot
from notifier.directory.models import Person


async def user_changed(uow: UnitOfWork, _event: CloudEvent, user: UserSnapshot) -> None:
    person = await uow.session.get(Person, user.user_id)
    if person is None:
        person = Person(user_id=user.user_id, email=user.email)
    elif user.version <= person.version:
        return  # an older snapshot arriving late changes nothing
    person.email = user.email
    person.full_name = user.full_name[:200]
    person.roles = " ".join(sorted(set(user.roles)))
    person.active = user.active
    person.version = user.version
    uow.session.add(person)
    memo.forget(uow.session)


async def access_changed(uow: UnitOfWork, _event: CloudEvent, change: AccessChanged) -> None:
    """A user disabled, enabled or their sessions revoked: refused by the api
    (identity_revocations), and a disabled person is alerted no more."""
    await record(uow, revocations, change)
    person = await uow.session.get(Person, change.user_id)
    if person is not None and change.version > person.version:
        person.active = change.active
        person.version = change.version
        uow.session.add(person)
        memo.forget(uow.session)


HANDLERS: dict[str, Handler] = {
    USER_CREATED: user_changed,
    USER_UPDATED: user_changed,
    ROLES_CHANGED: user_changed,
    **dict.fromkeys(ACCESS_EVENTS, access_changed),
}


async def people_with_role(session: AsyncSession, role: str) -> list[Person]:
    """Active people holding ``role`` (the LIKE narrows, ``has_role`` decides); remembered per transaction."""

    async def load() -> list[Person]:
        rows = await session.exec(
            select(Person).where(col(Person.active).is_(True), col(Person.roles).contains(role))
        )
        return [p for p in rows.all() if p.has_role(role)]

    return await memo.once(session, ("people-with-role", role), load)
