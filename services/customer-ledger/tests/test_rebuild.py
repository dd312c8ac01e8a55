"""The tables are views of the journal: `customer-ledger rebuild` recreates them identically (B8)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from casebridge_shared.auth import Department, Principal, Role
from casebridge_shared.events import CloudEvent
from customer_ledger.access import service as access
from customer_ledger.access.models import CorrectionCreate
from customer_ledger.bootstrap import Container
from customer_ledger.cli import app as cli
from customer_ledger.customers import service as customers
from customer_ledger.customers.events import OrderState
from customer_ledger.customers.models import (
    CHAIN,
    AssociationCreate,
    CustomerCreate,
    CustomerUpdate,
    DemandCreate,
    DemandUpdate,
    HandOff,
    PaymentCorrection,
    PaymentCreate,
    ProgressCorrection,
    ProgressCreate,
    Removal,
)
from customer_ledger.grants import service as grants
from customer_ledger.grants.models import GrantCreate
from customer_ledger.records import differences, rebuild, record_login, snapshot
from customer_ledger.settings import get_settings

ADMIN = Principal(subject="admin-1", roles=frozenset({Role.ADMIN}))


def department_user(department: Department) -> Principal:
    return Principal(
        subject=f"{department.value}-user", roles=frozenset({Role.DEPARTMENT}), department=department
    )


@dataclass
class Workload:
    """A seeded mix of every kind of operation, each valid for the state it finds."""

    container: Container
    rng: random.Random = field(default_factory=lambda: random.Random(9162))
    customers: dict[str, Department] = field(default_factory=dict)  # id -> holding department
    demands: list[tuple[str, str]] = field(default_factory=list)
    grant_ids: list[str] = field(default_factory=list)
    extra_associations: list[tuple[str, Department]] = field(default_factory=list)
    department_grants: set[tuple[Department, str]] = field(default_factory=set)
    payments: list[tuple[str, str]] = field(default_factory=list)
    progress: list[tuple[str, str]] = field(default_factory=list)
    done: int = 0

    async def run(self, operations: int, per_transaction: int = 250) -> None:
        while self.done < operations:
            async with self.container.uow() as uow:
                for _ in range(min(per_transaction, operations - self.done)):
                    await self.step(uow)
                    self.done += 1
                await uow.commit()

    async def step(self, uow: object) -> None:
        from casebridge_shared.outbox import UnitOfWork

        assert isinstance(uow, UnitOfWork)
        s = uow.session
        rng = self.rng
        roll = rng.random()
        if not self.customers or roll < 0.08:
            who = rng.choice([ADMIN, department_user(Department.SALES)])
            c = await customers.create_customer(
                s, who, CustomerCreate(full_name=f"Customer {self.done}"), default_department="sales"
            )
            self.customers[c.id] = Department(c.stage)
            return
        cid = rng.choice(sorted(self.customers))
        holder = self.customers[cid]
        if roll < 0.13:
            event = CloudEvent(
                id=f"e-{self.done}",
                source="/test",
                type="casebridge.orders.order-placed.v1",
                time=datetime.now(UTC),
                partitionkey=f"o-{self.done}",
                aggregateversion=1,
                data={},
            )
            state = OrderState.model_validate(
                {
                    "order_id": f"o-{self.done}",
                    "customer": {
                        "customer_id": f"oc-{self.done % 40}",
                        "full_name": "Orderer",
                        "email": "o@x.org",
                    },
                    "product": {"title": "Will", "category": "family"},
                    "description": "A will",
                    "status": "submitted",
                    "version": 1,
                    "updated_at": datetime.now(UTC).isoformat(),
                }
            )
            await customers.order_handlers("sales")[event.type](uow, event, state)
            self.customers.setdefault(f"oc-{self.done % 40}", Department.SALES)
        elif roll < 0.25:
            d = await customers.add_demand(
                s, department_user(holder), cid, DemandCreate(title="Need", description=f"n{self.done}")
            )
            self.demands.append((cid, d.id))
        elif roll < 0.33 and self.demands:
            dcid, did = rng.choice(self.demands)
            await customers.update_demand(
                s, ADMIN, dcid, did, DemandUpdate(status=rng.choice(["open", "met"]), reason="review")
            )
        elif roll < 0.37 and self.payments and self.progress:
            pcid, pid = rng.choice(self.payments)
            await customers.correct_payment(
                s, ADMIN, pcid, pid, PaymentCorrection(amount=Decimal(rng.randint(1, 99)), reason="typo")
            )
            ecid, eid = rng.choice(self.progress)
            await customers.correct_progress(
                s, ADMIN, ecid, eid, ProgressCorrection(note="fixed", reason="typo")
            )
        elif roll < 0.40:
            await customers.update_customer(
                s, ADMIN, cid, CustomerUpdate(phone=f"+1 {self.done}", reason="feedback", feedback_ref="FB")
            )
        elif roll < 0.48 and holder != Department.AFTER_SALES:
            await customers.hand_off(s, department_user(holder), cid, HandOff())
            self.customers[cid] = CHAIN[CHAIN.index(holder) + 1]
        elif roll < 0.53:
            payment = await customers.add_payment(
                s,
                ADMIN,
                cid,
                PaymentCreate(amount=Decimal("10.5"), currency="EUR", received_at=datetime.now(UTC)),
            )
            self.payments.append((cid, payment.id))
        elif roll < 0.60:
            entry = await customers.add_progress(
                s, ADMIN, cid, ProgressCreate(project="p", stage=f"s{self.done}")
            )
            self.progress.append((cid, entry.id))
        elif roll < 0.64:
            department = rng.choice(list(Department))
            table = rng.choice(["customers", "demands", "payments"])
            if (department, table) in self.department_grants:
                # A fresh customer grant is always new (an identical grant would be refused).
                g = await grants.grant(s, ADMIN, GrantCreate(customer_id=f"c-{self.done}", table="progress"))
            else:
                g = await grants.grant(
                    s,
                    ADMIN,
                    GrantCreate(department=department, table=table, fields=["id"], scope="all"),
                )
                self.department_grants.add((department, table))
            self.grant_ids.append(g.id)
        elif roll < 0.67 and self.grant_ids:
            await grants.revoke(s, ADMIN, self.grant_ids.pop(rng.randrange(len(self.grant_ids))), "done")
        elif roll < 0.70:
            other = rng.choice([d for d in Department if d != holder])
            if (cid, other) in self.extra_associations:
                await customers.remove_association(s, ADMIN, cid, other, Removal(reason="no longer needed"))
                self.extra_associations.remove((cid, other))
            elif not await grants.is_associated(s, cid, other.value):
                await customers.add_association(s, ADMIN, cid, AssociationCreate(department=other))
                self.extra_associations.append((cid, other))
            else:
                await customers.get_customer(s, ADMIN, cid)
        elif roll < 0.78:
            index = await record_login(
                s,
                {
                    "event_id": f"l-{self.done}",
                    "outcome": rng.choice(["success", "failure"]),
                    "user_id": "u-1",
                    "email": "u@example.org",
                    "reason": None,
                    "department": None,
                    "client_ip": "127.0.0.1",
                    "user_agent": None,
                    "at": datetime.now(UTC).isoformat(),
                },
            )
            if rng.random() < 0.2:
                await access.correct(
                    s, ADMIN, index, CorrectionCreate(corrected={"client_ip": "10.0.0.2"}, reason="proxy")
                )
        else:
            table = rng.choice(["demands", "progress", "payments", "associations"])
            await customers.list_of_customer(s, ADMIN, cid, table)


async def test_rebuild_after_ten_thousand_mixed_operations_equals_the_live_tables(
    container: Container,
) -> None:
    work = Workload(container)
    await work.run(10_000)
    async with container.uow() as uow:
        live = await snapshot(uow.session)
        replayed = await rebuild(uow.session)
        rebuilt = await snapshot(uow.session)
        await uow.commit()
    assert replayed >= 10_000
    # Every kind of row is there, deletes and updates included.
    for table in ("customers", "demands", "associations", "project_progress", "payments", "grants"):
        assert live[table], table
    operations = {c["operation"] for c in live["change_records"]}
    assert operations == {"insert", "update", "delete"}
    assert live["read_records"] and live["login_records"] and live["record_corrections"]
    assert differences(live, rebuilt) == []
    assert live == rebuilt


async def test_rebuild_command_finds_and_repairs_a_view_changed_behind_the_journal(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    await Workload(container).run(300)
    settings = container.settings
    monkeypatch.setenv("CASEBRIDGE_CUSTOMER_LEDGER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CASEBRIDGE_CUSTOMER_LEDGER_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("CASEBRIDGE_ENVIRONMENT", "test")
    get_settings.cache_clear()

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["rebuild", *args])
        return result.exit_code, result.output

    try:
        code, out = await asyncio.to_thread(run, "--check")
        assert code == 0 and "identical" in out, out
        async with container.db.write_session() as s:
            await s.execute(text("UPDATE customers SET full_name = 'Mallory' WHERE stage = 'sales'"))
            await s.commit()
        code, out = await asyncio.to_thread(run, "--check")
        assert code == 1 and "customers" in out and "Mallory" in out, out
        code, out = await asyncio.to_thread(run)
        assert code == 1 and "rebuilt from" in out  # it reports what it repaired
        code, out = await asyncio.to_thread(run, "--check")
        assert code == 0, out
    finally:
        get_settings.cache_clear()
