"""The learner lock on SQLite (flock) and PostgreSQL (advisory lock), in-process and
across processes, including a holder killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from learning.lock import LockBusy, LockError, advisory_key, learner_lock
from storage.db import make_engine, session_factory

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from pathlib import Path
from storage.db import make_engine
from learning.lock import learner_lock
engine = make_engine(sys.argv[1])
with learner_lock(engine, lock_dir=Path(sys.argv[2])) as held:
    print("held" if held else "busy", flush=True)
    time.sleep(600)
"""


def test_one_holder_at_a_time(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    other = make_engine(db_url)  # another replica: its own engine and connections
    try:
        with learner_lock(session_factory(engine), lock_dir=tmp_path) as first:
            assert first is True
            with learner_lock(other, lock_dir=tmp_path) as second:
                assert second is False
            with pytest.raises(LockBusy), learner_lock(other, lock_dir=tmp_path, require=True):
                pass
            # a lock of another name is independent
            with learner_lock(other, lock_dir=tmp_path, name="other") as unrelated:
                assert unrelated is True
        with learner_lock(other, lock_dir=tmp_path) as after:
            assert after is True  # released at the end of the block
        with pytest.raises(RuntimeError), learner_lock(engine, lock_dir=tmp_path) as held:
            assert held
            raise RuntimeError("the cycle failed")
        with learner_lock(other, lock_dir=tmp_path) as again:
            assert again is True  # and released when the block raised
    finally:
        engine.dispose()
        other.dispose()


def test_a_killed_holder_releases_the_lock(db_url: str, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, db_url, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    engine = make_engine(db_url)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        with learner_lock(engine, lock_dir=tmp_path) as held:
            assert held is False
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        got = False
        for _ in range(100):  # the server ends the dead backend; bounded wait, not a timing test
            with learner_lock(engine, lock_dir=tmp_path) as held:
                got = held
            if got:
                break
            time.sleep(0.1)
        assert got
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        engine.dispose()


def test_the_sqlite_lock_file_lives_beside_the_database_by_default(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db' / 'chatloop.db'}")
    try:
        with learner_lock(engine) as held:
            assert held and (tmp_path / "db" / "learner.lock").is_file()
            with learner_lock(engine, lock_dir=tmp_path / "db") as second:
                assert second is False
    finally:
        engine.dispose()
    memory = create_engine("sqlite://")
    with pytest.raises(LockError, match="lock directory"), learner_lock(memory):
        pass
    memory.dispose()


def test_advisory_keys_are_stable_signed_64_bit() -> None:
    key = advisory_key("learner")
    assert key == advisory_key("learner") != advisory_key("canary")
    assert -(2**63) <= key < 2**63
