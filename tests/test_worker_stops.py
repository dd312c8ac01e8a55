"""Every service's worker ends by itself within 5 s of SIGTERM, even stuck on a broker that
does not answer (issue 25, section 2): a process manager (``make up``'s, Kubernetes')
SIGKILLs what is still running after its grace period."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from casebridge_shared.broker import EmbeddedBroker
from casebridge_shared.testing import wait_until

SERVICES = ["order-intake", "case-handling", "notifier", "customer-ledger"]
GRACE_SECONDS = 5.0

pytestmark = pytest.mark.slow


def _start_worker(
    service: str, broker: EmbeddedBroker, var_dir: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    """``<service> worker`` on a migrated database, its output in a log file."""
    script = str(Path(sys.executable).with_name(service))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
    env.update(
        {
            "CASEBRIDGE_ENVIRONMENT": "development",
            "CASEBRIDGE_VAR_DIR": str(var_dir),
            "CASEBRIDGE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "CASEBRIDGE_WORKER_METRICS_PORT": "0",
            "CASEBRIDGE_LOG_JSON": "true",
        }
    )
    subprocess.run([script, "db", "upgrade"], env=env, check=True, capture_output=True)
    log = var_dir / "worker.log"
    worker = subprocess.Popen([script, "worker"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return worker, log


@pytest.mark.parametrize("service", SERVICES)
async def test_a_worker_stopped_while_its_broker_hangs_ends_by_itself_in_time(
    service: str, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    worker, log = _start_worker(service, broker, tmp_path)
    try:
        await wait_until(lambda: b"worker.started" in log.read_bytes(), timeout=60, message="worker started")
        broker.pause()  # every call to the broker now hangs: joins, fetches, sends
        worker.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await wait_until(lambda: worker.poll() is not None, timeout=30, message="the worker's exit")
        took = time.monotonic() - signalled
    finally:
        broker.resume()
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, log.read_text()[-2000:]
    assert took < GRACE_SECONDS, f"{service} worker took {took:.1f} s to stop"


async def test_a_worker_ends_on_ctrl_c(broker: EmbeddedBroker, tmp_path: Path) -> None:
    # Ctrl-C in a terminal running `<service> worker` (issue 28): SIGINT, not a supervisor's SIGTERM.
    worker, log = _start_worker("order-intake", broker, tmp_path)
    try:
        await wait_until(lambda: b"worker.started" in log.read_bytes(), timeout=60, message="worker started")
        worker.send_signal(signal.SIGINT)
        await wait_until(lambda: worker.poll() is not None, timeout=30, message="the worker's exit")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, log.read_text()[-2000:]
    assert b"worker.stopped" in log.read_bytes()
