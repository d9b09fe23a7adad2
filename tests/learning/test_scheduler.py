"""The learning scheduler with a real APScheduler BackgroundScheduler on a real database.

The cycle is injected (a plain function); waits are bounded polls on observable state
(how many feedback counts were taken, what the cycle recorded), never timing asserts.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from learning.lock import learner_lock
from learning.scheduler import (
    CYCLE_CRON,
    CYCLE_INTERVAL,
    FEEDBACK_WATCH,
    JOB_TABLE,
    LearnerScheduler,
    ScheduleConfig,
    SchedulerError,
    count_new_feedback,
)
from storage.db import make_engine, session_factory, transaction
from storage.models import Feedback, Flag
from storage.repositories import FeedbackRepo, Snapshots, Users
from tests.learning.seed import add_flag, add_reply, add_votes, seed_votes


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll until ``predicate`` holds; a bounded wait, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _snapshot_now(sessions: sessionmaker[Session], n: int) -> None:
    """A snapshot row whose watermarks cover everything stored so far."""
    with transaction(sessions) as s:
        newest_vote = s.query(Feedback).order_by(Feedback.updated_at.desc()).first()
        newest_flag = s.query(Flag).order_by(Flag.id.desc()).first()
        Snapshots(s).add(
            content_hash=f"{n:064d}",
            path=f"/snapshots/{n}",
            counts={},
            since_message_id=None,
            until_message_id=None,
            users={},
            feedback_until=newest_vote.updated_at if newest_vote else None,
            flag_until_id=newest_flag.id if newest_flag else None,
        )


def test_count_follows_the_snapshot_watermarks(engine: Engine) -> None:
    sessions = session_factory(engine)
    reply = seed_votes(sessions, 2)
    with transaction(sessions) as s:
        add_flag(s, reply)
        assert count_new_feedback(s) == 3  # no snapshot yet: everything counts
    _snapshot_now(sessions, 1)
    with transaction(sessions) as s:
        assert count_new_feedback(s) == 0
        voter = Users(s).get("console", f"C1-{reply}-0")
        assert voter is not None
        FeedbackRepo(s).vote(reply_id=reply, user_id=voter.id, value=-1, source="button")
        add_flag(s, reply)
        assert count_new_feedback(s) == 2  # a changed vote and a new flag


def test_feedback_trigger_fires_at_the_threshold_and_not_before(engine: Engine) -> None:
    sessions = session_factory(engine)
    calls: list[str] = []
    sched = LearnerScheduler(
        engine=engine,
        config=ScheduleConfig(feedback_threshold=3, feedback_check_s=0.05),
        cycle=calls.append,
    )
    sched.start()
    try:
        assert [j.id for j in sched.jobs()] == [FEEDBACK_WATCH]
        seed_votes(sessions, 2)
        base = sched.feedback_checks
        assert wait_until(
            lambda: sched.last_feedback_count == 2 and sched.feedback_checks >= base + 5
        )
        assert calls == []  # two items: several counts taken, no cycle
        with transaction(sessions) as s:
            add_votes(s, add_reply(s, channel="C2"), [-1])
        assert wait_until(lambda: calls == ["feedback"])
        # the cycle wrote no snapshot: it is not retried until three more items arrive
        base = sched.feedback_checks
        assert wait_until(lambda: sched.feedback_checks >= base + 5)
        assert calls == ["feedback"]
        seed_votes(sessions, 3, channel="C3")
        assert wait_until(lambda: calls == ["feedback", "feedback"])
        # a snapshot takes the items in: the count starts again from zero
        _snapshot_now(sessions, 1)
        base = sched.feedback_checks
        assert wait_until(
            lambda: sched.last_feedback_count == 0 and sched.feedback_checks >= base + 3
        )
        seed_votes(sessions, 2, channel="C4")
        base = sched.feedback_checks
        assert wait_until(
            lambda: sched.last_feedback_count == 2 and sched.feedback_checks >= base + 3
        )
        assert len(calls) == 2
    finally:
        sched.shutdown()


def test_two_schedulers_on_one_database_run_the_work_once(db_url: str, tmp_path: Path) -> None:
    """Both schedulers fire the same stored job; the learner lock lets one do the work."""
    engines = [make_engine(db_url), make_engine(db_url)]
    results: list[tuple[str, str]] = []
    saw_busy = threading.Event()
    done = threading.Event()

    def cycle_for(name: str, eng: Engine) -> Callable[[str], str]:
        def cycle(trigger: str) -> str:
            with learner_lock(eng, lock_dir=tmp_path) as held:
                if not held:
                    # busy while the work runs (or, later, while the other one skips)
                    results.append((name, "busy" if not done.is_set() else "busy later"))
                    saw_busy.set()
                    return "busy"
                if done.is_set():
                    results.append((name, "skipped"))
                    return "skipped"  # nothing new to learn from
                results.append((name, "work"))
                saw_busy.wait(30)  # hold the lock until the other scheduler tried
                done.set()
                return "trained"

        return cycle

    config = ScheduleConfig(interval_minutes=0.2 / 60)  # every 0.2 s
    scheds = [
        LearnerScheduler(engine=eng, config=config, cycle=cycle_for(f"s{i}", eng))
        for i, eng in enumerate(engines)
    ]
    try:
        for s in scheds:
            s.start()
        assert wait_until(done.is_set)
        assert wait_until(lambda: any(r[1] == "skipped" for r in results))
        with engines[0].connect() as conn:
            assert conn.scalar(text(f"SELECT count(*) FROM {JOB_TABLE}")) == 1
    finally:
        for s in scheds:
            s.shutdown()
        for eng in engines:
            eng.dispose()
    work = [r for r in results if r[1] == "work"]
    busy = [r for r in results if r[1] == "busy"]
    assert len(work) == 1, results
    assert busy and all(name != work[0][0] for name, _ in busy), results


def test_the_job_store_persists_across_restarts(engine: Engine) -> None:
    def started(config: ScheduleConfig) -> dict[str, object]:
        sched = LearnerScheduler(engine=engine, config=config, cycle=lambda _t: None)
        sched.start()
        try:
            return {j.id: j.next_run_time for j in sched.jobs()}
        finally:
            sched.shutdown()

    daily = ScheduleConfig(interval_minutes=24 * 60, cron="0 3 * * *")
    first = started(daily)
    assert set(first) == {CYCLE_INTERVAL, CYCLE_CRON}
    time.sleep(0.05)  # let the clock move so a re-created interval job would differ
    assert started(daily) == first  # stored jobs and their next run times survive
    changed = started(ScheduleConfig(interval_minutes=12 * 60))
    assert set(changed) == {CYCLE_INTERVAL}  # cron switched off: its job is removed
    assert changed[CYCLE_INTERVAL] != first[CYCLE_INTERVAL]  # new period: replaced
    with engine.connect() as conn:
        assert conn.scalar(text(f"SELECT count(*) FROM {JOB_TABLE}")) == 1


def test_a_failing_cycle_does_not_stop_the_scheduler(engine: Engine) -> None:
    def boom(trigger: str) -> None:
        raise RuntimeError("training exploded")

    sched = LearnerScheduler(engine=engine, config=ScheduleConfig(), cycle=boom)
    assert sched.run_cycle("interval") is None
    assert not sched.cycle_running and sched.cycles_started == 1


def test_invalid_schedules_are_refused() -> None:
    with pytest.raises(SchedulerError, match="cron"):
        ScheduleConfig(cron="every day at three")
    with pytest.raises(SchedulerError):
        ScheduleConfig(feedback_check_s=0)


def _move_next_run(engine: Engine, job_id: str, when: datetime) -> None:
    """Rewrite a stored job's next run time, as if the process had been down since."""
    with engine.begin() as conn:
        state = pickle.loads(
            conn.scalar(text(f"SELECT job_state FROM {JOB_TABLE} WHERE id = :i"), {"i": job_id})
        )
        state["next_run_time"] = when
        conn.execute(
            text(f"UPDATE {JOB_TABLE} SET job_state = :s, next_run_time = :t WHERE id = :i"),
            {"s": pickle.dumps(state), "t": when.timestamp(), "i": job_id},
        )


def test_runs_missed_while_down_run_once_after_a_restart(engine: Engine) -> None:
    """Thirty missed periods within the grace time: one cycle (coalesce), not thirty."""
    config = ScheduleConfig(interval_minutes=1, misfire_grace_s=3600)
    calls: list[str] = []
    first = LearnerScheduler(engine=engine, config=config, cycle=calls.append)
    first.start()
    first.shutdown()
    _move_next_run(engine, CYCLE_INTERVAL, datetime.now(UTC) - timedelta(minutes=30))
    second = LearnerScheduler(engine=engine, config=config, cycle=calls.append)
    second.start()
    try:
        assert wait_until(lambda: calls == ["interval"])
        assert wait_until(
            lambda: all(
                j.next_run_time is not None and j.next_run_time > datetime.now(UTC)
                for j in second.jobs()
            )
        )
    finally:
        second.shutdown()
    assert calls == ["interval"]
