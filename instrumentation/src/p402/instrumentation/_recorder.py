"""Finishing economic events off the application's path.

The request path only notes what happened (times, status, the body it already has) and hands
the rest to one background thread: parsing the body, pricing, the content policy, encoding and
export. The application gets its response without waiting for any of it.

Handing over is an append to a deque, with no lock and no wake-up: the thread takes what has
accumulated every ``interval`` seconds (:data:`INTERVAL`), so a busy application pays nothing
for signalling and the thread runs in bursts. A job the thread itself submits (a stream that
ends on it) runs at once. ``flush`` wakes it at once and waits until everything handed over so
far is done. When more than ``max_pending`` jobs wait, the
application's thread runs the job itself instead of dropping it: a burst slows the
application a little rather than losing billing events. After each burst, and at least every
interval, the thread calls ``tick`` (the sink ships batches that have waited long enough).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Final

__all__ = ["INTERVAL", "Recorder"]

INTERVAL: Final = 0.5
"""Seconds between the thread's bursts. Each burst has a fixed cost: waking the thread, and
the caches it and the application's thread both refill afterwards. Measured with
``benchmarks/instrumentation_overhead.py``, bursts every 0.5 s cost a streamed call about
12 us of CPU less than bursts every 0.1 s, a non-streamed one 0 to 10 us less; bursts every
0.02 s cost 8 to 14 us more. A finished event waits at most this long before it is
recorded, then about the sink's batch delay before it is exported; ``flush`` records and
exports at once."""

_log = logging.getLogger(__name__)


class Recorder:
    """One daemon thread running submitted jobs in submission order."""

    def __init__(
        self,
        tick: Callable[[], None] = lambda: None,
        *,
        interval: float = INTERVAL,
        max_pending: int = 10_000,
    ) -> None:
        self._tick = tick
        self._interval = interval
        self._max_pending = max_pending
        self._reset()
        reference = weakref.ref(self)

        def reset_in_child() -> None:
            if (recorder := reference()) is not None:
                recorder._reset()

        os.register_at_fork(after_in_child=reset_in_child)

    def _reset(self) -> None:
        self._jobs: deque[Callable[[], None]] = deque()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._done = 0  # jobs run so far, guarded by _idle
        self._numbers = itertools.count(1)  # atomic under the GIL, unlike += on an attribute
        self._submitted = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._start_lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        if self._thread is None:
            self._start()
        if len(self._jobs) >= self._max_pending or threading.get_ident() == self._thread_id:
            _run(job)
            return
        self._submitted = next(self._numbers)
        self._jobs.append(job)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="p402-recorder", daemon=True
                )
                self._thread.start()

    def _work(self) -> None:
        self._thread_id = threading.get_ident()
        jobs = self._jobs
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            ran = 0
            while jobs:
                _run(jobs.popleft())
                ran += 1
            _run(self._tick)
            with self._idle:
                self._done += ran
                self._idle.notify_all()
            if self._stopping and not jobs:
                return

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every job submitted so far has run; ``False`` on timeout."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return True
        target = self._submitted
        self._wake.set()
        with self._idle:
            return self._idle.wait_for(lambda: self._done >= target, timeout)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Run what is pending, then stop the thread."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake.set()
        thread.join(timeout)
        self._thread = None
        self._thread_id = None


def _run(job: Callable[[], None]) -> None:
    try:
        job()
    except Exception:
        _log.exception("P402 could not record an economic event")
