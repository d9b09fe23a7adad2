"""``chatloop adapters`` and ``chatloop learn``: registry changes with audit rows, lineage,
and the scheduler daemon's graceful stop. The command line is the operator's surface
(no roles: the database credentials are the authority), so there is no refusal by role
to test here; refusals by the lifecycle are tested."""

from __future__ import annotations

import getpass
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from chatloop.cli import app
from chatloop.cli_learn import canary_policy, schedule_config, serve_until_signalled
from chatloop.settings import load_settings
from learning.scheduler import LearnerScheduler, ScheduleConfig
from learning.snapshot import MANIFEST
from storage.db import make_engine, session_factory, transaction
from storage.models import AdapterStatus
from storage.repositories import Adapters, Audit, Snapshots
from tests.learning.seed import add_reply

ACTOR = f"cli:{getpass.getuser()}"


@pytest.fixture
def env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for key in list(os.environ):
        if key.startswith("CHATLOOP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CHATLOOP_DATABASE_URL", db_url)
    monkeypatch.chdir(tmp_path)
    return db_url


@pytest.fixture
def db(env: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(env)
    yield session_factory(engine)
    engine.dispose()


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _seed(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    """v1 active, v2 pending, trained on a snapshot of two conversations' messages."""
    with transaction(sessions) as s:
        replies = [add_reply(s, channel=c) for c in ("C1", "C2", "C2")]
        from storage.models import Reply

        message_ids = [s.get(Reply, r).message_id for r in replies]  # type: ignore[union-attr]
        snap_dir = tmp_path / "snap"
        snap_dir.mkdir()
        (snap_dir / MANIFEST).write_text(json.dumps({"source_message_ids": message_ids}))
        snap = Snapshots(s).add(
            content_hash="ab" * 32,
            path=str(snap_dir),
            counts={"train": 3, "eval": 0},
            since_message_id=0,
            until_message_id=max(message_ids),
            users={1: 1, 2: 2},
        )
        reg = Adapters(s)
        for v, parent in (("v1", None), ("v2", "v1")):
            reg.register(
                version=v,
                base_model="m",
                parent_version=parent,
                snapshot_id=snap.id if v == "v2" else None,
                path=f"/adapters/{v}",
                weights_sha256="0" * 64,
            )
            reg.set_metrics(v, {"eval_loss": 1.5 if v == "v1" else 1.2})
            reg.transition(v, AdapterStatus.CANDIDATE, actor="learning")
            reg.transition(v, AdapterStatus.PENDING, actor="learning", reason="gate passed")
        reg.transition("v1", AdapterStatus.ACTIVE, actor="slack:U1", reason="approved")


def _audit(sessions: sessionmaker[Session], version: str) -> list[tuple[str, str, str | None]]:
    with transaction(sessions) as s:
        return [
            (e.actor, e.action, e.reason)
            for e in Audit(s).for_target("adapter", version)
            if e.actor.startswith("cli")
        ]


def test_list_and_show_with_lineage_and_audit(db: sessionmaker[Session], tmp_path: Path) -> None:
    code, out, _ = invoke("adapters", "list")
    assert code == 0 and "base model serves" in out
    _seed(db, tmp_path)
    code, out, _ = invoke("adapters", "list")
    assert code == 0
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert lines == {"v1": "active", "v2": "pending"}
    code, out, _ = invoke("adapters", "show", "v2", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["status"] == "pending" and shown["metrics"] == {"eval_loss": 1.2}
    snap = shown["lineage"]["snapshot"]
    assert shown["lineage"]["parent_version"] == "v1"
    assert (snap["source_conversations"], snap["source_messages"], snap["source_users"]) == (
        2,
        3,
        2,
    )
    assert [e["action"] for e in shown["audit"]][:2] == ["adapter.register", "adapter.status"]
    assert shown["audit"][-1]["reason"] == "gate passed"
    code, out, _ = invoke("adapters", "show", "v2")
    assert (
        code == 0 and "2 conversations, 3 messages, 2 users" in out and "parent:        v1" in out
    )
    code, _, err = invoke("adapters", "show", "v9")
    assert code == 1 and "v9" in err


def test_approve_reject_rollback_canary_are_audited(
    db: sessionmaker[Session], tmp_path: Path
) -> None:
    _seed(db, tmp_path)
    code, out, _ = invoke("adapters", "canary", "v2", "25")
    assert code == 0 and "25%" in out
    assert _audit(db, "v2") == [(ACTOR, "adapter.canary", None)]
    code, out, _ = invoke("adapters", "approve", "v2", "--reason", "eval loss 1.2 < 1.5")
    assert code == 0 and "approved" in out
    with transaction(db) as s:
        assert Adapters(s).active().version == "v2"  # type: ignore[union-attr]
        assert Adapters(s).get("v2").canary_percent == 0
    assert _audit(db, "v2")[-1] == (ACTOR, "adapter.status", "eval loss 1.2 < 1.5")
    assert _audit(db, "v1")[-1] == (ACTOR, "adapter.status", "replaced by v2")
    code, out, _ = invoke("adapters", "rollback", "--reason", "users complain")
    assert code == 0 and "from v2 to v1" in out
    assert (ACTOR, "adapter.rollback", "users complain") in _audit(db, "v2")
    code, out, _ = invoke("adapters", "rollback")
    assert code == 0 and "to the base model" in out
    code, _, err = invoke("adapters", "rollback")
    assert code == 1 and "nothing to roll back" in err
    # the lifecycle refuses, with a message and exit code 1, and nothing is written
    code, _, err = invoke("adapters", "reject", "v1")
    assert code == 1 and "cannot reject v1" in err and "retired" in err
    with transaction(db) as s:
        Adapters(s).register(version="v3", base_model="m")
        Adapters(s).transition("v3", AdapterStatus.CANDIDATE, actor="learning")
    before = len(_audit(db, "v3"))
    code, _, err = invoke("adapters", "canary", "v3", "10")
    assert code == 1 and "awaiting approval" in err and len(_audit(db, "v3")) == before
    code, out, _ = invoke("adapters", "reject", "v3", "--reason", "worse on slice billing")
    assert code == 0 and "rejected" in out
    assert _audit(db, "v3")[-1] == (ACTOR, "adapter.status", "worse on slice billing")


def test_settings_build_the_schedule_and_the_canary_policy(env: str) -> None:
    settings = load_settings(
        learn_interval_minutes=30,
        learn_cron="0 3 * * *",
        learn_feedback_threshold=7,
        canary_alpha=0.01,
        canary_min_votes=50,
        canary_test="fisher",
    )
    schedule = schedule_config(settings)
    assert (schedule.interval_minutes, schedule.cron, schedule.feedback_threshold) == (
        30,
        "0 3 * * *",
        7,
    )
    policy = canary_policy(settings)
    assert (policy.alpha, policy.min_votes, policy.test) == (0.01, 50, "fisher")


def test_serve_stops_gracefully_after_the_running_cycle(env: str) -> None:
    """SIGTERM while a cycle runs: no new cycle starts, the running one finishes first."""
    engine = make_engine(env)
    started, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def cycle(trigger: str) -> str:
        started.set()
        release.wait(30)
        finished.append(trigger)
        return "pending"

    scheduler = LearnerScheduler(
        engine=engine, config=ScheduleConfig(interval_minutes=0.1 / 60), cycle=cycle
    )
    said: list[str] = []

    def terminate_during_the_cycle() -> None:
        started.wait(30)
        os.kill(os.getpid(), signal.SIGTERM)
        while not any(line.startswith("stopping") for line in said):
            if not scheduler.running:
                break
            threading.Event().wait(0.02)
        release.set()

    helper = threading.Thread(target=terminate_during_the_cycle)
    helper.start()
    try:
        serve_until_signalled(scheduler, echo=said.append)
    finally:
        release.set()
        helper.join()
        engine.dispose()
    assert finished == ["interval"]  # it finished before serve returned, and no other began
    assert any("waiting for the running cycle" in line for line in said)
    assert said[-1] == "stopped" and not scheduler.running
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_learn_now_runs_one_cycle(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wiring of `learn --now`: settings -> LoopConfig -> run_cycle. With no feedback
    stored, the cycle has nothing to learn from and says so (exit 0). (Full cycles are
    tested in tests/learning/test_cycle.py; SQLite only here.)"""
    from storage.db import upgrade

    for key in list(os.environ):
        if key.startswith("CHATLOOP_"):
            monkeypatch.delenv(key)
    url = f"sqlite:///{tmp_path / 'learn.db'}"
    upgrade(url)
    monkeypatch.setenv("CHATLOOP_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHATLOOP_MODEL", str(tiny_model_dir))
    for name in ("adapter_dir", "snapshot_dir", "learn_work_dir", "model_cache_dir"):
        monkeypatch.setenv(f"CHATLOOP_{name.upper()}", str(tmp_path / name))
    code, out, err = invoke("learn", "--now")
    assert code == 0, err
    assert out.startswith("skipped:") and "run 1" in out
    from learning.lock import learner_lock

    engine = make_engine(url)
    try:
        with learner_lock(engine) as held:  # another learner is at work
            assert held
            code, out, _ = invoke("learn", "--now")
        assert code == 1 and out.startswith("busy:") and "no run" in out
    finally:
        engine.dispose()
    code, out, err = invoke("learn")
    assert code == 1 and "--now" in out


def test_learn_serve_runs_until_sigterm(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The daemon as operators run it: a process that schedules, and exits 0 on SIGTERM."""
    import subprocess
    import sys

    from storage.db import upgrade

    url = f"sqlite:///{tmp_path / 'serve.db'}"
    upgrade(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLOOP_")}
    env.update(
        CHATLOOP_DATABASE_URL=url,
        CHATLOOP_MODEL=str(tiny_model_dir),
        CHATLOOP_MODEL_CACHE_DIR=str(tmp_path / "models"),
        CHATLOOP_ADAPTER_DIR=str(tmp_path / "adapters"),
        CHATLOOP_SNAPSHOT_DIR=str(tmp_path / "snapshots"),
        CHATLOOP_LEARN_WORK_DIR=str(tmp_path / "work"),
        CHATLOOP_LEARN_CRON="0 3 * * *",
        CHATLOOP_LEARN_FEEDBACK_THRESHOLD="0",
        CHATLOOP_CANARY_CHECK_S="0.05",
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatloop.cli", "learn", "serve"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "scheduled: canary" in line:
                break
        proc.send_signal(signal.SIGTERM)
        lines += proc.stderr.readlines()
        assert proc.wait(timeout=60) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    text = "".join(lines)
    assert "scheduled: cron:" in text and "stopped" in text
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            from sqlalchemy import text as sql

            ids = set(conn.scalars(sql("SELECT id FROM chatloop_scheduler_jobs")))
        assert ids == {"learning-cycle-cron", "learning-canary-monitor"}
    finally:
        engine.dispose()
