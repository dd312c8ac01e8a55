"""Kafka clients configured the same way everywhere (aiokafka).

Every client we make asks the broker never to create a topic by itself and
remembers which broker (cluster id) it last talked to. A broker that creates
topics on a metadata request (Apache Kafka's ``auto.create.topics.enable``,
Tansu always) would otherwise recreate a vanished topic with its own default
partition count the moment a producer or consumer looked it up, and events
would go to partitions our keys never mapped to. Our services create their
topics, with the configured partitions, before they produce or consume
(:func:`ensure_topics`), unless ``kafka_topic_creation`` is ``never``: then an
operator provisions them and the services only check them (:func:`check_topics`).

Every client gets its TLS and SASL options from :func:`client_security`, the one
place that turns the settings into aiokafka's arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import Collection, Iterable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.offset import OffsetRequest

from casebridge_shared.settings import ServiceSettings

log = structlog.get_logger(__name__)


class TopicMisconfigured(Exception):
    """A topic we publish to exists with another partition count than configured.

    Keys map to partitions by their hash modulo the count, so publishing there would
    scatter each order's events over partitions its consumers do not expect, or fail
    for the partitions that do not exist. Not healed by itself: an operator decides.
    """


class TopicsNotProvisioned(TopicMisconfigured):
    """``kafka_topic_creation`` is ``never`` and topics we use do not exist (or we may not see them)."""


class KafkaSettingsInvalid(Exception):
    """The Kafka TLS files cannot be used (missing, unreadable, not PEM, the key's password wrong).

    Found when the settings are turned into a client (:func:`client_security`) and, for a
    worker, before it starts (:func:`check_client_settings`): it refuses to start, as
    retrying would not make a file appear. The settings themselves do not open files,
    so they can be read where the files are not (a compose file checked on a laptop).
    """


def _no_key_password() -> bytes:
    # OpenSSL's default for an encrypted key without a password is to prompt on the
    # terminal, which would hang a service started from one.
    raise KafkaSettingsInvalid("kafka_ssl_keyfile is encrypted and kafka_ssl_key_password is not set")


def tls_context(settings: ServiceSettings) -> ssl.SSLContext:
    """The TLS context of every client: ``kafka_ssl_*`` loaded, each failure naming its setting."""
    cafile, certfile, keyfile = (
        settings.kafka_ssl_cafile,
        settings.kafka_ssl_certfile,
        settings.kafka_ssl_keyfile,
    )
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=str(cafile) if cafile else None)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaSettingsInvalid(
            f"kafka_ssl_cafile={cafile}: cannot load it as PEM CA certificates ({exc})"
        ) from exc
    if certfile is not None and keyfile is not None:
        key_password = settings.kafka_ssl_key_password
        try:
            context.load_cert_chain(
                str(certfile),
                str(keyfile),
                key_password.get_secret_value() if key_password else _no_key_password,
            )
        except (OSError, ssl.SSLError) as exc:
            # Also a wrong password, and a key that is not the certificate's.
            raise KafkaSettingsInvalid(
                f"kafka_ssl_certfile={certfile}, kafka_ssl_keyfile={keyfile}: cannot load the client "
                f"certificate and its key ({exc}); check the files and kafka_ssl_key_password"
            ) from exc
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def client_security(settings: ServiceSettings) -> dict[str, Any]:
    """aiokafka's TLS and SASL keyword arguments for ``settings``; every client here takes them.

    The SASL password is only ever read here, into the client's own argument; it is a
    ``SecretStr`` everywhere else so that no log or repr shows it. Raises
    :class:`KafkaSettingsInvalid` for TLS files that cannot be used.
    """
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = tls_context(settings)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def check_client_settings(settings: ServiceSettings) -> None:
    """At a worker's start: every Kafka client could be made (:class:`KafkaSettingsInvalid` if not).

    The relays and consumers make their clients inside loops that retry what fails;
    a CA file that is not there would be retried for ever instead of named once.
    """
    client_security(settings)


class BrokerClient(AIOKafkaClient):  # type: ignore[misc]  # aiokafka ships no type information
    """aiokafka's client that never lets a metadata request create a topic, and knows its broker.

    ``cluster_id`` is the id in the broker's last metadata answer. A broker that
    restarts without its data (the embedded broker keeps nothing on disk and gets a
    new id each start) shows up as a new id. ``connections_opened`` counts new
    connections to any broker: a consumer checks the cluster id again only when it
    changed, so records fetched over a connection to a new broker are never taken
    for the old broker's.
    """

    cluster_id: str | None = None
    connections_opened: int = 0
    _seen_connections: dict[tuple[Any, Any], Any] | None = None

    async def _metadata_update(self, cluster_metadata: ClusterMetadata, topics: Any) -> bool:
        # aiokafka 0.14's own, but for allow_auto_topic_creation=False and the cluster id kept.
        request = MetadataRequest(list(topics) if topics else None, allow_auto_topic_creation=False)
        node_ids: list[Any] = [b.nodeId for b in self.cluster.brokers()]
        bootstrap_id = ("bootstrap", ConnectionGroup.DEFAULT)
        if bootstrap_id in self._conns:
            node_ids.append("bootstrap")
        random.shuffle(node_ids)
        for node_id in node_ids:
            conn = await self._get_conn(node_id)
            if conn is None:
                continue
            try:
                metadata = await conn.send(request)
            except (KafkaError, TimeoutError) as err:
                log.debug("kafka.metadata_request_failed", node=node_id, error=repr(err))
                continue
            if not metadata.brokers:
                return False
            self.cluster_id = getattr(metadata, "cluster_id", None) or self.cluster_id
            cluster_metadata.update_metadata(metadata)
            if bootstrap_id in self._conns and len(self.cluster.brokers()):
                self._conns.pop(bootstrap_id).close()
            return True
        cluster_metadata.failed_update(None)
        return False

    async def _get_conn(
        self, node_id: Any, *, group: Any = ConnectionGroup.DEFAULT, no_hint: bool = False
    ) -> Any:
        conn = await super()._get_conn(node_id, group=group, no_hint=no_hint)
        if conn is not None:
            if self._seen_connections is None:
                self._seen_connections = {}
            if self._seen_connections.get((node_id, group)) is not conn:
                self._seen_connections[(node_id, group)] = conn
                self.connections_opened += 1
        return conn


def _guarded(client: AIOKafkaClient) -> BrokerClient:
    # aiokafka builds its client inside the producer and consumer and offers no way
    # to pass another class; ours only overrides two methods and adds no state that
    # needs constructing.
    client.__class__ = BrokerClient
    assert isinstance(client, BrokerClient)
    return client


def broker_client(kafka_client: AIOKafkaProducer | AIOKafkaConsumer) -> BrokerClient:
    """The guarded client inside a producer or consumer made here."""
    inner = kafka_client.client if isinstance(kafka_client, AIOKafkaProducer) else kafka_client._client
    if not isinstance(inner, BrokerClient):
        raise TypeError("not a client made by casebridge_shared.kafka")
    return inner


def make_producer(settings: ServiceSettings, *, client_id: str) -> AIOKafkaProducer:
    return guarded_producer(
        settings.kafka_bootstrap_servers,
        **client_security(settings),
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        linger_ms=2,
        max_batch_size=256 * 1024,
    )


def make_admin(settings: ServiceSettings) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        **client_security(settings),
    )
    # Its describe_topics is a metadata request too: without the guard, describing a
    # missing topic created it.
    _guarded(admin._client)
    return admin


def make_consumer(settings: ServiceSettings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    return guarded_consumer(
        *topics, bootstrap_servers=settings.kafka_bootstrap_servers, **client_security(settings), **options
    )


def guarded_consumer(*topics: str, bootstrap_servers: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer whose lookups never create a topic (for tests, benchmarks, outside readers too).

    A reader that subscribed to one of our topics before its relay made it would
    otherwise have the broker create it with the broker's default partition count.
    """
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap_servers, **options)
    _guarded(consumer._client)
    return consumer


