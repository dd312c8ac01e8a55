"""Structured JSON logs (structlog) carrying the current span's trace id."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy.exc import StatementError

from casebridge_shared.tracing import current_ids

# Keys whose values must never reach a log line.
_SECRET_KEYS = re.compile(r"pass(word)?|secret|token|authorization|private|api[_-]?key", re.I)
# Nor the personal fields of events (docs/events/classification.md): log lines name people by id.
# A safety net for a careless `email=` in a log call; the call sites pass ids only.
_PERSONAL_KEYS = re.compile(
    r"e-?mail|full_name|(author|assignee|customer)_name|phone|client_ip|user_agent|^body$", re.I
)


# An email address inside a value: a mail server's or a library's error text names the recipient
# ("SMTPRecipientRefused(550, ..., 'jane@example.org')"), which no call site can foresee.
_EMAIL_ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


def _redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key, value in list(event_dict.items()):
        if key != "event" and (_SECRET_KEYS.search(key) or _PERSONAL_KEYS.search(key)):
            event_dict[key] = "[redacted]"
        elif isinstance(value, str) and "@" in value:
            event_dict[key] = _EMAIL_ADDRESS.sub("[email]", value)
    return event_dict


def add_trace_ids(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """``trace_id`` and ``span_id`` of the current OpenTelemetry span: a request's, or a worker's
    span for the event it is applying or the delivery it is sending, so any line can be
    found from a trace and the other way round. A value bound by the caller stands."""
    ids = current_ids()
    if ids is not None:
        event_dict.setdefault("trace_id", ids[0])
        event_dict.setdefault("span_id", ids[1])
    return event_dict


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """``exc`` for a log line, without the data it was raised over.

    A failing handler's exception often carries the event's fields: SQLAlchemy
    adds the statement's parameters, PostgreSQL a DETAIL line with the duplicate
    key's value, pydantic the rejected input. Those are personal data of the
    event (an email, a name); the type, the message's first line, the constraint
    or the field's location are what an operator needs, and the event itself is in
    the dead letters for the rest.
    """
    if isinstance(exc, ValidationError):
        text = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}" for err in exc.errors()[:5]
        )
    elif isinstance(exc, StatementError):
        cause = exc.orig
        first = str(cause).strip().splitlines()[0] if cause is not None and str(cause).strip() else ""
        text = f"{type(cause).__name__}: {first}" if cause is not None else "statement failed"
    else:
        text = str(exc)
    return f"{type(exc).__name__}: {text}"[:limit] if text else type(exc).__name__


def configure_logging(service: str, *, level: str = "INFO", json: bool = True) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Route stdlib logging (uvicorn, aiokafka, alembic) through the same JSON renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
