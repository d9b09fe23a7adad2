"""Promotion on the remote (vLLM) backend, against the local fake server.

Every load gets a new name, is verified (listed and answering) before it serves,
new requests are routed to it, and the old name is unloaded only after the replies
pinned to it have finished. Driven by the real registry and RegistryFollower.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from serving.errors import AdapterError
from serving.remote import RemoteEngine
from serving.sync import RegistryFollower
from serving.types import ChatMessage, GenerationParams, GenerationRequest
from storage.db import transaction
from storage.models import AdapterStatus
from storage.repositories import Adapters
from tests.conftest import run
from tests.serving.fake_vllm import FakeVLLM


def _adapter_dir(tmp: Path, version: str) -> Path:
    d = tmp / version
    d.mkdir()
    (d / "adapter_config.json").write_text("{}")
    return d


def _register(sessions: sessionmaker[Session], tmp: Path, version: str) -> None:
    path = _adapter_dir(tmp, version)
    with transaction(sessions) as s:
        reg = Adapters(s)
        reg.register(
            version=version,
            base_model="base-model",
            path=str(path),
            weights_sha256=version.encode().hex().ljust(64, "0"),
        )
        reg.transition(version, AdapterStatus.CANDIDATE, actor="learning")
        reg.transition(version, AdapterStatus.PENDING, actor="learning")


def _approve(sessions: sessionmaker[Session], version: str) -> None:
    with transaction(sessions) as s:
        Adapters(s).transition(version, AdapterStatus.ACTIVE, actor="maintainer")


def _req(text: str = "hi") -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage("user", text),),
        params=GenerationParams(max_new_tokens=64),
        conversation_key="k",
    )


def _names(fake: FakeVLLM, kind: str, version: str) -> list[str]:
    return [name for what, name in fake.events if what == kind and name.startswith(f"{version}-")]


def test_promotion_loads_verifies_routes_then_unloads_after_replies_end(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    async def go() -> None:
        hold = asyncio.Event()
        async with FakeVLLM(hold=hold) as fake:
            engine = RemoteEngine(base_url=fake.url, model="base-model", replica_id="r")
            follower = RegistryFollower(host=engine, sessions=sessions)
            try:
                for v in ("v1", "v2", "v3"):
                    _register(sessions, tmp_path, v)
                _approve(sessions, "v1")
                await follower.sync_once()
                # a reply on v1 is in flight (held by the server after its first chunk)
                long = engine.stream(_req("hold one two three four five"))
                deltas = aiter(long)
                first = await anext(deltas)
                assert first.startswith("[v1-")
                (v1_name,) = _names(fake, "load", "v1")
                for v in ("v2", "v3"):  # two promotions while the v1 reply streams
                    _approve(sessions, v)
                    assert await follower.sync_once()
                assert engine.active_version == "v3" and engine.loaded_versions == ["v2", "v3"]
                # new requests go to v3 while the v1 reply is still held
                v3_text = "".join([d async for d in engine.stream(_req())])
                (v3_name,) = _names(fake, "load", "v3")
                assert v3_text.startswith(f"[{v3_name}]")
                # v1 left the routing table at once, but stays loaded on the server
                # until its reply ends
                assert engine.draining == 1 and v1_name in fake.adapters
                assert ("unload", v1_name) not in fake.events
                hold.set()
                rest = "".join([d async for d in deltas])
                result = await long.result()
                assert result.adapter_version == "v1" and result.finish_reason == "stop"
                assert (first + rest).endswith("hold one two three four five")
                await engine.drained()
                events = fake.events
                v1_end = events.index(("stream-end", v1_name))
                assert events.index(("unload", v1_name)) > v1_end
                assert ("unload", v1_name) not in events[:v1_end]
                assert v1_name not in fake.adapters
                # the new name was loaded, verified, and only then served a reply
                load3 = events.index(("load", v3_name))
                probe3 = events.index(("complete", v3_name))
                served3 = events.index(("stream-start", v3_name))
                assert load3 < probe3 < served3
                # rolling back to v1 loads it again under a new name (no stale cache)
                with transaction(sessions) as s:
                    Adapters(s).rollback(actor="maintainer")  # v3 -> v2
                    Adapters(s).rollback(actor="maintainer")  # v2 -> v1
                await follower.sync_once()
                assert engine.active_version == "v1"
                loads = _names(fake, "load", "v1")
                assert len(loads) == 2 and len(set(loads)) == 2
            finally:
                hold.set()  # never leave the fake server waiting
                await engine.aclose()
            assert fake.adapters == {}  # a closing engine unloads its names

    run(go())


@pytest.mark.parametrize("mode", ["ghost", "lazy"])
def test_a_load_the_server_only_pretends_is_caught(tmp_path: Path, mode: str) -> None:
    async def go() -> None:
        async with FakeVLLM(accept_missing=mode) as fake:  # type: ignore[arg-type]
            engine = RemoteEngine(base_url=fake.url, model="base-model", replica_id="r")
            try:
                await engine.load_adapter(
                    "good", str(_adapter_dir(tmp_path, "good")), sha256="1" * 64
                )
                engine.activate("good")
                match = "does not serve it" if mode == "ghost" else "cannot answer"
                with pytest.raises(AdapterError, match=match):
                    await engine.load_adapter("gone", str(tmp_path / "nowhere"), sha256="2" * 64)
                assert engine.loaded_versions == ["good"] and engine.active_version == "good"
                assert not [n for n in fake.adapters if n.startswith("gone-")]  # cleaned up
                text = "".join([d async for d in engine.stream(_req())])
                assert text.startswith("[good-")
            finally:
                await engine.aclose()

    run(go())


def test_a_broken_adapter_never_serves_through_the_follower(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    async def go() -> None:
        async with FakeVLLM(accept_missing="ghost") as fake:
            engine = RemoteEngine(base_url=fake.url, model="base-model", replica_id="r")
            follower = RegistryFollower(host=engine, sessions=sessions)
            try:
                _register(sessions, tmp_path, "v1")
                _approve(sessions, "v1")
                await follower.sync_once()
                with transaction(sessions) as s:
                    Adapters(s).register(
                        version="v2",
                        base_model="base-model",
                        path=str(tmp_path / "not-on-the-server"),
                        weights_sha256="f" * 64,
                    )
                    Adapters(s).transition("v2", AdapterStatus.CANDIDATE, actor="learning")
                    Adapters(s).transition("v2", AdapterStatus.PENDING, actor="learning")
                _approve(sessions, "v2")
                assert not await follower.sync_once()
                assert engine.active_version == "v1"
                text = "".join([d async for d in engine.stream(_req())])
                assert text.startswith("[v1-")
            finally:
                await engine.aclose()

    run(go())


def test_names_are_never_reused(tmp_path: Path) -> None:
    async def go() -> None:
        async with FakeVLLM() as fake:
            path = str(_adapter_dir(tmp_path, "v1"))
            one = RemoteEngine(base_url=fake.url, model="base-model", replica_id="a")
            two = RemoteEngine(base_url=fake.url, model="base-model", replica_id="b")
            try:
                for _ in range(2):
                    await one.load_adapter("v1", path, sha256="a" * 64)
                    await one.unload_adapter("v1", wait=True)
                await two.load_adapter("v1", path, sha256="a" * 64)  # another replica
                loads = _names(fake, "load", "v1")
                assert len(loads) == 3 and len(set(loads)) == 3
                assert all(n.startswith("v1-aaaaaaaa-") for n in loads)
            finally:
                await one.aclose()
                await two.aclose()

    run(go())
