"""What keeps a worker process from being ready, for its ``/readyz``.

A worker's parts (relay, consumers, timers) report a problem that needs someone
to act (a topic with the wrong partition count) and clear it when it is gone.
Transient faults they ride out by themselves (a broker restart, a database
outage) are not reported here: the process is doing what it should.
"""

from __future__ import annotations

import threading


class Readiness:
    def __init__(self) -> None:
        self._problems: dict[str, str] = {}
        self._lock = threading.Lock()  # read by the metrics server's thread

    def problem(self, part: str, detail: str) -> None:
        with self._lock:
            self._problems[part] = detail

    def clear(self, part: str) -> None:
        with self._lock:
            self._problems.pop(part, None)

    def problems(self) -> dict[str, str]:
        with self._lock:
            return dict(self._problems)


# One per process: a worker process runs one service's parts.
WORKER = Readiness()
