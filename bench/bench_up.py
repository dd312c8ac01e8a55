"""``make up`` on an already set-up clone: seconds to the banner, and from Ctrl-C until every process is gone.

Runs ``casebridge up`` (as ``make up`` does) in a process group of its own, on free
ports and a throwaway ``--var-dir``, so it never collides with a stack already
running. The first start sets the directory up (databases migrated, demo logins
seeded) and is reported apart; each following start is a restart of an already
set-up clone, the case issue 28 measures. After each banner the script sends
SIGINT to the group (what Ctrl-C does in a terminal) and times until every process
of the stack has exited, and counts the ones the process manager had to SIGKILL.

Baseline, measured in the same run on the same machine: starting the same processes'
Python code and nothing else, all in parallel (``python -c "import <api module>"``
and ``"import <worker module>"`` for every service, and the broker until its port
answers): the floor for any ``up`` that starts these processes. The ratio
``up / floor`` shows what ``up`` itself adds (migrations check, seeding, waits).

    .venv/bin/python bench/bench_up.py --restarts 3
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from importlib.metadata import entry_points
from pathlib import Path

import _common as c

from casebridge_shared.broker import broker_command, free_port, port_open

BANNER = "Ctrl-C stops everything."
SERVICES = ("ORDER_INTAKE", "CASE_HANDLING", "NOTIFIER", "CUSTOMER_LEDGER")
BANNER_GOAL_SECONDS = 15.0
STOP_GOAL_SECONDS = 5.0


def stack_env(var_dir: Path) -> dict[str, str]:
    """Free ports for everything ``up`` opens, and no CASEBRIDGE_* setting from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
    for name in SERVICES:
        env[f"CASEBRIDGE_{name}_PORT"] = str(free_port())
        env[f"CASEBRIDGE_{name}_WORKER_METRICS_PORT"] = str(free_port())
    env["CASEBRIDGE_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{free_port()}"
    env["CASEBRIDGE_NOTIFIER_SMTP_PORT"] = str(free_port())
    env["CASEBRIDGE_VAR_DIR"] = str(var_dir)
    return env


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _name(pid: int) -> str:
    """A process's command, short: ``order-intake worker``, ``tansu broker``."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    words = [Path(a.decode()).name for a in argv if a]
    if words[:1] and words[0].startswith("python"):
        words = words[1:]
    return " ".join(words[:2]) or str(pid)


def start_and_stop(var_dir: Path, timeout: float) -> tuple[float, float, int, str]:
    """One ``casebridge up``: (seconds to banner, seconds from SIGINT to no process left, SIGKILLed, log)."""
    env = stack_env(var_dir)
    log_path = var_dir / "up.log"
    with log_path.open("wb") as log:
        started = time.monotonic()
        stack = subprocess.Popen(
            [str(c.VENV_BIN / "casebridge"), "up", "--var-dir", str(var_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    family: set[int] = set()
    try:
        deadline = started + timeout
        while BANNER not in log_path.read_text(errors="replace"):
            if stack.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "the stack did not come up:\n" + log_path.read_text(errors="replace")[-3000:]
                )
            family |= c.descendants(stack.pid)
            time.sleep(0.05)  # not a test: the resolution of the figure
        to_banner = time.monotonic() - started
        family |= c.descendants(stack.pid)
        names = {pid: _name(pid) for pid in family}
        os.killpg(stack.pid, signal.SIGINT)
        signalled = time.monotonic()
        gone: dict[int, float] = {}
        while len(gone) < len(family) and time.monotonic() < signalled + 60:
            for pid in family - set(gone):
                if not _alive(pid):
                    gone[pid] = time.monotonic() - signalled
            time.sleep(0.02)  # not a test: the resolution of the figure
        to_gone = time.monotonic() - signalled
        last = sorted(gone.items(), key=lambda item: -item[1])[:5]
        print("  last to exit: " + ", ".join(f"{names.get(pid, pid)} {t:.1f} s" for pid, t in last))
        stack.wait(timeout=10)
    finally:
        if stack.poll() is None:
            family |= c.descendants(stack.pid)
            # The processes live in sessions of their own (honcho's, the broker's): each one.
            for pid in family:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            stack.wait()
    text = log_path.read_text(errors="replace")
    return to_banner, to_gone, text.count("sending SIGKILL"), text


def import_floor() -> float:
    """Seconds to start every api's and worker's Python code and the broker, all at once."""
    modules = []
    for group in ("casebridge.api", "casebridge.worker"):
        modules += [ep.value.split(":")[0] for ep in entry_points(group=group)]
    port = free_port()
    started = time.monotonic()
    broker = subprocess.Popen(
        broker_command("127.0.0.1", port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    imports = [subprocess.Popen([sys.executable, "-c", f"import {module}"]) for module in modules]
    try:
        while not port_open("127.0.0.1", port):
            time.sleep(0.02)
        for process in imports:
            process.wait()
        return time.monotonic() - started
    finally:
        broker.terminate()
        broker.wait()


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--restarts", type=int, default=3, help="starts of the set-up clone to measure")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a banner")
    args = p.parse_args()
    print(f"machine: {c.machine()}; load average {os.getloadavg()[0]:.2f} at start")
    # The machine is shared: say how busy it is, but do not wait long for it to calm down.
    c.report_background_load(max_wait=10.0)
    with tempfile.TemporaryDirectory(prefix="casebridge-up-") as tmp:
        var_dir = Path(tmp)
        first, first_stop, first_killed, text = start_and_stop(var_dir, args.timeout)
        print(f"first start (sets the clone up): banner {first:.1f} s; stop {first_stop:.1f} s")
        print(
            "  "
            + "\n  ".join(line for line in text.splitlines() if line.startswith(("migrating", "seeding")))
        )
        rows = []
        for _ in range(args.restarts):
            floor = import_floor()
            banner, gone, killed, text = start_and_stop(var_dir, args.timeout)
            rows.append((banner, gone, killed, floor))
            migrated = [line for line in text.splitlines() if line.startswith("migrating")]
            print(
                f"restart: banner {banner:.1f} s (floor {floor:.1f} s, up / floor {banner / floor:.2f}; "
                f"goal {BANNER_GOAL_SECONDS:.0f} s: {banner / BANNER_GOAL_SECONDS:.2f}); "
                f"Ctrl-C to none left {gone:.1f} s (goal {STOP_GOAL_SECONDS:.0f} s: "
                f"{gone / STOP_GOAL_SECONDS:.2f}), SIGKILLed {killed}; migrated again: {len(migrated)}; "
                f"load average {os.getloadavg()[0]:.2f}"
            )
    banners = [r[0] for r in rows]
    stops = [r[1] for r in rows]
    floors = [r[3] for r in rows]
    print(
        f"\nrestart to banner: median {c.median(banners):.1f} s, "
        f"import floor median {c.median(floors):.1f} s, ratio {c.median(banners) / c.median(floors):.2f}; "
        f"Ctrl-C to none left: median {c.median(stops):.1f} s, "
        f"max {max(stops):.1f} s; SIGKILLed in all {sum(r[2] for r in rows) + first_killed}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
