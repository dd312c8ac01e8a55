"""Legal products (A1)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Column, Numeric, Text
from sqlmodel import Field

from casebridge_shared.currency import check_amount, money
from casebridge_shared.db import UTCDateTime, new_id, utcnow
from order_intake.db import Base


class Product(Base, table=True):
    __tablename__ = "products"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    title: str = Field(max_length=200)
    description: str = Field(sa_column=Column(Text, nullable=False))
    deliverables: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    category: str = Field(max_length=100, index=True)
    price: Decimal = Field(sa_column=Column(Numeric(14, 3), nullable=False))
    currency: str = Field(max_length=3)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    active: bool = True
    archived_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    version: int = 1
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    @property
    def archived(self) -> bool:
        return self.archived_at is not None


_CATEGORY = PydanticField(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_-]*$")
_CURRENCY = PydanticField(min_length=3, max_length=3, pattern=r"^[A-Z]{3}$")
_PRICE = PydanticField(ge=0, max_digits=14, decimal_places=3)
_ATTRIBUTES_MAX = 50


def _check_attributes(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(value) > _ATTRIBUTES_MAX:
        raise ValueError(f"at most {_ATTRIBUTES_MAX} attributes")
    return value


class ProductCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = PydanticField(min_length=1, max_length=200)
    description: str = PydanticField(min_length=1, max_length=20_000)
    deliverables: list[str] = PydanticField(default_factory=list, max_length=50)
    category: str = _CATEGORY
    price: Decimal = _PRICE
    currency: str = _CURRENCY
    attributes: dict[str, Any] = PydanticField(default_factory=dict)
    active: bool = True

    _attrs = field_validator("attributes")(_check_attributes)

    @model_validator(mode="after")
    def _price_fits_currency(self) -> ProductCreate:
        problem = check_amount(self.price, self.currency)
        if problem:
            raise ValueError(problem)
        return self


class ProductUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = PydanticField(default=None, min_length=1, max_length=200)
    description: str | None = PydanticField(default=None, min_length=1, max_length=20_000)
    deliverables: list[str] | None = PydanticField(default=None, max_length=50)
    category: str | None = PydanticField(
        default=None, min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_-]*$"
    )
    price: Decimal | None = PydanticField(default=None, ge=0, max_digits=14, decimal_places=3)
    currency: str | None = PydanticField(default=None, min_length=3, max_length=3, pattern=r"^[A-Z]{3}$")
    attributes: dict[str, Any] | None = None
    active: bool | None = None

    _attrs = field_validator("attributes")(_check_attributes)


class ProductRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    title: str
    description: str
    deliverables: list[str]
    category: str
    price: Decimal
    currency: str
    attributes: dict[str, Any]
    active: bool
    archived: bool
    version: int
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="after")
    def _price_in_minor_units(self) -> ProductRead:
        self.price = money(self.price, self.currency)
        return self
