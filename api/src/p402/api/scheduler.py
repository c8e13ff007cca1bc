"""The scheduler inside ``p402 serve``: APScheduler runs the ledger's periodic jobs.

One server per deployment runs them: every server starts a scheduler, and before each run a
job takes or renews the leader lease (:mod:`p402.ledger.lease`); the servers without the
lease skip their runs, and one of them takes over once the leader's lease expires. On SQLite
there is one process anyway.

:data:`JOBS` lists the jobs: a name, the function (called with the engine and the time in
epoch ms), the default interval, and the environment variable that overrides it. A module
adds its job with one line there. Tests run a job once, synchronously, with
:meth:`Scheduler.run_once`, and may give the scheduler their own clock.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC
from typing import Final

import anyio.to_thread
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from litestar import Litestar
from sqlalchemy import Engine

from p402.ledger.alerts import fire_alerts
from p402.ledger.anomalies import detect_anomalies
from p402.ledger.clock import now_ms
from p402.ledger.database import refresh_statistics
from p402.ledger.lease import hold_lease, release_lease
from p402.ledger.observations import compute_observations
from p402.ledger.webhooks import deliver_due
from p402.settlement.chain import check_chain_settings
from p402.settlement.jobs import seal_idle_sessions, settle_on_configured_chain
from p402.settlement.sealing import idle_seconds

__all__ = [
    "JOBS",
    "LEASE_SECONDS",
    "MAX_INTERVAL_SECONDS",
    "Job",
    "JobRun",
    "Scheduler",
    "SettingsError",
    "UnknownJob",
    "check_settings",
    "scheduler_enabled",
    "scheduler_lifespans",
]

LEASE_SECONDS: Final = 30.0
"""How long the leader's lease lasts unless renewed (it renews every third of it)."""
MAX_INTERVAL_SECONDS: Final = 7 * 86_400
"""The longest interval a job may be given: a week."""

_log = logging.getLogger("p402.scheduler")


@dataclass(frozen=True, slots=True)
class Job:
    """A periodic job: ``run(engine, now_ms)`` every ``interval_seconds`` (or the number of
    seconds in the environment variable ``interval_env``)."""

    name: str
    run: Callable[[Engine, int], object]
    interval_seconds: float
    interval_env: str | None = None


JOBS: Final[list[Job]] = [
    # Anomalies are flagged within 60 s of their events arriving: keep this at most 30 s.
    Job("anomalies", detect_anomalies, 15, "P402_ANOMALY_INTERVAL_SECONDS"),
    Job("alerts", fire_alerts, 60, "P402_ALERT_INTERVAL_SECONDS"),
    Job("webhooks", deliver_due, 10, "P402_WEBHOOK_INTERVAL_SECONDS"),
    Job("observations", compute_observations, 300, "P402_OBSERVATION_INTERVAL_SECONDS"),
    # Sessions idle for P402_RECEIPT_IDLE_SECONDS are sealed within 15 s of going idle.
    Job("receipts", seal_idle_sessions, 15),
    Job("settlement", settle_on_configured_chain, 60, "P402_SETTLEMENT_INTERVAL_SECONDS"),
    Job("statistics", refresh_statistics, 600, "P402_STATISTICS_INTERVAL_SECONDS"),
]
"""The jobs every scheduler runs."""


@dataclass(frozen=True, slots=True)
class JobRun:
    """One call of :meth:`Scheduler.run_once`: whether this scheduler ran the job (it holds
    the lease) and what the job returned."""

    ran: bool
    result: object = None


class SettingsError(ValueError):
    """A setting the server reads at start is wrong: one of the scheduler's jobs, or
    ``P402_POLICY_REFRESH_SECONDS``."""


class UnknownJob(KeyError):
    """No job of that name is registered."""


def _interval(job: Job, intervals: Mapping[str, float], environ: Mapping[str, str]) -> float:
    if job.name in intervals:
        seconds = float(intervals[job.name])
    elif job.interval_env and environ.get(job.interval_env):
        value = environ[job.interval_env]
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not 0 < seconds <= MAX_INTERVAL_SECONDS:
            raise SettingsError(
                f"{job.interval_env} must be a number of seconds above 0 and at most "
                f"{MAX_INTERVAL_SECONDS:,}, not {value!r}"
            )
    else:
        seconds = job.interval_seconds
    if not 0 < seconds <= MAX_INTERVAL_SECONDS:
        raise SettingsError(f"the interval of job {job.name!r} must be positive, not {seconds}")
    return seconds