def guarded_producer(bootstrap_servers: str, **options: Any) -> AIOKafkaProducer:
    """A producer whose lookups never create a topic; see :func:`guarded_consumer`."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, **options)
    _guarded(producer.client)
    return producer


async def current_cluster(client: BrokerClient) -> ClusterMetadata:
    """Ask the broker now for its metadata (every topic); ``client.cluster_id`` is then current."""
    return await client.fetch_all_metadata()


async def end_offsets(
    client: BrokerClient, partitions: Collection[TopicPartition]
) -> dict[TopicPartition, int]:
    """Each partition's log end offset, as the broker answers now (one request per leader).

    A partition the broker does not know is left out of the answer. The consumer's
    own ``end_offsets`` needs a consumer (its fetcher task and group machinery) for
    what is one ListOffsets request.
    """
    by_leader: dict[int, dict[str, list[tuple[int, int]]]] = {}
    for tp in partitions:
        leader = client.cluster.leader_for_partition(tp)
        if leader is None or leader < 0:
            continue
        by_leader.setdefault(leader, {}).setdefault(tp.topic, []).append((tp.partition, -1))  # -1: the end
    answers: dict[TopicPartition, int] = {}
    for leader, topics in by_leader.items():
        response = await client.send(leader, OffsetRequest(-1, 0, list(topics.items())))
        for topic, partition_answers in response.topics:
            for partition, error_code, *info in partition_answers:
                if for_code(error_code) is not for_code(0):
                    continue
                offset = info[-1]
                if isinstance(offset, list):  # ListOffsets v0: a list of offsets
                    if not offset:
                        continue
                    offset = offset[0]
                answers[TopicPartition(topic, partition)] = int(offset)
    return answers


async def ensure_topics(
    settings: ServiceSettings, topics: Iterable[str], *, check_partitions: Collection[str] = ()
) -> None:
    """Create the missing ones of ``topics`` with the configured partition count.

    ``check_partitions``: topics that must have exactly the configured count (those
    a relay publishes to); another count raises :class:`TopicMisconfigured`. With
    ``kafka_topic_creation=never`` nothing is created: a missing topic raises
    :class:`TopicsNotProvisioned`, naming them all.
    """
    wanted = list(dict.fromkeys(topics))
    admin = make_admin(settings)
    await admin.start()
    try:
        # Every topic's metadata through the guarded client: the admin's own
        # describe_topics asks with auto-creation on, and so created what it described.
        cluster = await admin._client.fetch_all_metadata()
        existing = cluster.topics()
        missing = [t for t in wanted if t not in existing]
        if missing and settings.kafka_topic_creation == "never":
            raise TopicsNotProvisioned(
                f"kafka_topic_creation=never and these topics do not exist (or this service may not "
                f"describe them): {', '.join(missing)}; provision them with "
                f"{settings.kafka_topic_partitions} partitions (kafka_topic_partitions) and the "
                "service's ACLs (docs/kafka-acls.md)"
            )
        if missing:
            new_topics = [
                NewTopic(
                    name,
                    num_partitions=settings.kafka_topic_partitions,
                    replication_factor=settings.kafka_replication_factor,
                )
                for name in missing
            ]
            # Another process may win the race to create them; that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new_topics)
            log.info("kafka.topics_created", topics=missing, partitions=settings.kafka_topic_partitions)
        for name in check_partitions:
            count = len(cluster.partitions_for_topic(name) or ()) if name in existing else 0
            if count and count != settings.kafka_topic_partitions:
                raise TopicMisconfigured(
                    f"topic {name} has {count} partitions where {settings.kafka_topic_partitions} "
                    "are configured (kafka_topic_partitions); nothing is published to it until "
                    "the topic or the setting is changed"
                )
    finally:
        await admin.close()


async def check_topics(
    settings: ServiceSettings, *, publishes: Iterable[str], consumes: Iterable[str]
) -> None:
    """At a worker's start: the topics it uses are there, those it publishes to with our partition count.

    With ``kafka_topic_creation=auto`` missing ones are created (as the relays and
    consumers would); with ``never`` a missing or misconfigured topic raises
    :class:`TopicMisconfigured` (:class:`TopicsNotProvisioned` when missing), which
    stops the worker before it does anything.
    """
    published = list(dict.fromkeys(publishes))
    await ensure_topics(settings, [*published, *consumes], check_partitions=published)


async def wait_for_broker(settings: ServiceSettings, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = make_admin(settings)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except KafkaError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
        finally:
            await admin.close()
