"""What the signed-in user may do in the ledger, for the workspace pages (issue 26 §3)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class TableRight(BaseModel):
    scope: Literal["associated", "all"] = Field(
        description="Only the customers associated with the department, or every customer"
    )
    fields: list[str] | None = Field(
        description="Only these fields (with id and customer_id); null: every field"
    )


class WriteRights(BaseModel):
    register_customers: bool
    change_customers: bool = Field(description="Contact data, of customers associated with the department")
    demands: bool
    progress: bool
    payments: bool
    hand_off: bool = Field(
        description="Hand a customer on: the department holding it, to the next one (admin: anywhere)"
    )
    correct_progress: bool
    associations: bool


class Permissions(BaseModel):
    subject: str
    email: str | None
    name: str | None
    roles: list[str]
    department: str | None
    admin: bool
    read: dict[str, TableRight] = Field(description="Tables the user may read, by grant name")
    write: WriteRights
    grants: bool = Field(description="May grant and withdraw read rights")
    audit: bool = Field(description="May read the access trail and the journal's entries")
    hand_off_chain: list[str] = Field(description="The departments in hand-off order")
