"""`make up` again on a set-up clone (issue 28): no database migrated again, no demo seeded
again, and Ctrl-C ends every process by itself, none SIGKILLed by the process manager."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from casebridge_shared.broker import free_port
from casebridge_shared.testing import wait_until

pytestmark = pytest.mark.slow

SERVICES = ("ORDER_INTAKE", "CASE_HANDLING", "NOTIFIER", "CUSTOMER_LEDGER")
BANNER = "Ctrl-C stops everything."
# honcho's exit status after SIGINT (128 + 2); 0 when every process ended on its own first.
CTRL_C_STATUSES = (0, 130)


def _stack_env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
    for name in SERVICES:
        env[f"CASEBRIDGE_{name}_PORT"] = str(free_port())
        env[f"CASEBRIDGE_{name}_WORKER_METRICS_PORT"] = str(free_port())
    env["CASEBRIDGE_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{free_port()}"
    env["CASEBRIDGE_NOTIFIER_SMTP_PORT"] = str(free_port())
    return env


def _family(root: int) -> set[int]:
    """``root`` and every process below it."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    found = {root}
    while grown := {pid for pid, parent in parents.items() if parent in found} - found:
        found |= grown
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def _up_until_ctrl_c(var_dir: Path, log: Path) -> str:
    """One ``casebridge up`` until its banner, then Ctrl-C; its output once every process is gone."""
    up = subprocess.Popen(
        [str(Path(sys.executable).with_name("casebridge")), "up", "--var-dir", str(var_dir)],
        env=_stack_env(var_dir),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    family = {up.pid}
    try:
        await wait_until(
            lambda: BANNER in log.read_text(errors="replace") or up.poll() is not None,
            timeout=420,  # a loaded machine starts nine processes slowly
            message="the banner",
        )
        assert up.poll() is None, log.read_text(errors="replace")[-3000:]
        family = _family(up.pid)
        assert len(family) >= 10  # casebridge, the broker, four apis, four workers (and shells)
        os.killpg(up.pid, signal.SIGINT)  # what Ctrl-C does
        await wait_until(
            lambda: not any(_alive(pid) for pid in family), timeout=60, message="every process gone"
        )
    finally:
        if up.poll() is None:
            # The processes live in sessions of their own (honcho's, the broker's): each one.
            for pid in family | _family(up.pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        up.wait()
    output = log.read_text(errors="replace")
    assert up.returncode in CTRL_C_STATUSES, output[-3000:]
    # honcho SIGKILLs what still runs 5 s after Ctrl-C: nothing may be left for it.
    assert "sending SIGKILL" not in output, output[-3000:]
    statuses = re.findall(r"(\S+) stopped \(rc=(-?\d+)\)", output)
    assert len(statuses) >= 8, output[-3000:]  # four apis, four workers (and the mail catcher)
    # Each process ended on its own, on the signal it was sent (0, or 128 + SIGINT/SIGTERM).
    assert all(int(rc) in (0, 130, 143, -signal.SIGTERM) for _, rc in statuses), statuses
    return output


async def test_a_restart_migrates_nothing_and_ctrl_c_ends_every_process(tmp_path: Path) -> None:
    first = await _up_until_ctrl_c(tmp_path, tmp_path / "first.log")
    assert "migrating order-intake: new database ->" in first
    assert "seeding order-intake" in first

    again = await _up_until_ctrl_c(tmp_path, tmp_path / "again.log")
    assert "migrating" not in again and "seeding" not in again, again[:3000]
    for service in ("order-intake", "case-handling", "notifier", "customer-ledger"):
        assert f"{service}: database current (" in again
    assert "order-intake: demo logins already seeded" in again
    assert "admin@demo.casebridge.example" in again.split("Casebridge is up.", 1)[1]
