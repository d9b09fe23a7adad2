"""The naive reference backend on a tiny model: streaming, limits, cancel, back-pressure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch

from serving.errors import EngineBusy, EngineClosed, PromptTooLong
from serving.naive import NaiveEngine
from serving.prompt import build_prompt_ids
from serving.types import ChatMessage, GenerationParams, GenerationRequest
from tests.conftest import run

MSGS = (ChatMessage("system", "Be brief."), ChatMessage("user", "How do I reset my password?"))


def _request(**params: Any) -> GenerationRequest:
    return GenerationRequest(
        messages=MSGS,
        params=GenerationParams(**{"max_new_tokens": 12, "max_context_tokens": 512, **params}),
    )


def test_streams_the_same_text_as_generate(tiny_loaded: Any) -> None:
    async def go() -> tuple[list[str], Any]:
        engine = NaiveEngine(loaded=tiny_loaded, replica_id="r1")
        try:
            stream = engine.stream(_request(repetition_penalty=1.0))
            deltas = [d async for d in stream]
            return deltas, await stream.result()
        finally:
            await engine.aclose()

    deltas, result = run(go())
    tok = tiny_loaded.tokenizer
    ids, _ = build_prompt_ids(tok, MSGS, max_prompt_tokens=500)
    with torch.inference_mode():
        ref = tiny_loaded.model.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id,
        )  # fmt: skip
    expected = tok.decode(ref[0, len(ids) :], skip_special_tokens=True)
    assert "".join(deltas) == expected
    assert result.text == expected.strip()
    assert result.prompt_tokens == len(ids)
    assert result.finish_reason in {"stop", "length"}
    assert result.completion_tokens <= 12
    assert (result.adapter_version, result.replica_id) == ("base", "r1")
    assert result.latency_ms > 0 and result.ttft_ms is not None


def test_timeout_finishes_with_partial_text(tiny_loaded: Any) -> None:
    async def go() -> Any:
        engine = NaiveEngine(loaded=tiny_loaded, replica_id="r1")
        try:
            stream = engine.stream(_request(max_new_tokens=200, timeout_s=1e-6))
            async for _ in stream:
                pass
            return await stream.result()
        finally:
            await engine.aclose()

    result = run(go())
    assert result.finish_reason == "timeout"
    assert result.completion_tokens < 200


def test_cancel_stops_generation(tiny_loaded: Any) -> None:
    async def go() -> Any:
        engine = NaiveEngine(loaded=tiny_loaded, replica_id="r1")
        try:
            stream = engine.stream(_request(max_new_tokens=300))
            stream.cancel()
            async for _ in stream:
                pass
            first = await stream.result()
            after = engine.stream(_request(max_new_tokens=3))
            async for _ in after:
                pass
            return first, await after.result()
        finally:
            await engine.aclose()

    cancelled, after = run(go())
    assert cancelled.finish_reason == "cancelled" and cancelled.completion_tokens < 300
    assert after.finish_reason in {"stop", "length"}


def test_queue_bound_and_close(tiny_loaded: Any) -> None:
    async def go() -> None:
        engine = NaiveEngine(loaded=tiny_loaded, replica_id="r1", max_queue=1)
        streams = []
        with pytest.raises(EngineBusy, match="busy"):
            for _ in range(10):
                streams.append(engine.stream(_request(max_new_tokens=50)))
        await engine.aclose()
        for s in streams:
            s.cancel()
        with pytest.raises(EngineClosed):
            engine.stream(_request())

    run(go())


def test_prompt_too_long_is_an_error_of_the_stream(tiny_loaded: Any) -> None:
    async def go() -> None:
        engine = NaiveEngine(loaded=tiny_loaded, replica_id="r1")
        try:
            msgs = (ChatMessage("user", "word " * 400),)
            stream = engine.stream(
                GenerationRequest(
                    messages=msgs, params=GenerationParams(max_new_tokens=8, max_context_tokens=64)
                )
            )
            async for _ in stream:
                pass
            with pytest.raises(PromptTooLong):
                await stream.result()
        finally:
            await engine.aclose()

    run(go())


def test_stream_result_is_awaitable_from_another_loop_task(tiny_loaded: Any) -> None:
    async def go() -> list[Any]:
        engine = NaiveEngine(loaded=tiny_loaded, replica_id="r1")
        try:
            streams = [engine.stream(_request(max_new_tokens=4)) for _ in range(3)]
            return list(await asyncio.gather(*(s.result() for s in streams)))
        finally:
            await engine.aclose()

    results = run(go())
    assert len(results) == 3 and all(r.completion_tokens <= 4 for r in results)
