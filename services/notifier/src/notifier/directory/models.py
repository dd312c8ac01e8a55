"""People the notifier can alert: a copy of order-intake's users, kept from identity events."""

from __future__ import annotations

from sqlmodel import Field

from notifier.db import Base


class Person(Base, table=True):
    __tablename__ = "people"

    user_id: str = Field(primary_key=True, max_length=36)
    email: str = Field(max_length=320)
    full_name: str = Field(default="", max_length=200)
    # Space-separated roles, as in a token's ``scope``: small, and queryable with LIKE.
    roles: str = Field(default="", max_length=200)
    active: bool = True
    version: int = 0

    def has_role(self, role: str) -> bool:
        return role in self.roles.split()
