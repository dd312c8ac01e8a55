"""`make up` (casebridge up): no login the banner does not list; a current database and
seeded demo logins are left alone on the next start."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from casebridge_shared import migrations
from casebridge_shared.devstack import (
    DEMO_LOGINS_FILE,
    Service,
    bootstrap_admin_env,
    discover,
    migrate,
    schema_state,
    script_heads,
    seed_demo,
    seeded_logins,
    sqlite_database,
    sqlite_revisions,
)

LOGINS = [
    {"role": "admin", "email": "admin@demo.casebridge.example", "password": "casebridge-demo"},
    {"role": "staff", "email": "staff@demo.casebridge.example", "password": "casebridge-demo"},
]


def test_the_bootstrap_admin_is_the_listed_demo_admin() -> None:
    env = bootstrap_admin_env({"CASEBRIDGE_ENVIRONMENT": "development"}, LOGINS)
    assert env == {
        "CASEBRIDGE_ORDER_INTAKE_BOOTSTRAP_ADMIN_EMAIL": "admin@demo.casebridge.example",
        "CASEBRIDGE_ORDER_INTAKE_BOOTSTRAP_ADMIN_PASSWORD": "casebridge-demo",
    }


def test_a_bootstrap_admin_the_developer_configured_is_kept() -> None:
    for name in ("CASEBRIDGE_BOOTSTRAP_ADMIN_EMAIL", "CASEBRIDGE_ORDER_INTAKE_BOOTSTRAP_ADMIN_PASSWORD"):
        assert bootstrap_admin_env({name: "x"}, LOGINS) == {}
    assert bootstrap_admin_env({}, LOGINS[1:]) == {}


# --- a current database is not migrated again (issue 28) ---------------------------------


def _service(name: str) -> Service:
    (service,) = [s for s in discover() if s.name == name]
    return service


def _stack_env(var_dir: Path) -> dict[str, str]:
    """What ``up`` hands the services: this environment without settings from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
    return env | {"CASEBRIDGE_ENVIRONMENT": "development", "CASEBRIDGE_VAR_DIR": str(var_dir)}


def _migrations(name: str) -> Path:
    package = _service(name).package_dir()
    assert package is not None
    return package / "migrations"


@pytest.mark.parametrize("name", ["order-intake", "case-handling", "notifier", "customer-ledger"])
def test_the_heads_read_from_the_scripts_are_alembics(name: str) -> None:
    # Alembic runs every script to find them; ours reads their source. Both must agree.
    assert script_heads(_migrations(name) / "versions") == migrations.current_heads(_migrations(name))


def test_a_merge_revision_is_the_one_head(tmp_path: Path) -> None:
    scripts = {
        "a.py": "revision = 'a'\ndown_revision = None\n",
        "b.py": "revision: str = 'b'\ndown_revision: str | None = 'a'\n",
        "c.py": "revision = 'c'\ndown_revision = 'a'\n",
        "d.py": "revision = 'd'\ndown_revision = ('b', 'c')\n",
        "helpers.py": "VALUE = 1\n",
    }
    for file, text in scripts.items():
        (tmp_path / file).write_text(text)
    assert script_heads(tmp_path) == {"d"}
    (tmp_path / "d.py").unlink()
    assert script_heads(tmp_path) == {"b", "c"}


def test_a_database_is_migrated_only_while_it_is_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = _service("order-intake")
    env = _stack_env(tmp_path)
    heads = migrations.current_heads(_migrations(service.name))
    (head,) = heads
    previous = (
        ScriptDirectory.from_config(migrations.alembic_config(_migrations(service.name), "sqlite://"))
        .get_revision(head)
        .down_revision
    )
    assert isinstance(previous, str)

    state = schema_state(env, service)
    assert state is not None and not state.current
    assert state.step() == f"new database -> {head}"
    url = f"sqlite+aiosqlite:///{tmp_path / 'order-intake.sqlite3'}"
    migrations.upgrade(_migrations(service.name), url, previous)
    state = schema_state(env, service)
    assert state is not None and not state.current
    assert state.step() == f"{previous} -> {head}"

    # Behind: the service's own command migrates it, and says so first.
    assert migrate([service], env) == ["order-intake"]
    assert f"migrating order-intake: {previous} -> {head} ..." in capsys.readouterr().out
    state = schema_state(env, service)
    assert state is not None and state.current and state.recorded == heads

    # Current: nothing runs.
    assert migrate([service], env) == []
    assert f"order-intake: database current ({head})" in capsys.readouterr().out


def test_a_file_never_migrated_has_no_revision(tmp_path: Path) -> None:
    path = tmp_path / "order-intake.sqlite3"
    sqlite3.connect(path).close()
    assert sqlite_revisions(path) == frozenset()
    assert sqlite_revisions(tmp_path / "missing.sqlite3") == frozenset()
    assert not (tmp_path / "missing.sqlite3").exists()


def test_the_database_is_the_one_the_service_settings_name(tmp_path: Path) -> None:
    service = _service("case-handling")
    assert (
        sqlite_database({"CASEBRIDGE_VAR_DIR": str(tmp_path)}, service) == tmp_path / "case-handling.sqlite3"
    )
    own = {"casebridge_case_handling_database_url": f"sqlite+aiosqlite:///{tmp_path}/own.db?mode=rwc"}
    assert (
        sqlite_database(own | {"CASEBRIDGE_DATABASE_URL": "sqlite:///other.db"}, service)
        == tmp_path / "own.db"
    )
    # Only the service can tell where another database stands: up asks it, as before.
    postgres = {"CASEBRIDGE_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:5432/case_handling"}
    assert sqlite_database(postgres, service) is None
    assert schema_state(postgres, service) is None
    assert sqlite_database({"CASEBRIDGE_DATABASE_URL": "sqlite+aiosqlite:///:memory:"}, service) is None


# --- demo logins seeded once ----------------------------------------------------------------


def test_demo_logins_are_seeded_again_only_when_they_no_longer_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = _service("order-intake")
    env = _stack_env(tmp_path)
    database = tmp_path / "order-intake.sqlite3"
    migrations.upgrade(_migrations(service.name), f"sqlite+aiosqlite:///{database}")
    assert seeded_logins(service, env, tmp_path) is None

    logins = seed_demo(service, env, tmp_path)
    assert "seeding order-intake" in capsys.readouterr().out
    assert {login["role"] for login in logins} >= {"admin", "customer", "staff"}
    assert (tmp_path / DEMO_LOGINS_FILE).stat().st_mode & 0o077 == 0
    assert seed_demo(service, env, tmp_path) == logins
    assert "demo logins already seeded" in capsys.readouterr().out

    # A login deleted from the database: seeded again.
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM users WHERE email = ?", (logins[0]["email"],))
    assert seeded_logins(service, env, tmp_path) is None
    assert seed_demo(service, env, tmp_path) == logins
    assert seeded_logins(service, env, tmp_path) == logins

    # Other demo data than the one seeded (demo.py changed), or a file that is not ours.
    saved = json.loads((tmp_path / DEMO_LOGINS_FILE).read_text())
    (tmp_path / DEMO_LOGINS_FILE).write_text(json.dumps(saved | {"demo": "0" * 64}))
    assert seeded_logins(service, env, tmp_path) is None
    (tmp_path / DEMO_LOGINS_FILE).write_text("not json")
    assert seeded_logins(service, env, tmp_path) is None
