"""Does the broker still have what it acknowledged? The relay's check, and the healing.

A broker can forget: the embedded one keeps nothing on disk, a topic can be
deleted and created again, a cluster can be rebuilt. Acknowledged events are
then gone from the bus while the outbox says they were published. The relay
keeps, in its own database and in the transaction that marks rows published,
how far each partition's log reached when the broker acknowledged our last
batch there, and the broker's cluster id. The broker has forgotten when

- its cluster id is not the one those offsets were acknowledged by,
- a topic we had published to is gone, or
- a partition's log ends below what it had acknowledged (also seen at once when
  it acknowledges a batch at a lower offset than an earlier one).

Then every retained published event goes back into the outbox and out again
in its original order; consumers drop what they had applied (inbox), and
nothing an operator has to do. What went out past the retention period is not
sent again (the consumers applied it long ago).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from sqlalchemy import Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel.ext.asyncio.session import AsyncSession

from casebridge_shared.db import Database, utcnow
from casebridge_shared.kafka import BrokerClient, TopicMisconfigured, current_cluster, end_offsets


@dataclass(frozen=True)
class Acknowledged:
    """A record the broker acknowledged in a partition: the first of our last batch there.

    The first, not the last: the embedded broker (Tansu 0.6) answers a partition's
    end offset as the last batch's base offset + 1, not the last record's + 1, and
    on both brokers a log that has the batch's first record has got past it.
    """

    cluster_id: str | None
    offset: int


class BrokerWatch:
    """One relay's record of what the broker acknowledged, and the checks against it."""

    def __init__(self, db: Database, table: Table, *, topics: Iterable[str], partitions: int) -> None:
        self.db = db
        self.table = table
        self.topics = list(topics)
        self.partitions = partitions
        self.acknowledged: dict[TopicPartition, Acknowledged] = {}
        self._changed: set[TopicPartition] = set()
        self._loaded = False

    async def load(self) -> None:
        if self._loaded:
            return
        t = self.table
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(t.c.topic, t.c.partition, t.c.cluster_id, t.c.acknowledged_offset)
                )
            ).all()
        self.acknowledged = {TopicPartition(r[0], r[1]): Acknowledged(r[2], int(r[3])) for r in rows}
        self._changed.clear()
        self._loaded = True

    def forget(self) -> None:
        """After a heal: nothing the broker holds now was acknowledged before."""
        self.acknowledged.clear()
        self._changed.clear()

    def note(self, tp: TopicPartition, base_offset: int, cluster_id: str | None) -> str | None:
        """A batch acknowledged at ``base_offset``; the reason it shows a reset, if it does.

        Offsets in a partition only grow, so a batch placed at or below our previous
        one's offset means the log started again.
        """
        before = self.acknowledged.get(tp)
        reason = None
        if before is not None and base_offset <= before.offset:
            reason = (
                f"{tp.topic}[{tp.partition}] took a batch at offset {base_offset}, "
                f"where it had acknowledged one at {before.offset}"
            )
        elif before is not None and cluster_id and before.cluster_id and cluster_id != before.cluster_id:
            reason = f"the broker's cluster id changed from {before.cluster_id} to {cluster_id}"
        self.acknowledged[tp] = Acknowledged(cluster_id, base_offset)
        self._changed.add(tp)
        return reason

    async def check(self, client: BrokerClient) -> str | None:
        """Ask the broker now; the reason it lost acknowledged events, or None.

        Raises :class:`TopicMisconfigured` for a topic of ours with another partition count.
        """
        await self.load()
        cluster = await current_cluster(client)
        for topic in self.topics:
            count = len(cluster.partitions_for_topic(topic) or ())
            if count and count != self.partitions:
                raise TopicMisconfigured(
                    f"topic {topic} has {count} partitions where {self.partitions} are configured "
                    "(kafka_topic_partitions); nothing is published to it until the topic or the "
                    "setting is changed"
                )
        if not self.acknowledged:
            return None
        now = client.cluster_id
        earlier = {a.cluster_id for a in self.acknowledged.values() if a.cluster_id}
        if now and earlier - {now}:
            return f"the broker's cluster id changed from {', '.join(sorted(earlier - {now}))} to {now}"
        existing = cluster.topics()
        gone = sorted({tp.topic for tp in self.acknowledged} - existing)
        if gone:
            return f"topic {', '.join(gone)} is gone from the broker"
        ends = await end_offsets(client, list(self.acknowledged))
        for tp, acknowledged in sorted(self.acknowledged.items()):
            end = ends.get(tp)
            if end is None:
                return f"{tp.topic}[{tp.partition}] is gone from the broker"
            if end <= acknowledged.offset:
                return (
                    f"{tp.topic}[{tp.partition}] ends at offset {end}, "
                    f"without the record at {acknowledged.offset} it had acknowledged"
                )
        return None

    async def save(self, session: AsyncSession) -> None:
        """Write what changed since the last save, in the caller's transaction (the marking)."""
        if not self._changed:
            return
        changed, self._changed = self._changed, set()
        now = utcnow()
        rows: list[dict[str, Any]] = [
            {
                "topic": tp.topic,
                "partition": tp.partition,
                "cluster_id": self.acknowledged[tp].cluster_id,
                "acknowledged_offset": self.acknowledged[tp].offset,
                "updated_at": now,
            }
            for tp in sorted(changed)
            if tp in self.acknowledged
        ]
        if not rows:
            return
        dialect = postgresql if self.db.dialect == "postgresql" else sqlite
        statement = dialect.insert(self.table)
        statement = statement.on_conflict_do_update(
            index_elements=["topic", "partition"],
            set_={
                "cluster_id": statement.excluded.cluster_id,
                "acknowledged_offset": statement.excluded.acknowledged_offset,
                "updated_at": statement.excluded.updated_at,
            },
        )
        try:
            await session.execute(statement, rows)
        except BaseException:
            self._changed |= changed  # written with the next marking instead
            raise

    async def clear(self, session: AsyncSession) -> None:
        """Forget every acknowledgement, in the caller's transaction (the heal)."""
        await session.execute(delete(self.table))
