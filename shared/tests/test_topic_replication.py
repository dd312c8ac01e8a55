"""kafka_replication_factor: the replication factor of the topics a service creates.

1 by default (the embedded broker of `make up` and the tests is one node); the compose
file's production shape sets 3 (three brokers, docs/configuration.md). Checked on a real
(embedded) broker, which records the replicas a topic was created with.
"""

from __future__ import annotations

import os
from unittest import mock

import pytest
from pydantic import ValidationError

from casebridge_shared.broker import EmbeddedBroker
from casebridge_shared.kafka import ensure_topics, make_admin
from casebridge_shared.settings import ServiceSettings


def _settings(**env: str) -> ServiceSettings:
    kept = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
    with mock.patch.dict(os.environ, kept | env, clear=True):
        return ServiceSettings()


async def _replicas_per_partition(settings: ServiceSettings, topic: str) -> set[int]:
    admin = make_admin(settings)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["error_code"] == 0, described
    return {len(partition["replicas"]) for partition in described["partitions"]}


def test_the_default_is_one_and_the_environment_sets_it() -> None:
    assert _settings().kafka_replication_factor == 1
    assert _settings(CASEBRIDGE_KAFKA_REPLICATION_FACTOR="3").kafka_replication_factor == 3
    assert _settings(CASEBRIDGE_KAFKA_REPLICATION_FACTOR="3").topic_settings["replication_factor"] == 3
    with pytest.raises(ValidationError):
        _settings(CASEBRIDGE_KAFKA_REPLICATION_FACTOR="0")


async def test_created_topics_have_the_configured_replication_factor(broker: EmbeddedBroker) -> None:
    default = _settings(CASEBRIDGE_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers)
    await ensure_topics(default, ["replication.default"])
    assert await _replicas_per_partition(default, "replication.default") == {1}

    three = _settings(
        CASEBRIDGE_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, CASEBRIDGE_KAFKA_REPLICATION_FACTOR="3"
    )
    await ensure_topics(three, ["replication.three"])
    assert await _replicas_per_partition(three, "replication.three") == {3}