def check_settings(environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`SettingsError` naming the first setting of the jobs that is wrong (the
    intervals, ``P402_RECEIPT_IDLE_SECONDS``, ``P402_CHAIN_*``): checked when a server
    starts, rather than failing in its jobs later, over and over."""
    env = os.environ if environ is None else environ
    for job in JOBS:
        _interval(job, {}, env)
    try:
        idle_seconds(env)
        check_chain_settings(env)
    except ValueError as error:
        raise SettingsError(str(error)) from None


class Scheduler:
    """Runs ``jobs`` on ``engine`` while holding the deployment's leader lease.

    ``clock`` gives the time in epoch ms (default: the system clock); ``intervals`` overrides
    a job's interval by name; ``holder`` names this scheduler in the lease (default: host,
    process and a random suffix).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        jobs: Sequence[Job] | None = None,
        clock: Callable[[], int] = now_ms,
        intervals: Mapping[str, float] | None = None,
        lease_seconds: float = LEASE_SECONDS,
        holder: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        environ = os.environ if environ is None else environ
        self.engine = engine
        self.jobs = {job.name: job for job in (JOBS if jobs is None else jobs)}
        self.clock = clock
        self.lease_ms = int(lease_seconds * 1000)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.intervals = {
            name: _interval(job, intervals or {}, environ) for name, job in self.jobs.items()
        }
        self._background: BackgroundScheduler | None = None

    def holds_lease(self) -> bool:
        """Take or renew the leader lease; whether this scheduler holds it now."""
        return hold_lease(self.engine, self.holder, self.clock(), self.lease_ms)

    def run_once(self, name: str) -> JobRun:
        """Run the job ``name`` now, in this thread, if this scheduler holds the lease."""
        try:
            job = self.jobs[name]
        except KeyError:
            raise UnknownJob(name) from None
        if not self.holds_lease():
            return JobRun(ran=False)
        return JobRun(ran=True, result=job.run(self.engine, self.clock()))

    def _tick(self, name: str) -> None:
        try:
            run = self.run_once(name)
        except Exception:
            _log.exception("scheduled job %s failed; it runs again at its next interval", name)
            return
        if run.ran:
            _log.debug("job %s: %r", name, run.result)

    def _renew(self) -> None:
        try:
            self.holds_lease()
        except Exception:
            _log.exception("could not renew the scheduler lease")

    def start(self) -> None:
        """Run the jobs in a background thread until :meth:`shutdown`."""
        if self._background is not None:
            return
        background = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        for name in self.jobs:
            background.add_job(
                self._tick,
                IntervalTrigger(seconds=self.intervals[name], timezone=UTC),
                args=[name],
                id=name,
                name=name,
            )
        background.add_job(
            self._renew,
            IntervalTrigger(seconds=self.lease_ms / 3000, timezone=UTC),
            id="lease",
            name="lease",
        )
        background.start()
        self._background = background
        _log.info(
            "scheduler %s started: %s",
            self.holder,
            ", ".join(f"{name} every {seconds:g} s" for name, seconds in self.intervals.items()),
        )

    def shutdown(self) -> None:
        """Stop the background thread (waiting for a running job) and give the lease up, so
        that another server takes over at once."""
        background, self._background = self._background, None
        if background is not None:
            background.shutdown(wait=True)
        try:
            release_lease(self.engine, self.holder)
        except Exception:
            _log.exception("could not release the scheduler lease")

    @property
    def running(self) -> bool:
        return self._background is not None


def scheduler_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether servers run the scheduler: yes, unless ``P402_SCHEDULER`` is ``off`` (or
    ``false``, ``no``, ``0``); a value that is neither on nor off raises
    :class:`SettingsError`."""
    env = os.environ if environ is None else environ
    value = env.get("P402_SCHEDULER", "on").strip().lower()
    if value in {"on", "true", "yes", "1", ""}:
        return True
    if value in {"off", "false", "no", "0"}:
        return False
    raise SettingsError(f"P402_SCHEDULER must be on or off, not {env['P402_SCHEDULER']!r}")


def scheduler_lifespans(
    engine: Engine, enabled: bool | None = None
) -> list[Callable[[Litestar], AbstractAsyncContextManager[None]]]:
    """The app's lifespan hooks for the scheduler: started with the app (``app.state.scheduler``)
    and stopped with it; none when ``enabled`` is false (default: :func:`scheduler_enabled`)."""
    if not (scheduler_enabled() if enabled is None else enabled):
        return []
    check_settings()

    @asynccontextmanager
    async def run_scheduler(app: Litestar) -> AsyncIterator[None]:
        scheduler = Scheduler(engine)
        app.state.scheduler = scheduler
        scheduler.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(scheduler.shutdown)

    return [run_scheduler]
