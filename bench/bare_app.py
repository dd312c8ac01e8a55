"""The baseline for bench_orders_api.py: a bare FastAPI endpoint that inserts one row.

``POST /rows`` has no auth, no middleware, no outbox: parse a JSON body like ``POST /orders``'s, insert
one row in one write transaction, answer 201 with the row. It goes through
``casebridge_shared.db.Database`` (the same engine setup as the services: same
driver, SQLite WAL + busy timeout + ``BEGIN IMMEDIATE`` writes, PostgreSQL pool of
10+20), so the difference to ``POST /orders`` is our application code.

``POST /noop`` is the same without the database: it shows how fast the load
generator and uvicorn alone can go on this machine.

Served like ``order-intake api``: ``python bench/bare_app.py`` calls ``uvicorn.run``
with the same arguments (one worker, no access log). Reads
``BENCH_DATABASE_URL``, ``BENCH_HOST`` and ``BENCH_PORT``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field
from sqlalchemy import Column, MetaData, String, Table, Text, insert

from casebridge_shared.db import Database, UTCDateTime, new_id, utcnow

metadata = MetaData()
rows = Table(
    "bench_bare_rows",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("product_id", String(36), nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)


class RowCreate(BaseModel):
    product_id: str = Field(min_length=1, max_length=36)
    description: str = Field(min_length=1, max_length=20_000)


class RowRead(RowCreate):
    id: str
    created_at: datetime


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    db = Database(os.environ["BENCH_DATABASE_URL"])
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    app.state.db = db
    try:
        yield
    finally:
        await db.dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/rows", status_code=201, response_model=RowRead)
async def create_row(body: RowCreate) -> RowRead:
    db: Database = app.state.db
    row = RowRead(id=new_id(), created_at=utcnow(), **body.model_dump())
    async with db.write_session() as session:
        await session.execute(insert(rows).values(**row.model_dump()))
        await session.commit()
    return row


@app.post("/noop", status_code=201, response_model=RowRead)
async def noop(body: RowCreate) -> RowRead:
    """No database: the ceiling of server + load generator on this machine."""
    return RowRead(id=new_id(), created_at=utcnow(), **body.model_dump())


if __name__ == "__main__":
    uvicorn.run(
        "bare_app:app",
        host=os.environ.get("BENCH_HOST", "127.0.0.1"),
        port=int(os.environ["BENCH_PORT"]),
        workers=1,
        log_config=None,
        access_log=False,
    )
