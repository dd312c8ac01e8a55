"""The outbound guard: user-given targets are public addresses only (issue 25, SSRF)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

import httpx
import pytest

from casebridge_shared.outbound import (
    OutboundPolicy,
    OutboundRefused,
    classify,
    guarded_client,
    parse_address,
)
from casebridge_shared.settings import ServiceSettings

REFUSED = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://localhost:8002/cases", "loopback"),
    ("http://LOCALHOST./x", "loopback"),
    ("http://api.localhost/x", "loopback"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://127.1/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://0x7f.0.0.1/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://127.0.0.1:8004/customers", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::]/", "unspecified"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.1.2.3/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://100.64.0.1/", "reserved"),
    ("http://[fd00::1]/", "unique-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[64:ff9b::7f00:1]/", "loopback"),
    ("http://[2002:7f00:1::]/", "loopback"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_our_own_and_private_addresses_are_refused_in_every_spelling(url: str, reason: str) -> None:
    with pytest.raises(OutboundRefused, match=reason):
        OutboundPolicy().check_url(url)


def test_public_targets_and_names_pass_registration() -> None:
    policy = OutboundPolicy()
    for url in ("https://crm.example/hook", "https://93.184.216.34/x", "http://[2606:4700::1111]/"):
        policy.check_url(url)
    for url in ("ftp://crm.example/", "https:///nohost", "https://user:pw@crm.example/"):
        with pytest.raises(OutboundRefused):
            policy.check_url(url)
    with pytest.raises(OutboundRefused, match="https"):
        policy.check_url("http://push.example/x", https_only=True)
    policy.check_url("https://push.example/x", https_only=True)


def test_the_allow_list_lets_operators_call_on_premises_receivers() -> None:
    policy = OutboundPolicy(["10.20.0.0/16", "127.0.0.1", "hooks.internal"])
    policy.check_url("http://10.20.3.4/hook")
    policy.check_url("http://127.0.0.1:9000/hook", https_only=True)  # allow-listed: http is fine
    policy.check_url("http://hooks.internal/x", https_only=True)
    with pytest.raises(OutboundRefused, match="private"):
        policy.check_url("http://10.21.0.1/hook")
    with pytest.raises(OutboundRefused, match="loopback"):
        policy.check_url("http://127.0.0.2/")
    with pytest.raises(ValueError, match="neither"):
        OutboundPolicy(["not a host!"])
    assert ServiceSettings(outbound_allow=["10.0.0.0/8", "hooks.internal"]).outbound_allow
    with pytest.raises(ValueError, match="outbound_allow"):
        ServiceSettings(outbound_allow=["http://x/"])


def test_addresses_in_any_spelling() -> None:
    assert parse_address("127.1") == ipaddress.ip_address("127.0.0.1")
    assert parse_address("[::1]") == ipaddress.ip_address("::1")
    assert parse_address("crm.example") is None
    assert parse_address("1.2.3.4.5") is None
    assert classify(ipaddress.ip_address("93.184.216.34")) is None


async def test_resolution_at_call_time_refuses_names_that_now_point_inside(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: a name that resolves to loopback when we call it is refused, and the
    connection never goes anywhere but the address that was checked."""
    answers: dict[str, list[str]] = {"rebind.example": ["93.184.216.34", "127.0.0.1"]}
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [(2, 1, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    with pytest.raises(OutboundRefused, match=r"rebind.example \(127.0.0.1\) is a loopback"):
        await OutboundPolicy().resolve("rebind.example", 80)
    assert await OutboundPolicy(["rebind.example"]).resolve("rebind.example", 80) == answers["rebind.example"]
    assert await OutboundPolicy(["127.0.0.0/8"]).resolve("rebind.example", 80) == answers["rebind.example"]


@pytest.fixture
async def local_server() -> AsyncIterator[int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_the_guarded_client_connects_only_where_the_policy_allows(
    local_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    resolved = loop.getaddrinfo

    async def getaddrinfo(host: str, port: int, **kwargs: object) -> object:
        # A public-looking name that (now) points at this host.
        return await resolved("127.0.0.1" if host == "rebind.example" else host, port, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    for url in (
        f"http://127.0.0.1:{local_server}/",
        f"http://127.1:{local_server}/",
        f"http://rebind.example:{local_server}/",
        f"http://localhost:{local_server}/",
    ):
        async with guarded_client(OutboundPolicy(), timeout=5) as client:
            with pytest.raises((OutboundRefused, httpx.ConnectError), match="loopback"):
                await client.get(url)
    async with guarded_client(OutboundPolicy(["127.0.0.1"]), timeout=5) as client:
        assert (await client.get(f"http://rebind.example:{local_server}/")).status_code == 204
        assert (await client.get(f"http://127.0.0.1:{local_server}/")).status_code == 204
