"""Local stand-ins for the outside world, for the notifier's tests and the cross-service tests.

Real protocols end to end: an SMTP server (aiosmtpd, a test dependency), a Web
Push service that checks the VAPID signature (RFC 8292) and decrypts each
message with the device's keys (RFC 8291), and a webhook receiver.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI, Request, Response


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Mailbox:
    """An SMTP server on a port: every message it accepted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._controller: Any = None

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        with self._lock:
            self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def start(self) -> None:
        from aiosmtpd.controller import Controller  # a test dependency only

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@dataclass
class PushDevice:
    """A browser's push subscription: its keys, and what reached it (decrypted)."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth_secret: bytes = field(default_factory=lambda: os.urandom(16))
    received: list[dict[str, Any]] = field(default_factory=list)

    def subscription(self) -> dict[str, Any]:
        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth_secret)},
        }


class PushService:
    """A push service (RFC 8030) for our devices: verifies the VAPID JWT and decrypts each message."""

    def __init__(self) -> None:
        self.devices: dict[str, PushDevice] = {}
        self.answer: int = 201
        self.requests = 0
        self.app = FastAPI()
        self.app.add_api_route("/push/{device}", self.receive, methods=["POST"])

    def device(self, base_url: str, name: str) -> PushDevice:
        device = PushDevice(endpoint=f"{base_url}/push/{name}")
        self.devices[name] = device
        return device

    async def receive(self, device: str, request: Request) -> Response:
        self.requests += 1
        if self.answer >= 300:
            return Response(status_code=self.answer)
        target = self.devices.get(device)
        if target is None:
            return Response(status_code=410)
        # RFC 8292: Authorization: vapid t=<JWT signed by the server's key>, k=<that public key>
        scheme, _, params = request.headers["authorization"].partition(" ")
        assert scheme == "vapid"
        fields = dict(part.strip().split("=", 1) for part in params.split(","))
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(fields["k"]))
        claims = jwt.decode(
            fields["t"], public, algorithms=["ES256"], audience=str(request.base_url).rstrip("/")
        )
        assert claims["sub"].startswith("mailto:")
        assert request.headers["content-encoding"] == "aes128gcm"
        plain = http_ece.decrypt(
            await request.body(),
            private_key=target.private_key,
            auth_secret=target.auth_secret,
            version="aes128gcm",
        )
        target.received.append(json.loads(plain))
        return Response(status_code=201)


class WebhookReceiver:
    """An integrator's endpoint: keeps what it got, raw, with the headers."""

    def __init__(self) -> None:
        self.answer = 200
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.app = FastAPI()
        self.app.add_api_route("/hook", self.receive, methods=["POST"])

    async def receive(self, request: Request) -> Response:
        if self.answer >= 300:
            return Response(status_code=self.answer)
        self.received.append((await request.body(), dict(request.headers)))
        return Response(status_code=204)
