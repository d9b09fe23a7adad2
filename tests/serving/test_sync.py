"""Canary routing and replica sync against the registry, on SQLite and PostgreSQL.

Replicas are remote backends talking to the local fake vLLM server; the followers
read the real registry. On PostgreSQL the followers also LISTEN for the registry's
NOTIFY, so a change reaches them without waiting for a poll.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from serving.canary import in_canary
from serving.remote import RemoteEngine
from serving.sync import RegistryFollower, read_desired
from serving.types import ChatMessage, GenerationRequest
from storage.db import libpq_dsn, transaction
from storage.models import AdapterStatus
from storage.repositories import Adapters
from tests.conftest import run
from tests.serving.fake_vllm import FakeVLLM


def test_canary_is_sticky_and_close_to_the_share() -> None:
    keys = [f"slack:C{i}:{i * 7}" for i in range(20_000)]
    routed = [k for k in keys if in_canary("v2", k, 10)]
    assert 0.09 < len(routed) / len(keys) < 0.11
    assert all(in_canary("v2", k, 10) for k in routed[:500])  # same answer every time
    assert all(in_canary("v2", k, 25) for k in routed)  # growing the share keeps members
    other = {k for k in keys if in_canary("v3", k, 10)}
    assert len(other & set(routed)) < len(routed) * 0.2  # another candidate samples others
    assert not in_canary("v2", "", 50) and not in_canary("v2", "k", 0) and in_canary("v2", "k", 100)


def _register(
    sessions: sessionmaker[Session], tmp: Path, version: str, *, path_ok: bool = True
) -> None:
    d = tmp / version
    if path_ok:
        d.mkdir()
        (d / "adapter_config.json").write_text("{}")
    with transaction(sessions) as s:
        reg = Adapters(s)
        reg.register(
            version=version,
            base_model="base-model",
            path=str(d),
            weights_sha256=version.encode().hex().ljust(64, "0"),
        )
        reg.transition(version, AdapterStatus.CANDIDATE, actor="learning")
        reg.transition(version, AdapterStatus.PENDING, actor="learning")


def _approve(sessions: sessionmaker[Session], version: str) -> None:
    with transaction(sessions) as s:
        Adapters(s).transition(version, AdapterStatus.ACTIVE, actor="maintainer")


def _req(key: str) -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage("user", "hi"),), conversation_key=key)


async def _version_of(engine: RemoteEngine, key: str) -> str:
    stream = engine.stream(_req(key))
    async for _ in stream:
        pass
    return (await stream.result()).adapter_version


def test_two_replicas_converge_and_roll_back(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    async def go() -> None:
        async with FakeVLLM() as fake:
            replicas = [
                RemoteEngine(base_url=fake.url, model="base-model", replica_id=f"r{i}")
                for i in range(2)
            ]
            followers = [RegistryFollower(host=r, sessions=sessions) for r in replicas]
            try:
                for v in ("v1", "v2", "v3"):
                    _register(sessions, tmp_path, v)
                for version in ("v1", "v2", "v3"):
                    _approve(sessions, version)
                    for f in followers:
                        assert await f.sync_once()
                    assert [r.active_version for r in replicas] == [version, version]
                    assert {await _version_of(r, "c") for r in replicas} == {version}
                # the previous version stays warm for rollback; older ones are unloaded
                assert replicas[0].loaded_versions == ["v2", "v3"]
                with transaction(sessions) as s:
                    Adapters(s).rollback(actor="maintainer")
                for f in followers:
                    await f.sync_once()
                assert [r.active_version for r in replicas] == ["v2", "v2"]
                with transaction(sessions) as s:
                    Adapters(s).rollback(actor="maintainer")
                    Adapters(s).rollback(actor="maintainer")
                    assert Adapters(s).active() is None
                for f in followers:
                    await f.sync_once()
                assert [r.active_version for r in replicas] == ["base", "base"]
            finally:
                for r in replicas:
                    await r.aclose()

    run(go())


def test_a_broken_adapter_leaves_serving_unchanged(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    async def go() -> None:
        async with FakeVLLM() as fake:
            replica = RemoteEngine(base_url=fake.url, model="base-model", replica_id="r")
            follower = RegistryFollower(host=replica, sessions=sessions)
            try:
                _register(sessions, tmp_path, "good")
                _register(sessions, tmp_path, "broken", path_ok=False)
                _approve(sessions, "good")
                await follower.sync_once()
                _approve(sessions, "broken")
                assert not await follower.sync_once()
                assert replica.active_version == "good"
                assert await _version_of(replica, "k") == "good"
                assert not await follower.sync_once()  # backs off instead of hammering
            finally:
                await replica.aclose()

    run(go())


def test_canary_routing_follows_the_registry(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    async def go() -> None:
        async with FakeVLLM() as fake:
            replica = RemoteEngine(base_url=fake.url, model="base-model", replica_id="r")
            follower = RegistryFollower(host=replica, sessions=sessions)
            try:
                _register(sessions, tmp_path, "v1")
                _approve(sessions, "v1")
                _register(sessions, tmp_path, "cand")
                with transaction(sessions) as s:
                    Adapters(s).set_canary("cand", 30, actor="maintainer")
                    assert read_desired(s).canary_percent == 30
                await follower.sync_once()
                keys = [f"conv-{i}" for i in range(60)]
                seen = {k: await _version_of(replica, k) for k in keys}
                expected = {k: "cand" if in_canary("cand", k, 30) else "v1" for k in keys}
                assert seen == expected and "cand" in seen.values() and "v1" in seen.values()
                with transaction(sessions) as s:
                    Adapters(s).set_canary("cand", 0, actor="maintainer")
                await follower.sync_once()
                assert {await _version_of(replica, k) for k in keys} == {"v1"}
            finally:
                await replica.aclose()

    run(go())


@pytest.mark.postgres
def test_replicas_swap_on_notify(postgres_server: str, tmp_path: Path) -> None:
    """With a long poll interval, only LISTEN/NOTIFY can make the swap quick."""
    from sqlalchemy import create_engine, text

    from storage.db import make_engine, session_factory, upgrade
    from tests.conftest import _create_pg_database, _drop_pg_database

    name, url = _create_pg_database(postgres_server)
    try:
        upgrade(url)
        engine = make_engine(url)
        sessions = session_factory(engine)

        async def go() -> None:
            async with FakeVLLM() as fake:
                replicas = [
                    RemoteEngine(base_url=fake.url, model="base-model", replica_id=f"r{i}")
                    for i in range(2)
                ]
                followers = [
                    RegistryFollower(
                        host=r, sessions=sessions, interval_s=3600, listen_dsn=libpq_dsn(url)
                    )
                    for r in replicas
                ]
                try:
                    _register(sessions, tmp_path, "v1")
                    for f in followers:
                        f.start()
                    await asyncio.sleep(0.5)  # let the listeners subscribe
                    _approve(sessions, "v1")
                    for _ in range(200):  # bounded wait, not a timing assertion
                        if all(r.active_version == "v1" for r in replicas):
                            break
                        await asyncio.sleep(0.05)
                    assert [r.active_version for r in replicas] == ["v1", "v1"]
                finally:
                    for f in followers:
                        await f.stop()
                    for r in replicas:
                        await r.aclose()

        run(go())
        engine.dispose()
    finally:
        admin = create_engine(postgres_server)
        with admin.connect() as conn:
            conn.execute(text("select 1"))
        admin.dispose()
        _drop_pg_database(postgres_server, name)
