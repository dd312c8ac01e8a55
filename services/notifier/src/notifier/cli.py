"""Operator commands: ``notifier --help``."""

from __future__ import annotations

from casebridge_shared.operations import service_app
from notifier.bootstrap import Container, bootstrap
from notifier.db import MIGRATIONS, outbox
from notifier.settings import get_settings


def _container() -> Container:
    return bootstrap(get_settings())


app = service_app(
    "notifier",
    settings=get_settings,
    migrations_dir=MIGRATIONS,
    worker_help="Run the worker: case events into notifications, deliveries sent, escalations fired.",
    make_container=_container,
    outbox=outbox,
)
