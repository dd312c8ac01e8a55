"""CPU of the whole stack while nothing happens: what ``make up`` costs a laptop or a small VM.

Starts ``casebridge up`` (the README's stack: embedded broker, every api and worker,
SQLite under a throwaway directory) in a process group of its own, waits until it
prints that everything is ready, lets it settle for ``--settle`` seconds, then reads
every process's CPU counters from ``/proc`` over ``--seconds`` and prints each
process's share of one core and the total. Ctrl-C (SIGINT to the group) stops the stack
afterwards, as a user would.

There is no second system to compare with; the reference printed alongside is the
broker, which only answers the workers' Kafka fetches while idle. The stack runs on free
ports of its own, so a ``make up`` already running is no obstacle. Also printed: how many
processes the stack is, and their memory as the sum of their PSS.

    .venv/bin/python bench/bench_idle.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as c
from bench_up import stack_env

READY = "Ctrl-C stops everything."


def _commands_below(root: int) -> dict[int, str]:
    """Every process below ``root``, with its command line (the interesting part)."""
    named: dict[int, str] = {}
    for pid in c.descendants(root) - {root}:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [Path(a.decode()).name for a in argv if a][:3]
        if words and words[0] not in ("sh", "bash"):
            named[pid] = " ".join(words)
    return named


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pss_bytes(pid: int) -> int:
    """The process's proportional set size: its share of the memory it shares with others."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="length of the measurement")
    p.add_argument("--settle", type=float, default=10.0, help="seconds to wait after the stack is ready")
    p.add_argument("--ready-timeout", type=float, default=240.0)
    p.add_argument("--wait-idle", type=float, default=300.0, help="seconds to wait for other load to end")
    args = p.parse_args()
    print(f"machine: {c.machine()}; load average {os.getloadavg()[0]:.2f} at start")
    c.report_background_load(max_wait=args.wait_idle)
    with tempfile.TemporaryDirectory(prefix="casebridge-idle-") as var_dir:
        log_path = Path(var_dir) / "up.log"
        with log_path.open("wb") as log:
            stack = subprocess.Popen(
                [str(c.VENV_BIN / "casebridge"), "up", "--var-dir", var_dir],
                stdout=log,
                stderr=subprocess.STDOUT,
                # Free ports of its own (bench_up.stack_env): another stack may hold make up's.
                env=stack_env(Path(var_dir)),
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + args.ready_timeout
            while READY not in log_path.read_text(errors="replace"):
                if stack.poll() is not None or time.monotonic() > deadline:
                    print(log_path.read_text(errors="replace")[-3000:])
                    print("the stack did not come up", file=sys.stderr)
                    return 1
                time.sleep(0.5)
            time.sleep(args.settle)  # not a test: let start-up work (migrations, first polls) pass
            processes = _commands_below(stack.pid)
            before = {pid: _cpu_seconds(pid) for pid in processes}
            started = time.monotonic()
            monitor = c.LoadMonitor()
            time.sleep(args.seconds)
            elapsed = time.monotonic() - started
            shares = {pid: (_cpu_seconds(pid) - before[pid]) / elapsed for pid in processes}
            # Every process of the stack, the shells and the process manager's helpers too.
            pss = sum(_pss_bytes(pid) for pid in c.descendants(stack.pid))
            count = len(c.descendants(stack.pid))
            foreign = monitor.foreign()
        finally:
            os.killpg(stack.pid, signal.SIGINT)
            try:
                stack.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(stack.pid, signal.SIGKILL)
                stack.wait()
    print(f"\nidle stack from `casebridge up`, {args.seconds:.0f} s after {args.settle:.0f} s of settling:")
    broker = 0.0
    for pid, share in sorted(shares.items(), key=lambda item: -item[1]):
        if "tansu" in processes[pid]:
            broker = share
        print(f"  {share:6.1%} of a core  {processes[pid]}")
    total = sum(shares.values())
    print(f"  {total:6.1%} of a core in all ({total / (os.cpu_count() or 1):.0%} of the machine)")
    print(
        f"  {count} processes, {pss / 2**20:,.0f} MiB resident (sum of PSS); "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    rest = (total - broker) / max(broker, 1e-9)
    print(f"  the broker (reference: it only answers idle fetches) {broker:.1%}; rest / broker {rest:.1f}")
    # Busy time not charged to the stack's processes: other processes, and the kernel's
    # loopback networking for the stack's own Kafka fetches (softirq, charged to no one).
    print(f"  busy time outside the stack's processes: {foreign:.0%} of the machine")
    print("  (other processes, or kernel work for the stack's own network traffic; see `top` if large)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
