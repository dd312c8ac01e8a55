"""kafka_topic_creation=never: the worker starts only on the topics an operator provisioned (issue 27).

A missing topic, or one it publishes to with another partition count than
configured, makes ``order-intake worker`` exit at once with status 78 and a message
naming the topics, instead of retrying for ever or creating them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from casebridge_shared.broker import EmbeddedBroker
from casebridge_shared.events import CASES_TOPIC, CATALOG_TOPIC, IDENTITY_TOPIC, ORDERS_TOPIC
from casebridge_shared.inbox import dead_letter_topic
from casebridge_shared.kafka import ensure_topics
from casebridge_shared.settings import ServiceSettings
from casebridge_shared.testing import wait_until
from casebridge_shared.worker import EXIT_CONFIGURATION
from order_intake.bootstrap import CONSUMER_GROUP, Container


def _worker_env(container: Container, broker: EmbeddedBroker, tmp_path: Path, **env: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
    environment.update(
        {
            "CASEBRIDGE_ENVIRONMENT": "test",
            "CASEBRIDGE_ORDER_INTAKE_DATABASE_URL": container.settings.database_url,
            "CASEBRIDGE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "CASEBRIDGE_KAFKA_TOPIC_CREATION": "never",
            "CASEBRIDGE_ORDER_INTAKE_WORKER_METRICS_PORT": "0",
            "CASEBRIDGE_VAR_DIR": str(tmp_path),
        }
        | env
    )
    return environment


WORKER = str(Path(sys.executable).with_name("order-intake"))
TOPICS = [CATALOG_TOPIC, ORDERS_TOPIC, IDENTITY_TOPIC, CASES_TOPIC, dead_letter_topic(CONSUMER_GROUP)]


def _run_worker(container: Container, broker: EmbeddedBroker, tmp_path: Path, **env: str) -> tuple[int, str]:
    environment = _worker_env(container, broker, tmp_path, **env)
    # It exits by itself; the timeout only bounds a broken build.
    done = subprocess.run([WORKER, "worker"], env=environment, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stderr


async def test_worker_refuses_to_start_without_its_topics(
    container: Container, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    code, stderr = _run_worker(container, broker, tmp_path)
    assert code == EXIT_CONFIGURATION, stderr
    assert "refusing to start" in stderr
    for topic in (
        CATALOG_TOPIC,
        ORDERS_TOPIC,
        IDENTITY_TOPIC,
        CASES_TOPIC,
        dead_letter_topic(CONSUMER_GROUP),
    ):
        assert topic in stderr


async def test_worker_refuses_to_start_on_another_partition_count(
    container: Container, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    provisioned = ServiceSettings(kafka_bootstrap_servers=broker.bootstrap_servers, kafka_topic_partitions=2)
    await ensure_topics(provisioned, TOPICS)
    code, stderr = _run_worker(container, broker, tmp_path, CASEBRIDGE_KAFKA_TOPIC_PARTITIONS="6")
    assert code == EXIT_CONFIGURATION, stderr
    assert "has 2 partitions where 6 are configured" in stderr


async def test_worker_starts_on_provisioned_topics(
    container: Container, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    await ensure_topics(ServiceSettings(kafka_bootstrap_servers=broker.bootstrap_servers), TOPICS)
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [WORKER, "worker"],
            env=_worker_env(container, broker, tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        await wait_until(
            lambda: "consumer.started" in log.read_text() or worker.poll() is not None,
            timeout=60,
            message="the worker's consumer started",
        )
        assert worker.poll() is None, log.read_text()
        assert "refusing to start" not in log.read_text()
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


async def test_worker_refuses_to_start_on_a_kafka_ca_file_it_cannot_read(
    container: Container, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    # Named once at the start, rather than every relay and consumer loop retrying for ever.
    missing = tmp_path / "no-such-ca.pem"
    code, stderr = _run_worker(
        container,
        broker,
        tmp_path,
        CASEBRIDGE_KAFKA_SECURITY_PROTOCOL="SSL",
        CASEBRIDGE_KAFKA_SSL_CAFILE=str(missing),
    )
    assert code == EXIT_CONFIGURATION, stderr
    assert "refusing to start" in stderr
    assert f"kafka_ssl_cafile={missing}: cannot load" in stderr
