"""The remote backend against a local fake of vLLM's OpenAI-compatible server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serving.errors import AdapterError, EngineBusy, EngineClosed, PromptTooLong, ServingError
from serving.remote import RemoteEngine
from serving.types import ChatMessage, GenerationParams, GenerationRequest, GenerationResult
from tests.conftest import run
from tests.serving.fake_vllm import Failure, FakeVLLM


def _req(text: str = "hello there", **params: float) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage("system", "Be brief."), ChatMessage("user", text)),
        params=GenerationParams(**{"max_new_tokens": 64, **params}),  # type: ignore[arg-type]
    )


def _adapter_dir(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_config.json").write_text("{}")
    return d


async def _collect(
    engine: RemoteEngine, request: GenerationRequest
) -> tuple[str, GenerationResult]:
    stream = engine.stream(request)
    text = "".join([d async for d in stream])
    return text, await stream.result()


def _engine(fake: FakeVLLM, **kw: object) -> RemoteEngine:
    return RemoteEngine(
        base_url=fake.url, model=fake.base_model, replica_id="gpu-1", backoff_s=0.01, **kw
    )  # type: ignore[arg-type]


def test_streams_and_reports_usage() -> None:
    async def go() -> None:
        async with FakeVLLM() as fake:
            engine = _engine(fake, api_key="k-123")
            try:
                text, result = await _collect(engine, _req())
            finally:
                await engine.aclose()
            assert text == "[base-model] echo: hello there"
            assert result.text == text and result.finish_reason == "stop"
            assert (result.adapter_version, result.replica_id) == ("base", "gpu-1")
            assert result.completion_tokens == 4 and result.prompt_tokens > 0
            assert result.ttft_ms is not None
            sent = fake.requests[0]
            assert sent["stream"] is True and sent["max_tokens"] == 64
            assert sent["messages"][0] == {"role": "system", "content": "Be brief."}

    run(go())


def test_adapter_load_activate_and_pinning(tmp_path: Path) -> None:
    async def go() -> None:
        async with FakeVLLM(token_delay_s=0.01) as fake:
            engine = _engine(fake)
            try:
                await engine.load_adapter("v1", str(_adapter_dir(tmp_path, "v1")), sha256="ab" * 32)
                await engine.load_adapter("v2", str(_adapter_dir(tmp_path, "v2")), sha256="cd" * 32)
                engine.activate("v1")
                early = engine.stream(_req("one two three four five six"))
                engine.activate("v2")  # swap while the first reply is streaming
                late_text, late = await _collect(engine, _req())
                early_text = "".join([d async for d in early])
                early_result = await early.result()
                assert early_result.adapter_version == "v1" and early_text.startswith(
                    "[v1-abababab-"
                )
                assert late.adapter_version == "v2" and late_text.startswith("[v2-cdcdcdcd-")
                with pytest.raises(AdapterError, match="serving"):
                    await engine.unload_adapter("v2")
                engine.activate("base")
                await engine.unload_adapter("v1", wait=True)
                assert engine.loaded_versions == ["v2"]
                assert not [n for n in fake.adapters if n.startswith("v1-")]
            finally:
                await engine.aclose()

    run(go())


def test_failed_load_leaves_serving_as_it_was(tmp_path: Path) -> None:
    async def go() -> None:
        async with FakeVLLM() as fake:
            engine = _engine(fake)
            try:
                await engine.load_adapter(
                    "good", str(_adapter_dir(tmp_path, "good")), sha256="11" * 32
                )
                engine.activate("good")
                with pytest.raises(AdapterError, match="refused"):
                    await engine.load_adapter("broken", str(tmp_path / "missing"), sha256="22" * 32)
                with pytest.raises(AdapterError, match="not loaded"):
                    engine.activate("broken")
                assert engine.active_version == "good"
                _, result = await _collect(engine, _req())
                assert result.adapter_version == "good"
            finally:
                await engine.aclose()

    run(go())


def test_retries_429_and_500_before_the_first_token() -> None:
    async def go() -> None:
        async with FakeVLLM() as fake:
            fake.fail_next(Failure(status=429, retry_after=0.01))
            fake.fail_next(Failure(status=500))
            fake.fail_next(Failure(drop_after_chunks=0))
            engine = _engine(fake)
            try:
                text, result = await _collect(engine, _req())
            finally:
                await engine.aclose()
            assert result.finish_reason == "stop" and text.endswith("hello there")
            assert len(fake.requests) == 4

    run(go())


def test_gives_up_after_retries_and_never_replays_a_half_reply() -> None:
    async def go() -> None:
        async with FakeVLLM() as fake:
            engine = _engine(fake, retries=2)
            try:
                fake.fail_next(Failure(status=503), times=3)
                with pytest.raises(ServingError, match="503"):
                    await _collect(engine, _req())
                fake.fail_next(Failure(drop_after_chunks=2))
                stream = engine.stream(_req("a b c d e f"))
                got = "".join([d async for d in stream])
                with pytest.raises(ServingError, match="failed"):
                    await stream.result()
                assert got == "[base-model] echo:"  # partial text was streamed, then the error
                fake.fail_next(Failure(malformed=True))
                with pytest.raises(ServingError, match="malformed"):
                    await _collect(engine, _req())
                # and the engine keeps serving
                _, ok = await _collect(engine, _req())
                assert ok.finish_reason == "stop"
            finally:
                await engine.aclose()

    run(go())


def test_errors_timeouts_cancel_and_busy() -> None:
    async def go() -> None:
        async with FakeVLLM(token_delay_s=0.05) as fake:
            engine = _engine(fake, max_concurrency=1, max_queue=1)
            try:
                with pytest.raises(PromptTooLong):
                    await _collect(engine, _req("x" * 5000))
                _, timed = await _collect(
                    engine, _req("one two three four five six seven", timeout_s=0.12)
                )
                assert timed.finish_reason == "timeout"
                assert len(timed.text) < len("[base-model] echo: one two three four five six seven")
                first = engine.stream(_req("a b c d e f g h"))
                second = engine.stream(_req())
                with pytest.raises(EngineBusy, match="busy"):
                    engine.stream(_req())
                first.cancel()
                async for _ in first:
                    pass
                assert (await first.result()).finish_reason == "cancelled"
                _, r2 = await _collect_stream(second)
                assert r2.finish_reason == "stop"
            finally:
                await engine.aclose()
            with pytest.raises(EngineClosed):
                engine.stream(_req())

    run(go())


async def _collect_stream(stream: object) -> tuple[str, GenerationResult]:
    text = "".join([d async for d in stream])  # type: ignore[attr-defined]
    return text, await stream.result()  # type: ignore[attr-defined]


def test_unreachable_server_is_a_clear_error() -> None:
    async def go() -> None:
        engine = RemoteEngine(
            base_url="http://127.0.0.1:9", model="m", replica_id="r", retries=1, backoff_s=0.01
        )
        try:
            with pytest.raises(ServingError, match="model server failed"):
                await _collect(engine, _req())
            with pytest.raises(AdapterError, match="cannot reach"):
                await engine.load_adapter("v", "/x", sha256="0" * 64)
        finally:
            await engine.aclose()
        await asyncio.sleep(0)

    run(go())
