"""Demo data for ``make up`` only: logins for every role and a small catalog.

Never run by the services themselves; `make up` calls `order-intake seed-demo`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TypedDict

from sqlmodel import select

from casebridge_shared.auth import Department, Role
from order_intake.bootstrap import Container
from order_intake.catalog import service as catalog
from order_intake.catalog.models import Product, ProductCreate
from order_intake.identity import service as identity
from order_intake.identity.models import CustomerRegistration, User, UserCreate

DEMO_PASSWORD = "casebridge-demo"  # noqa: S105 (printed by make up; demo only)

DEMO_USERS: list[tuple[str, str, list[Role], Department | None]] = [
    ("admin@demo.casebridge.example", "Ada Admin", [Role.ADMIN], None),
    ("staff@demo.casebridge.example", "Sam Staff", [Role.STAFF], None),
    ("supervisor@demo.casebridge.example", "Sue Supervisor", [Role.SUPERVISOR], None),
    ("auditor@demo.casebridge.example", "Avery Auditor", [Role.AUDITOR], None),
    *[
        (
            f"{d.value.replace('_', '-')}@demo.casebridge.example",
            f"{d.value.replace('_', ' ').title()} Desk",
            [Role.DEPARTMENT],
            d,
        )
        for d in Department
    ],
]
DEMO_CUSTOMER = ("customer@demo.casebridge.example", "Carla Customer")

# Where each person starts: (service, path) pairs; `make up` turns them into addresses on
# the service's own port. Each page lives in the service that owns the work (issue 26).
PORTAL = ("order-intake", "/portal/")
CONSOLE = ("case-handling", "/console/")
ALERTS = ("notifier", "/app/")
WORKSPACE = ("customer-ledger", "/workspace/")
PAGES: dict[str, list[tuple[str, str]]] = {
    "customer": [PORTAL],
    "staff": [CONSOLE, ALERTS],
    "supervisor": [CONSOLE, ALERTS],
    "admin": [("order-intake", "/admin/"), ("notifier", "/admin/"), WORKSPACE],
    "auditor": [WORKSPACE],
    **{d.value: [WORKSPACE] for d in Department},
}


class DemoPage(TypedDict):
    service: str
    path: str


class DemoLogin(TypedDict):
    role: str
    email: str
    password: str
    pages: list[DemoPage]


def _login(role: str, email: str, pages: list[tuple[str, str]]) -> DemoLogin:
    return {
        "role": role,
        "email": email,
        "password": DEMO_PASSWORD,
        "pages": [{"service": service, "path": path} for service, path in pages],
    }


DEMO_PRODUCTS = [
    ProductCreate(
        title="Employment contract review",
        description="A lawyer reviews your employment contract and explains the risks.",
        deliverables=["Written review", "30-minute call"],
        category="employment",
        price=Decimal("249.00"),
        currency="EUR",
        attributes={"turnaround_days": 5},
    ),
    ProductCreate(
        title="Tenancy dispute first assessment",
        description="We assess your dispute with your landlord and propose next steps.",
        deliverables=["Assessment letter"],
        category="tenancy",
        price=Decimal("149.00"),
        currency="EUR",
        attributes={"turnaround_days": 3},
    ),
    ProductCreate(
        title="Company formation (GmbH)",
        description="Articles of association, notary appointment and registration.",
        deliverables=["Articles of association", "Registration filing"],
        category="corporate",
        price=Decimal("1490.00"),
        currency="EUR",
        attributes={"turnaround_days": 14},
    ),
]


async def seed(container: Container) -> list[DemoLogin]:
    """Create what is missing (idempotent) and return one login per person, with their pages."""
    logins: list[DemoLogin] = []
    for email, name, roles, department in DEMO_USERS:
        async with container.uow() as uow:
            exists = (await uow.session.exec(select(User).where(User.email == email))).first()
            if exists is None:
                await identity.create_user(
                    uow,
                    UserCreate(
                        email=email,
                        password=DEMO_PASSWORD,
                        full_name=name,
                        roles=roles,
                        department=department,
                    ),
                )
        role = department.value if department else roles[0].value
        logins.append(_login(role, email, PAGES[role]))
    email, name = DEMO_CUSTOMER
    async with container.uow() as uow:
        exists = (await uow.session.exec(select(User).where(User.email == email))).first()
        if exists is None:
            await identity.register_customer(
                uow, CustomerRegistration(email=email, password=DEMO_PASSWORD, full_name=name)
            )
    logins.append(_login("customer", email, PAGES["customer"]))
    for product in DEMO_PRODUCTS:
        async with container.uow() as uow:
            existing = (await uow.session.exec(select(Product).where(Product.title == product.title))).first()
            if existing is None:
                await catalog.create_product(uow, product)
    return logins
