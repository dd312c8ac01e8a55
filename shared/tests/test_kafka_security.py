"""TLS and SASL for every Kafka client, and topics an operator provisions (issue 27, section 1).

The embedded broker (Tansu 0.6) accepts ``--cert`` and ``--key`` but its listener
only speaks plain TCP (a TLS ClientHello is read as a Kafka request), and with
``--authentication`` and its in-memory storage no user can be created. So TLS is
tested through a TLS-terminating proxy in front of it (Python's ``ssl``, a CA and
certificates generated here): our clients do a real handshake, verify the chain and
the host name, and present a client certificate the proxy requires. SASL is checked
as the arguments every client gets and as what they send to Tansu with
``--authentication`` (which refuses them all); docs/configuration.md says what is not
tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import SecretStr, ValidationError

from casebridge_shared.broker import EmbeddedBroker, free_port
from casebridge_shared.kafka import (
    KafkaSettingsInvalid,
    TopicMisconfigured,
    TopicsNotProvisioned,
    check_client_settings,
    check_topics,
    client_security,
    ensure_topics,
    make_admin,
    make_consumer,
    make_producer,
    wait_for_broker,
)
from casebridge_shared.settings import ServiceSettings

# --- certificates --------------------------------------------------------------------


@dataclass
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def new(cls, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            _builder(subject, subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(self, common_name: str, *, sans: list[x509.GeneralName], server: bool) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = _builder(subject, self.cert.subject, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return Authority(key, builder.sign(self.key, hashes.SHA256()))

    def write(self, directory: Path, name: str, *, password: bytes | None = None) -> tuple[Path, Path]:
        cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
        cert.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        key.write_bytes(
            self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        )
        return cert, key


def _builder(subject: x509.Name, issuer: x509.Name, public_key: Any) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )


LOCAL_NAMES: list[x509.GeneralName] = [
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
]


KEY_PASSWORD = "key-pass-phrase"  # a test key's


@dataclass
class Pki:
    ca: Path
    client_cert: Path
    client_key: Path
    encrypted_client_cert: Path  # its key (below) is encrypted with KEY_PASSWORD
    encrypted_client_key: Path
    other_ca: Path  # a CA that signed nothing of the broker's
    server: Authority  # SAN 127.0.0.1 and localhost
    misnamed_server: Authority  # SAN elsewhere.example only
    ca_authority: Authority


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = Authority.new("casebridge test CA")
    ca_file, _ = ca.write(directory, "ca")
    other_file, _ = Authority.new("someone else's CA").write(directory, "other-ca")
    client_cert, client_key = ca.issue("order-intake", sans=[], server=False).write(directory, "client")
    encrypted_cert, encrypted_key = ca.issue("notifier", sans=[], server=False).write(
        directory, "encrypted-client", password=KEY_PASSWORD.encode()
    )
    return Pki(
        ca=ca_file,
        client_cert=client_cert,
        client_key=client_key,
        encrypted_client_cert=encrypted_cert,
        encrypted_client_key=encrypted_key,
        other_ca=other_file,
        server=ca.issue("broker", sans=LOCAL_NAMES, server=True),
        misnamed_server=ca.issue("broker", sans=[x509.DNSName("elsewhere.example")], server=True),
        ca_authority=ca,
    )


# --- a TLS-terminating proxy in front of the embedded broker --------------------------


class TlsProxy:
    """Accepts TLS (client certificate required) and passes the bytes on to a plain listener.

    Without a context it is a plain TCP proxy, there to see what the clients send.
    """

    def __init__(self, port: int, target_port: int, context: ssl.SSLContext | None) -> None:
        self.port, self.target_port, self.context = port, target_port, context
        self.server: asyncio.Server | None = None
        self.handshakes = 0
        self.from_clients = bytearray()  # every byte the clients sent (after TLS)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.context)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    if src is reader:
                        self.from_clients += data
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError, RuntimeError):
                dst.close()

        tasks = [asyncio.create_task(pipe(reader, up_writer)), asyncio.create_task(pipe(up_reader, writer))]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def server_context(pki: Pki, server: Authority, tmp_path: Path) -> ssl.SSLContext:
    cert, key = server.write(tmp_path, "server")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(str(cert), str(key))
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: our clients' certificate is checked too
    return context


@pytest.fixture
def tls_broker() -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(advertised_port=free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@contextlib.asynccontextmanager
async def proxy_for(
    broker: EmbeddedBroker, pki: Pki, server: Authority, tmp_path: Path
) -> AsyncIterator[TlsProxy]:
    assert broker.advertised_port is not None
    proxy = TlsProxy(broker.advertised_port, broker.port, server_context(pki, server, tmp_path))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


def tls_settings(broker: EmbeddedBroker, pki: Pki, **overrides: Any) -> ServiceSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": f"127.0.0.1:{broker.advertised_port}",
        "kafka_security_protocol": "SSL",
        "kafka_ssl_cafile": pki.ca,
        "kafka_ssl_certfile": pki.client_cert,
        "kafka_ssl_keyfile": pki.client_key,
        "kafka_request_timeout_ms": 5000,
    } | overrides
    return ServiceSettings(**values)


# --- the settings ---------------------------------------------------------------------


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    assert client_security(ServiceSettings()) == {"security_protocol": "PLAINTEXT"}


def test_sasl_options_go_to_aiokafka_and_the_password_stays_secret() -> None:
    settings = ServiceSettings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="order-intake",
        kafka_sasl_password=SecretStr("s3cret-pw"),
    )
    assert client_security(settings) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "order-intake",
        "sasl_plain_password": "s3cret-pw",
    }
    assert "s3cret-pw" not in repr(settings) and "s3cret-pw" not in str(settings.model_dump())


def test_sasl_ssl_has_both(pki: Pki) -> None:
    options = client_security(
        ServiceSettings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username="notifier",
            kafka_sasl_password=SecretStr("pw"),
            kafka_ssl_cafile=pki.ca,
            kafka_ssl_check_hostname=False,
        )
    )
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "PLAIN"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname is False


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs kafka_sasl_username and kafka_sasl_password"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"},
            "needs kafka_sasl_username and kafka_sasl_password",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "/c.pem"},
            "kafka_ssl_certfile and kafka_ssl_keyfile go together",
        ),
        ({"kafka_ssl_cafile": "/ca.pem"}, "does not use TLS"),
        (
            {"kafka_security_protocol": "SSL", "kafka_sasl_username": "u", "kafka_sasl_password": "p"},
            "kafka_security_protocol=SSL does not use SASL",
        ),
        ({"kafka_sasl_password": "p"}, "kafka_security_protocol=PLAINTEXT does not use SASL"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_key_password": "p"},
            "kafka_ssl_key_password is set without kafka_ssl_keyfile",
        ),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        ({"kafka_topic_creation": "sometimes"}, "kafka_topic_creation"),
    ],
)
def test_inconsistent_kafka_settings_are_refused(values: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        ServiceSettings(**values)


def test_tls_files_that_cannot_be_used_are_named(pki: Pki, tmp_path: Path) -> None:
    not_pem = tmp_path / "not-a-certificate.pem"
    not_pem.write_text("hello")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"kafka_ssl_cafile": tmp_path / "missing.pem"}, r"kafka_ssl_cafile=.*missing\.pem: cannot load"),
        ({"kafka_ssl_cafile": not_pem}, r"kafka_ssl_cafile=.*not-a-certificate\.pem: cannot load"),
        (
            {"kafka_ssl_certfile": pki.encrypted_client_cert, "kafka_ssl_keyfile": pki.encrypted_client_key},
            "kafka_ssl_keyfile is encrypted and kafka_ssl_key_password is not set",
        ),
        (
            {
                "kafka_ssl_certfile": pki.encrypted_client_cert,
                "kafka_ssl_keyfile": pki.encrypted_client_key,
                "kafka_ssl_key_password": "not-the-pass-phrase",
            },
            r"kafka_ssl_keyfile=.*encrypted-client-key\.pem: cannot load the client certificate and its key",
        ),
        (  # a key that is not the certificate's
            {
                "kafka_ssl_certfile": pki.client_cert,
                "kafka_ssl_keyfile": pki.encrypted_client_key,
                "kafka_ssl_key_password": KEY_PASSWORD,
            },
            "cannot load the client certificate and its key",
        ),
    ]
    for values, reason in cases:
        settings = ServiceSettings(kafka_security_protocol="SSL", **values)
        with pytest.raises(KafkaSettingsInvalid, match=reason):
            check_client_settings(settings)
        with pytest.raises(KafkaSettingsInvalid):  # every client, not only the start check
            make_producer(settings, client_id="t")
    # The same files with what they need load.
    check_client_settings(
        ServiceSettings(
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=pki.ca,
            kafka_ssl_certfile=pki.encrypted_client_cert,
            kafka_ssl_keyfile=pki.encrypted_client_key,
            kafka_ssl_key_password=SecretStr(KEY_PASSWORD),
        )
    )


async def test_every_client_gets_the_security_options() -> None:
    settings = ServiceSettings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="case-handling",
        kafka_sasl_password=SecretStr("pw"),
    )
    producer = make_producer(settings, client_id="t")
    consumer = make_consumer(settings, "casebridge.orders.v1", group_id="case-handling")
    admin = make_admin(settings)
    clients = [producer.client, consumer._client, admin._client]
    for client in clients:
        assert client._security_protocol == "SASL_PLAINTEXT"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "case-handling"
    await admin.close()
    await producer.stop()
    await consumer.stop()


# --- TLS against the embedded broker (through the proxy) --------------------------------


async def test_produce_and_consume_over_mutual_tls(
    tls_broker: EmbeddedBroker, pki: Pki, tmp_path: Path
) -> None:
    settings = tls_settings(tls_broker, pki)
    async with proxy_for(tls_broker, pki, pki.server, tmp_path) as proxy:
        await wait_for_broker(settings, timeout=20)
        await ensure_topics(settings, ["casebridge.tls.v1"])
        producer: AIOKafkaProducer = make_producer(settings, client_id="tls-test")
        consumer: AIOKafkaConsumer = make_consumer(
            settings, "casebridge.tls.v1", group_id="tls-test", auto_offset_reset="earliest"
        )
        await producer.start()
        await consumer.start()
        try:
            await producer.send_and_wait("casebridge.tls.v1", b"over tls", key=b"k")
            message = await asyncio.wait_for(consumer.getone(), timeout=30)
        finally:
            await producer.stop()
            await consumer.stop()
        assert message.value == b"over tls"
        assert proxy.handshakes >= 3  # admin, producer and consumer all came through TLS


async def test_a_client_key_with_a_password_authenticates(
    tls_broker: EmbeddedBroker, pki: Pki, tmp_path: Path
) -> None:
    settings = tls_settings(
        tls_broker,
        pki,
        kafka_ssl_certfile=pki.encrypted_client_cert,
        kafka_ssl_keyfile=pki.encrypted_client_key,
        kafka_ssl_key_password=SecretStr(KEY_PASSWORD),
    )
    async with proxy_for(tls_broker, pki, pki.server, tmp_path) as proxy:
        await ensure_topics(settings, ["casebridge.tls-key.v1"])
        assert proxy.handshakes >= 1
        # Without a client certificate the proxy (mutual TLS) refuses the handshake.
        anonymous = tls_settings(tls_broker, pki, kafka_ssl_certfile=None, kafka_ssl_keyfile=None)
        with pytest.raises(KafkaConnectionError):
            await ensure_topics(anonymous, ["casebridge.tls-key.v1"])


async def test_a_broker_signed_by_another_ca_is_refused(
    tls_broker: EmbeddedBroker, pki: Pki, tmp_path: Path
) -> None:
    settings = tls_settings(tls_broker, pki, kafka_ssl_cafile=pki.other_ca)
    async with proxy_for(tls_broker, pki, pki.server, tmp_path) as proxy:
        with pytest.raises(KafkaConnectionError):
            await ensure_topics(settings, ["casebridge.tls.v1"])
        assert proxy.handshakes == 0  # the client gave up during the handshake (verify failed)
        # The same proxy with the right CA: the failure was the CA.
        await ensure_topics(tls_settings(tls_broker, pki), ["casebridge.tls.v1"])


async def test_a_certificate_for_another_host_fails_hostname_checking(
    tls_broker: EmbeddedBroker, pki: Pki, tmp_path: Path
) -> None:
    async with proxy_for(tls_broker, pki, pki.misnamed_server, tmp_path):
        with pytest.raises(KafkaConnectionError):
            await ensure_topics(tls_settings(tls_broker, pki), ["casebridge.tls.v1"])
        # Hostname checking off (kafka_ssl_check_hostname=false): the chain alone is trusted.
        await ensure_topics(
            tls_settings(tls_broker, pki, kafka_ssl_check_hostname=False), ["casebridge.tls.v1"]
        )


# --- SASL on the wire, against the embedded broker with --authentication ----------------


@pytest.fixture
async def authenticating_broker() -> AsyncIterator[tuple[EmbeddedBroker, TlsProxy]]:
    """Tansu requiring SCRAM, behind a plain proxy that keeps what the clients send.

    Its users can only be made through the broker itself, which then wants a login
    first, so no login succeeds here: these tests see our clients' side of the exchange.
    """
    broker = EmbeddedBroker(advertised_port=free_port(), authentication=True)
    broker.start()
    assert broker.advertised_port is not None
    proxy = TlsProxy(broker.advertised_port, broker.port, None)
    await proxy.start()
    try:
        yield broker, proxy
    finally:
        await proxy.stop()
        broker.stop()


def sasl_settings(broker: EmbeddedBroker, mechanism: str) -> ServiceSettings:
    return ServiceSettings(
        kafka_bootstrap_servers=f"127.0.0.1:{broker.advertised_port}",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="order_intake",
        kafka_sasl_password=SecretStr("a-scram-password"),
        kafka_request_timeout_ms=3000,
    )


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_scram_is_spoken_and_the_password_never_sent(
    authenticating_broker: tuple[EmbeddedBroker, TlsProxy], mechanism: str
) -> None:
    broker, proxy = authenticating_broker
    admin = make_admin(sasl_settings(broker, mechanism))
    # The broker knows no user: it answers the exchange and refuses the proof (aiokafka
    # 0.14 then fails reading the server's final message, which carries an error).
    with pytest.raises((KafkaError, KeyError)):
        await admin.start()
    await admin.close()
    sent = bytes(proxy.from_clients)
    assert mechanism.encode() in sent  # SaslHandshake: the configured mechanism
    assert b"n,,n=order_intake,r=" in sent  # SCRAM's client-first message, with our principal
    assert b"c=biws,r=" in sent  # and the client-final message: the broker took part
    assert b"a-scram-password" not in sent  # SCRAM proves the password without sending it


async def test_an_authenticating_broker_refuses_plain_and_unauthenticated_clients(
    authenticating_broker: tuple[EmbeddedBroker, TlsProxy],
) -> None:
    broker, proxy = authenticating_broker
    for settings in (
        sasl_settings(broker, "PLAIN"),  # Tansu 0.6 offers SCRAM only
        ServiceSettings(kafka_bootstrap_servers=f"127.0.0.1:{broker.advertised_port}"),
    ):
        admin = make_admin(settings)
        with pytest.raises(KafkaConnectionError):
            await admin.start()
        await admin.close()
    assert b"PLAIN" in bytes(proxy.from_clients)
    assert b"a-scram-password" not in bytes(proxy.from_clients)  # refused before the credentials


# --- kafka_topic_creation=never ----------------------------------------------------------


async def test_never_creates_nothing_and_names_the_missing_topics(broker: EmbeddedBroker) -> None:
    settings = ServiceSettings(kafka_bootstrap_servers=broker.bootstrap_servers, kafka_topic_creation="never")
    with pytest.raises(TopicsNotProvisioned, match=r"casebridge\.a\.v1, casebridge\.b\.v1"):
        await ensure_topics(settings, ["casebridge.a.v1", "casebridge.b.v1"])
    admin = make_admin(settings)
    await admin.start()
    try:
        assert not {"casebridge.a.v1", "casebridge.b.v1"} & set(await admin.list_topics())
    finally:
        await admin.close()


async def test_never_checks_provisioned_topics(broker: EmbeddedBroker) -> None:
    auto = ServiceSettings(kafka_bootstrap_servers=broker.bootstrap_servers, kafka_topic_partitions=3)
    await ensure_topics(auto, ["casebridge.out.v1", "casebridge.in.v1"])
    never = auto.model_copy(update={"kafka_topic_creation": "never"})
    await check_topics(never, publishes=["casebridge.out.v1"], consumes=["casebridge.in.v1"])
    with pytest.raises(TopicsNotProvisioned, match=r"casebridge\.dlq\.x"):
        await check_topics(never, publishes=["casebridge.out.v1"], consumes=["casebridge.dlq.x"])
    other_count = never.model_copy(update={"kafka_topic_partitions": 6})
    with pytest.raises(TopicMisconfigured, match=r"casebridge\.out\.v1 has 3 partitions where 6"):
        await check_topics(other_count, publishes=["casebridge.out.v1"], consumes=["casebridge.in.v1"])
    # A topic it only reads may have another count: its consumer does not map keys to partitions.
    await check_topics(other_count, publishes=[], consumes=["casebridge.in.v1"])
