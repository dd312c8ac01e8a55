"""Operator commands: ``case-handling --help``."""

from __future__ import annotations

from case_handling.bootstrap import Container, bootstrap
from case_handling.db import MIGRATIONS, outbox
from case_handling.settings import get_settings
from casebridge_shared.operations import service_app


def _container() -> Container:
    return bootstrap(get_settings())


app = service_app(
    "case-handling",
    settings=get_settings,
    migrations_dir=MIGRATIONS,
    worker_help="Run the worker: orders become cases (consumer), case events go out (relay).",
    make_container=_container,
    outbox=outbox,
)
