"""The scheduler: jobs run once per deployment (leader lease), on demand with an injected
clock, in the background with configurable intervals, and with the app's lifespan."""

from __future__ import annotations

import re
import threading
import time

import pytest
from litestar.testing import TestClient

from p402.api import create_app
from p402.api.scheduler import (
    JOBS,
    Job,
    Scheduler,
    SettingsError,
    UnknownJob,
    check_settings,
    scheduler_enabled,
)
from p402.ledger.database import connect
from p402.ledger.lease import lease_holder


class Clock:
    """A clock the test moves by hand (epoch ms)."""

    def __init__(self, ms: int = 1_800_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += int(seconds * 1000)


def _recording_job(runs: list[tuple[str, int]], holder: str) -> Job:
    def record(engine, now_ms):
        runs.append((holder, now_ms))
        return len(runs)

    return Job("record", record, 0.05)


def test_run_once_runs_the_job_now_with_the_injected_clock(engine):
    runs: list[tuple[str, int]] = []
    clock = Clock()
    scheduler = Scheduler(engine, jobs=[_recording_job(runs, "a")], clock=clock, holder="a")
    outcome = scheduler.run_once("record")
    assert outcome.ran and outcome.result == 1
    clock.advance(5)
    assert scheduler.run_once("record").ran
    assert runs == [("a", clock.ms - 5000), ("a", clock.ms)]
    with pytest.raises(UnknownJob):
        scheduler.run_once("nothing")


def test_two_schedulers_on_one_database_run_a_job_once_until_the_leader_lease_expires(
    engine, database_url
):
    runs: list[tuple[str, int]] = []
    clock = Clock()
    engines = [connect(database_url), connect(database_url)]  # two servers, one database
    try:
        first, second = (
            Scheduler(e, jobs=[_recording_job(runs, name)], clock=clock, holder=name)
            for e, name in zip(engines, ("first", "second"), strict=True)
        )
        for _ in range(3):
            assert first.run_once("record").ran
            assert not second.run_once("record").ran
            clock.advance(10)  # the leader renews its 30 s lease on every run
        assert {holder for holder, _ in runs} == {"first"}
        clock.advance(31)  # the leader stopped: its lease expires
        assert second.run_once("record").ran
        assert not first.run_once("record").ran
        assert runs[-1][0] == "second"
        assert lease_holder(engines[0], clock()) == "second"
    finally:
        for e in engines:
            e.dispose()


def test_two_running_schedulers_run_each_tick_on_the_leader_only_and_hand_over_on_stop(
    engine, database_url
):
    runs: list[tuple[str, int]] = []
    engines = [connect(database_url), connect(database_url)]
    schedulers = [
        Scheduler(e, jobs=[_recording_job(runs, name)], holder=name)
        for e, name in zip(engines, ("first", "second"), strict=True)
    ]
    try:
        for scheduler in schedulers:
            scheduler.start()
        time.sleep(1.5)
        ran = [holder for holder, _ in runs]
        assert len(set(ran)) == 1, f"both servers ran the job: {ran}"
        leader = ran[0]
        assert len(ran) >= 5
        follower = next(s for s in schedulers if s.holder != leader)
        next(s for s in schedulers if s.holder == leader).shutdown()  # gives the lease up
        handed_over = len(runs)
        time.sleep(1.0)
        assert {holder for holder, _ in runs[handed_over:]} == {follower.holder}
    finally:
        for scheduler in schedulers:
            scheduler.shutdown()
        for e in engines:
            e.dispose()


def _race(barrier: threading.Barrier, held: list[bool], index: int, scheduler: Scheduler):
    barrier.wait()
    held[index] = scheduler.holds_lease()


def test_servers_racing_for_an_expired_lease_elect_one_leader(engine, database_url):
    engines = [connect(database_url) for _ in range(4)]
    try:
        clock = Clock()
        for round_ in range(5):
            clock.advance(31)  # every lease has expired: all four race for it
            schedulers = [
                Scheduler(e, jobs=[], clock=clock, holder=f"s{round_}-{i}")
                for i, e in enumerate(engines)
            ]
            barrier = threading.Barrier(len(schedulers))
            held: list[bool] = [False] * len(schedulers)

            threads = [
                threading.Thread(target=_race, args=(barrier, held, i, s))
                for i, s in enumerate(schedulers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert held.count(True) == 1, held
    finally:
        for e in engines:
            e.dispose()


def test_intervals_come_from_the_defaults_the_environment_or_the_caller(engine):
    defaults = Scheduler(engine, environ={})
    assert defaults.intervals["anomalies"] <= 30  # flagged within 60 s of arriving
    assert set(defaults.intervals) == {job.name for job in JOBS}
    from_env = Scheduler(engine, environ={"P402_ANOMALY_INTERVAL_SECONDS": "2.5"})
    assert from_env.intervals["anomalies"] == 2.5
    given = Scheduler(engine, intervals={"anomalies": 1}, environ={})
    assert given.intervals["anomalies"] == 1
    with pytest.raises(ValueError, match="P402_ANOMALY_INTERVAL_SECONDS"):
        Scheduler(engine, environ={"P402_ANOMALY_INTERVAL_SECONDS": "soon"})
    with pytest.raises(ValueError, match="positive"):
        Scheduler(engine, intervals={"webhooks": 0}, environ={})


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("P402_ALERT_INTERVAL_SECONDS", value, "P402_ALERT_INTERVAL_SECONDS must be a number")
        for value in ("abc", "0", "-1", "nan", "inf", "1e300")
    ]
    + [
        ("P402_RECEIPT_IDLE_SECONDS", "abc", "P402_RECEIPT_IDLE_SECONDS must be an integer"),
        ("P402_RECEIPT_IDLE_SECONDS", "-3", "P402_RECEIPT_IDLE_SECONDS must not be negative"),
        ("P402_CHAIN_CONFIRMATIONS", "-5", "P402_CHAIN_CONFIRMATIONS must be an integer >= 1"),
        ("P402_CHAIN_RPC_URL", "not a url", "P402_CHAIN_RPC_URL must be an http(s) URL"),
        ("P402_CHAIN_RPC_URL", "http://127.0.0.1:1", "needs the submitter's key"),
    ],
)
def test_a_wrong_setting_of_the_jobs_stops_the_server_at_start_naming_it(
    engine, monkeypatch, setting, value, message
):
    with pytest.raises(SettingsError, match=re.escape(message)):
        check_settings({setting: value})
    monkeypatch.setenv(setting, value)
    with pytest.raises(SettingsError, match=re.escape(message)):
        create_app(engine, scheduler=True)
    create_app(engine, scheduler=False)  # a server without the jobs does not need them


def test_the_scheduler_setting_is_on_or_off(engine, monkeypatch):
    assert scheduler_enabled({}) and scheduler_enabled({"P402_SCHEDULER": "yes"})
    assert not scheduler_enabled({"P402_SCHEDULER": "OFF"})
    monkeypatch.setenv("P402_SCHEDULER", "banana")
    with pytest.raises(SettingsError, match="P402_SCHEDULER must be on or off, not 'banana'"):
        create_app(engine)


def test_a_keystore_that_cannot_be_opened_is_named(tmp_path):
    keystore = tmp_path / "key.json"
    keystore.write_text('{"not": "a V3 keystore"}')
    settings = {
        "P402_CHAIN_RPC_URL": "http://127.0.0.1:1",
        "P402_CHAIN_KEYSTORE": str(keystore),
        "P402_CHAIN_KEYSTORE_PASSWORD": "x",
    }
    with pytest.raises(SettingsError, match="P402_CHAIN_KEYSTORE: cannot open the keystore"):
        check_settings(settings)
    check_settings({})  # the defaults are right


def test_the_app_runs_the_scheduler_for_its_lifetime_unless_turned_off(engine, monkeypatch):
    app = create_app(engine)
    with TestClient(app):
        scheduler = app.state.scheduler
        assert scheduler.running
        assert scheduler.run_once("anomalies").ran
    assert not scheduler.running
    assert lease_holder(engine, scheduler.clock()) is None  # given up on shutdown

    off = create_app(engine, scheduler=False)
    with TestClient(off):
        assert "scheduler" not in off.state
    monkeypatch.setenv("P402_SCHEDULER", "off")
    from_env = create_app(engine)
    with TestClient(from_env):
        assert "scheduler" not in from_env.state
