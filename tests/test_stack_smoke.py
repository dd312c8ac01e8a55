"""`make up` from a clean checkout: ready, register, log in, order, event on Kafka, Ctrl-C, all gone."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import httpx
import pytest

from casebridge_shared.broker import free_port
from casebridge_shared.events import ORDERS_TOPIC
from casebridge_shared.testing import TopicReader, wait_until

PASSWORD = "correct-horse-battery"

ROOT = Path(__file__).resolve().parents[1]


def _checkout(target: Path) -> Path:
    """Copy the tracked and new (not ignored) files: a clean checkout of the working tree."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            dst = target / name.decode()
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    return target


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
async def test_make_up_serves_the_stack_and_stops_cleanly(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path / "casebridge")
    assert not (checkout / "var").exists()
    ports = {name: free_port() for name in ("ORDER_INTAKE", "CASE_HANDLING", "NOTIFIER", "CUSTOMER_LEDGER")}
    kafka = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
    env.update({f"CASEBRIDGE_{name}_PORT": str(port) for name, port in ports.items()})
    env.update({f"CASEBRIDGE_{name}_WORKER_METRICS_PORT": str(free_port()) for name in ports})
    env["CASEBRIDGE_KAFKA_BOOTSTRAP_SERVERS"] = kafka
    # The development mail catcher on a port of its own (1025 may be another stack's).
    env["CASEBRIDGE_NOTIFIER_SMTP_PORT"] = str(free_port())
    # Reuse this run's environment instead of installing again (CI installs from scratch
    # already); -o keeps make from re-installing the copy's packages into it.
    venv = Path(sys.executable).parent.parent
    env["VENV"] = str(venv)
    proc = subprocess.Popen(
        ["make", "-o", f"{venv}/.installed", "up"],
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    output: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            output.append(line.decode(errors="replace"))

    reader_thread = threading.Thread(target=pump, daemon=True)
    reader_thread.start()
    try:
        deadline = time.monotonic() + 420  # a deadline: a loaded machine starts nine processes slowly
        while not any("Casebridge is up." in line for line in output):
            assert proc.poll() is None, "make up exited early:\n" + "".join(output[-50:])
            assert time.monotonic() < deadline, "make up not ready:\n" + "".join(output[-50:])
            await asyncio.sleep(0.2)
        text = "".join(output)
        base = f"http://127.0.0.1:{ports['ORDER_INTAKE']}"
        assert f"{base}/docs" in text
        assert "customer@demo.casebridge.example" in text and "admin@demo.casebridge.example" in text

        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            # No admin the banner does not list (issue 25): the api's bootstrap admin is the demo one.
            r = await client.post(
                "/auth/token", data={"username": "admin@casebridge.example", "password": "changethis"}
            )
            assert r.status_code == 401
            r = await client.post(
                "/auth/token",
                data={"username": "admin@demo.casebridge.example", "password": "casebridge-demo"},
            )
            assert r.status_code == 200, r.text
            admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
            admins = (await client.get("/users", params={"role": "admin"}, headers=admin)).json()
            assert [u["email"] for u in admins["items"]] == ["admin@demo.casebridge.example"]
            r = await client.post(
                "/auth/register",
                json={"email": "smoke@example.org", "password": PASSWORD, "full_name": "Smoke"},
            )
            assert r.status_code == 201, r.text
            r = await client.post("/auth/token", data={"username": "smoke@example.org", "password": PASSWORD})
            assert r.status_code == 200
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            # A forgotten password: the reset mail is a file a person opens (issue 26).
            assert "var/mail" in text
            r = await client.post("/auth/password-reset", json={"email": "smoke@example.org"})
            assert r.status_code == 202, r.text
            mails = checkout / "var" / "mail"
            await wait_until(lambda: any(mails.glob("*.eml")), timeout=60, message="the reset mail's file")
            [mail] = [message_from_bytes(p.read_bytes(), policy=default) for p in mails.glob("*.eml")]
            body = mail.get_body(preferencelist=("plain",))
            assert body is not None and f"{base}/portal/reset-password?token=" in body.get_content()
            product = (await client.get("/products")).json()["items"][0]
            r = await client.post(
                "/orders", json={"product_id": product["id"], "description": "smoke"}, headers=auth
            )
            assert r.status_code == 201
            order_id = r.json()["id"]

        async with TopicReader(kafka, ORDERS_TOPIC) as reader:
            events = await reader.read_until(
                lambda ev: any(e["partitionkey"] == order_id for e in ev), timeout=60
            )
        assert any(e["type"] == "casebridge.orders.order-placed.v1" for e in events)

        family = _descendants(proc.pid) | {proc.pid}
        assert len(family) >= 4  # make, casebridge, broker, api, worker ...
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
        proc.wait(timeout=60)
        stop_deadline = time.monotonic() + 30
        while any(_alive(p) for p in family) and time.monotonic() < stop_deadline:
            await asyncio.sleep(0.1)
        assert not [p for p in family if _alive(p)], "processes left after Ctrl-C"
        # Each stopped by itself: the process manager SIGKILLs what still runs 5 s after Ctrl-C.
        killed = [line for line in output if "sending SIGKILL" in line]
        assert not killed, "".join(killed)
        assert (checkout / "var" / "order-intake.sqlite3").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
