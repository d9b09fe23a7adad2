"""The batching engine on a tiny Llama: batching is exact, streaming, limits, cancel, shutdown.

The tiny model of ``tests.tiny`` is re-initialised with large random weights so its
greedy replies differ per prompt and per position: a padding, position-id or KV
cache mistake in the batch then changes the text, which the equality tests see.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from serving.device import pick_device_dtype
from serving.engine import BatchingEngine, EngineStats
from serving.errors import (
    AdapterError,
    EngineBusy,
    EngineClosed,
    ModelLoadError,
    PromptTooLong,
    ServingError,
)
from serving.prompt import build_prompt_ids
from serving.types import ChatMessage, GenerationParams, GenerationRequest, GenerationResult
from tests.tiny import make_tiny_model_dir

PROMPTS = [
    "Hello!",
    "How do I reset my password? Please explain every step in detail.",
    "Danke schön",
    "The quick brown fox jumps over the lazy dog",
    "a",
    "Thanks, that answer was useful. Open settings, choose security and press reset.",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = make_tiny_model_dir(tmp_path_factory.mktemp("engine") / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    model.eval()
    return SimpleNamespace(path=path, model=model, tokenizer=tokenizer)


def _messages(text: str) -> tuple[ChatMessage, ...]:
    return (ChatMessage("system", "Be brief."), ChatMessage("user", text))


def _request(text: str = "Hello!", **params: Any) -> GenerationRequest:
    return GenerationRequest(
        messages=_messages(text),
        params=GenerationParams(**{"max_new_tokens": 16, "max_context_tokens": 512, **params}),
    )


def _engine(tiny: SimpleNamespace, **kwargs: Any) -> BatchingEngine:
    options: dict[str, Any] = {"dtype": "float32", "replica_id": "r1", **kwargs}
    return BatchingEngine(model=tiny.model, tokenizer=tiny.tokenizer, model_id="tiny", **options)


async def _collect(stream: Any) -> tuple[str, GenerationResult]:
    deltas = [delta async for delta in stream]
    return "".join(deltas), await stream.result()


async def _wait_for(predicate: Any, *, give_up_s: float = 120.0) -> None:
    """Poll ``predicate`` until true; a broken engine fails here instead of hanging."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + give_up_s
    while not predicate():  # the state lives in the engine's worker thread
        if loop.time() > give_up:
            raise AssertionError(f"engine never reached the awaited state in {give_up_s} s")
        await asyncio.sleep(0.002)


def _reference(tiny: SimpleNamespace, text: str, max_new_tokens: int) -> tuple[str, list[int]]:
    """Sequential ``model.generate`` greedy reply: its text and token ids (eos excluded)."""
    tok = tiny.tokenizer
    ids, _ = build_prompt_ids(tok, _messages(text), max_prompt_tokens=512 - max_new_tokens)
    with torch.inference_mode():
        out = tiny.model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    new = [t for t in out[0, len(ids) :].tolist() if t != tok.eos_token_id]
    reply = tok.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return reply.rstrip("\ufffd"), new


@pytest.fixture
def no_engine_threads_left() -> Iterator[None]:
    yield
    alive = [t.name for t in threading.enumerate() if t.name.startswith("engine-tiny")]
    assert alive == []


# --------------------------------------------------------------------------- device / dtype
def test_pick_device_dtype_resolves_names_and_auto() -> None:
    assert pick_device_dtype("cpu", "float32") == (torch.device("cpu"), torch.float32)
    assert pick_device_dtype("cpu", "bf16") == (torch.device("cpu"), torch.bfloat16)
    assert pick_device_dtype("cpu", torch.float16) == (torch.device("cpu"), torch.float16)
    device, dtype = pick_device_dtype()
    assert dtype in {torch.float32, torch.bfloat16, torch.float16}
    if device.type == "cpu":
        from serving.device import cpu_has_fast_bf16

        assert dtype == (torch.bfloat16 if cpu_has_fast_bf16() else torch.float32)
    with pytest.raises(ValueError, match="unknown dtype"):
        pick_device_dtype("cpu", "int3")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device_dtype("cuda", "auto")


def test_cpu_bf16_detection_can_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.device import cpu_has_fast_bf16

    monkeypatch.setenv("CHATLOOP_CPU_BF16", "0")
    assert cpu_has_fast_bf16() is False
    assert pick_device_dtype("cpu", "auto")[1] == torch.float32
    monkeypatch.setenv("CHATLOOP_CPU_BF16", "1")
    assert pick_device_dtype("cpu", "auto")[1] == torch.bfloat16


def test_single_threaded_torch_is_a_setting_of_the_calling_thread() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from serving.device import single_threaded_torch

    def side() -> int:
        single_threaded_torch()
        return torch.get_num_threads()

    before = torch.get_num_threads()
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(side).result() == 1
    assert torch.get_num_threads() == before  # the engine's thread keeps its team


# --------------------------------------------------------------------------- exactness
def test_concurrent_greedy_replies_equal_sequential_generate(
    tiny: SimpleNamespace, no_engine_threads_left: None
) -> None:
    """Rows of different lengths join a running batch and leave it: greedy text is unchanged."""
    lengths = [16, 9, 24, 5, 16, 12]
    expected = [_reference(tiny, text, n) for text, n in zip(PROMPTS, lengths, strict=True)]

    async def go() -> list[tuple[str, GenerationResult]]:
        engine = _engine(tiny, max_batch_size=4)
        try:
            first = [engine.stream(_request(PROMPTS[i], max_new_tokens=lengths[i])) for i in (0, 1)]
            tasks = [asyncio.ensure_future(_collect(s)) for s in first]
            await _wait_for(lambda: engine.stats().generated_tokens >= 3)  # a batch is running
            rest = [
                engine.stream(_request(PROMPTS[i], max_new_tokens=lengths[i]))
                for i in range(2, len(PROMPTS))
            ]  # 2 of these wait in the queue for a slot
            tasks += [asyncio.ensure_future(_collect(s)) for s in rest]
            return list(await asyncio.gather(*tasks))
        finally:
            await engine.aclose()

    outputs = asyncio.run(go())
    assert len({text for text, _ in expected}) == len(PROMPTS)  # the model is not degenerate
    for (joined, result), (text, ids), n in zip(outputs, expected, lengths, strict=True):
        assert joined == result.text
        assert result.text == text
        assert result.completion_tokens == len(ids)
        assert result.finish_reason == ("length" if len(ids) == n else "stop")
        assert (result.model_id, result.replica_id, result.adapter_version) == (
            "tiny",
            "r1",
            "base",
        )
        assert result.latency_ms > 0 and result.ttft_ms is not None
        assert result.ttft_ms <= result.latency_ms


def test_prompt_longer_than_a_prefill_chunk_is_exact(tiny: SimpleNamespace) -> None:
    text = PROMPTS[1] * 3
    expected, _ = _reference(tiny, text, 10)

    async def go() -> tuple[str, GenerationResult]:
        engine = _engine(tiny, prefill_chunk_tokens=7)
        try:
            return await _collect(engine.stream(_request(text, max_new_tokens=10)))
        finally:
            await engine.aclose()

    joined, result = asyncio.run(go())
    assert result.text == joined == expected
    assert result.prompt_tokens > 7


def test_top_p_keeping_one_token_is_greedy_and_sampling_runs(tiny: SimpleNamespace) -> None:
    expected, _ = _reference(tiny, PROMPTS[3], 12)

    async def go() -> list[GenerationResult]:
        engine = _engine(tiny, seed=7)
        try:
            streams = [
                engine.stream(_request(PROMPTS[3], max_new_tokens=12, temperature=0.7, top_p=1e-6)),
                engine.stream(_request(PROMPTS[3], max_new_tokens=12, temperature=1.3, top_p=0.9)),
                engine.stream(
                    _request(PROMPTS[3], max_new_tokens=12, temperature=1.0, repetition_penalty=1.3)
                ),
            ]
            return [(await _collect(s))[1] for s in streams]
        finally:
            await engine.aclose()

    narrow, nucleus, penalised = asyncio.run(go())
    assert narrow.text == expected
    assert nucleus.completion_tokens > 0 and penalised.completion_tokens > 0


def test_repetition_penalty_matches_transformers(tiny: SimpleNamespace) -> None:
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    engine = _engine(tiny)
    try:
        torch.manual_seed(0)
        logits = torch.randn(2, 50) * 3
        seen = [[1, 4, 4, 9], [2, 3]]
        seqs = [
            SimpleNamespace(
                params=GenerationParams(repetition_penalty=p), prompt_ids=ids[:1], generated=ids[1:]
            )
            for p, ids in zip((1.8, 0.7), seen, strict=True)
        ]
        got = engine._sample(logits.clone(), seqs)  # type: ignore[arg-type]
        want = [
            int(
                RepetitionPenaltyLogitsProcessor(p)(torch.tensor([ids]), logits[i : i + 1]).argmax()
            )
            for i, (p, ids) in enumerate(zip((1.8, 0.7), seen, strict=True))
        ]
        assert got == want
    finally:
        asyncio.run(engine.aclose())


# --------------------------------------------------------------------------- streaming
def test_max_new_tokens_and_streaming_deltas(tiny: SimpleNamespace) -> None:
    async def go() -> tuple[list[str], GenerationResult]:
        engine = _engine(tiny, stop_token_ids=[])
        try:
            stream = engine.stream(_request(PROMPTS[2], max_new_tokens=7))
            deltas = [d async for d in stream]
            return deltas, await stream.result()
        finally:
            await engine.aclose()

    deltas, result = asyncio.run(go())
    assert result.completion_tokens == 7 and result.finish_reason == "length"
    assert "".join(deltas) == result.text and len(deltas) > 1


def test_stop_token_ends_the_reply(tiny: SimpleNamespace) -> None:
    _, ids = _reference(tiny, PROMPTS[0], 4)

    async def go() -> GenerationResult:
        engine = _engine(tiny, stop_token_ids=[ids[1]])
        try:
            return (await _collect(engine.stream(_request(PROMPTS[0], max_new_tokens=10))))[1]
        finally:
            await engine.aclose()

    result = asyncio.run(go())
    assert result.finish_reason == "stop"
    assert result.completion_tokens == 1


def test_context_limit_drops_history_and_stops_generation(tiny: SimpleNamespace) -> None:
    history = (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "How do I reset my password?"),
        ChatMessage("assistant", "Open settings, choose security and press reset."),
        ChatMessage("user", "Danke"),
    )

    async def go() -> tuple[str, GenerationResult]:
        engine = _engine(tiny, max_context_tokens=64, stop_token_ids=[])
        try:
            request = GenerationRequest(
                messages=history, params=GenerationParams(max_new_tokens=500)
            )
            return await _collect(engine.stream(request))
        finally:
            await engine.aclose()

    joined, result = asyncio.run(go())
    assert result.dropped_turns == 2
    assert result.prompt_tokens <= 32  # half the context stays free for the reply
    assert result.prompt_tokens + result.completion_tokens == 64
    assert result.finish_reason == "length" and joined == result.text


def test_prompt_too_long_fails_the_stream(tiny: SimpleNamespace) -> None:
    async def go() -> tuple[list[str], BaseException | None, EngineStats]:
        engine = _engine(tiny)
        try:
            stream = engine.stream(
                _request("reset " * 100, max_new_tokens=8, max_context_tokens=64)
            )
            deltas = [d async for d in stream]
            try:
                await stream.result()
            except PromptTooLong as exc:
                return deltas, exc, engine.stats()
            return deltas, None, engine.stats()
        finally:
            await engine.aclose()

    deltas, error, stats = asyncio.run(go())
    assert deltas == [] and isinstance(error, PromptTooLong)
    assert "fit the context" in str(error)
    assert stats.active == 0


# --------------------------------------------------------------------------- lifecycle
def test_cancel_frees_the_slot(tiny: SimpleNamespace, no_engine_threads_left: None) -> None:
    async def go() -> tuple[GenerationResult, GenerationResult, EngineStats]:
        engine = _engine(tiny, max_batch_size=1, stop_token_ids=[])
        try:
            long = engine.stream(_request(PROMPTS[1], max_new_tokens=400))
            await _wait_for(lambda: engine.stats().generated_tokens >= 3)
            long.cancel()
            cancelled = (await _collect(long))[1]
            after = (await _collect(engine.stream(_request(PROMPTS[0], max_new_tokens=4))))[1]
            await _wait_for(lambda: engine.stats().active == 0)
            return cancelled, after, engine.stats()
        finally:
            await engine.aclose()

    cancelled, after, stats = asyncio.run(go())
    assert cancelled.finish_reason == "cancelled"
    assert 3 <= cancelled.completion_tokens < 400
    assert after.finish_reason == "length" and after.completion_tokens == 4
    assert (stats.active, stats.queued) == (0, 0)


def test_timeout_finishes_with_the_partial_text(tiny: SimpleNamespace) -> None:
    async def go() -> list[tuple[str, GenerationResult]]:
        engine = _engine(tiny, stop_token_ids=[])
        try:
            running = engine.stream(_request(PROMPTS[1], max_new_tokens=400, timeout_s=1e-9))
            return [await _collect(running)]
        finally:
            await engine.aclose()

    ((joined, result),) = asyncio.run(go())
    assert result.finish_reason == "timeout"
    assert result.completion_tokens < 400
    assert result.text == joined


def test_timeout_during_generation_keeps_what_was_streamed(tiny: SimpleNamespace) -> None:
    async def go() -> tuple[str, GenerationResult, GenerationResult]:
        engine = _engine(tiny, stop_token_ids=[], max_batch_size=1)
        try:
            stream = engine.stream(_request(PROMPTS[1], max_new_tokens=400))
            await _wait_for(lambda: engine.stats().generated_tokens >= 5)
            waiting = engine.stream(_request(PROMPTS[0], max_new_tokens=3))  # needs the one slot
            # expire its deadline from the outside instead of sleeping
            for seq in engine._rows:
                seq.deadline = 0.0
            joined, result = await _collect(stream)
            _, after = await _collect(waiting)  # the freed slot serves the queued request
            await _wait_for(lambda: engine.stats().active == 0)
            return joined, result, after
        finally:
            await engine.aclose()

    joined, result, after = asyncio.run(go())
    assert result.finish_reason == "timeout"
    assert 5 <= result.completion_tokens < 400
    assert result.text == joined
    assert after.finish_reason == "length" and after.completion_tokens == 3


def test_full_queue_raises_engine_busy(tiny: SimpleNamespace) -> None:
    async def go() -> tuple[EngineBusy, list[GenerationResult]]:
        engine = _engine(tiny, max_batch_size=1, max_queue=2, stop_token_ids=[])
        try:
            running = engine.stream(_request(max_new_tokens=400))
            await _wait_for(lambda: engine.stats().active == 1)
            queued = [engine.stream(_request(max_new_tokens=400)) for _ in range(2)]
            with pytest.raises(EngineBusy) as busy:
                engine.stream(_request())
            for stream in (running, *queued):
                stream.cancel()
            results = [(await _collect(s))[1] for s in (running, *queued)]
            return busy.value, results
        finally:
            await engine.aclose()

    busy, results = asyncio.run(go())
    assert "busy" in str(busy) and "max_queue=2" in str(busy) and "retry later" in str(busy)
    assert [r.finish_reason for r in results] == ["cancelled"] * 3
    assert [r.completion_tokens for r in results[1:]] == [0, 0]


def test_aclose_cancels_in_flight_fails_queued_and_joins_the_worker(
    tiny: SimpleNamespace, no_engine_threads_left: None
) -> None:
    async def go() -> tuple[GenerationResult, BaseException | None, BatchingEngine]:
        engine = _engine(tiny, max_batch_size=1, stop_token_ids=[])
        running = engine.stream(_request(max_new_tokens=400))
        await _wait_for(lambda: engine.stats().generated_tokens >= 2)
        queued = engine.stream(_request(max_new_tokens=4))
        await engine.aclose()
        with pytest.raises(EngineClosed):
            engine.stream(_request())
        await engine.aclose()  # idempotent
        try:
            await queued.result()
            queued_error = None
        except EngineClosed as exc:
            queued_error = exc
        return (await _collect(running))[1], queued_error, engine

    result, queued_error, engine = asyncio.run(go())
    assert result.finish_reason == "cancelled" and result.completion_tokens >= 2
    assert isinstance(queued_error, EngineClosed)
    assert not engine._thread.is_alive()
    assert engine.model is None and engine.stats().closed


def test_aclose_grace_lets_in_flight_requests_finish(tiny: SimpleNamespace) -> None:
    async def go() -> GenerationResult:
        engine = _engine(tiny, stop_token_ids=[])
        # long enough that it is still running when a busy machine's event loop looks
        stream = engine.stream(_request(max_new_tokens=200))
        await _wait_for(lambda: engine.stats().active == 1)
        await engine.aclose(grace_s=600)
        return (await _collect(stream))[1]

    result = asyncio.run(go())
    assert result.finish_reason == "length" and result.completion_tokens == 200


def test_a_failing_step_fails_its_requests_and_the_engine_goes_on(tiny: SimpleNamespace) -> None:
    class Flaky:
        def __init__(self, model: Any) -> None:
            self.model, self.calls = model, 0

        def __call__(self, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("boom")
            return self.model(**kwargs)

    async def go() -> tuple[BaseException | None, GenerationResult]:
        engine = _engine(tiny)
        engine._model = Flaky(tiny.model)
        try:
            failed = engine.stream(_request(max_new_tokens=4))
            try:
                await failed.result()
                error = None
            except ServingError as exc:
                error = exc
            return error, (await _collect(engine.stream(_request(max_new_tokens=4))))[1]
        finally:
            await engine.aclose()

    error, result = asyncio.run(go())
    assert isinstance(error, ServingError) and "boom" in str(error)
    assert result.completion_tokens > 0


def test_engine_never_moves_or_casts_a_callers_model(tiny: SimpleNamespace) -> None:
    """A model other code holds keeps its dtype, device and weights; a mismatch is refused."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny.path, dtype=torch.float32)
    model.load_state_dict(tiny.model.state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def unchanged() -> bool:
        after = model.state_dict()
        return after.keys() == before.keys() and all(
            after[k].dtype == v.dtype and after[k].device == v.device and torch.equal(after[k], v)
            for k, v in before.items()
        )

    for wish in ({"dtype": "bfloat16"}, {"dtype": torch.float16}, {"device": "meta"}):
        with pytest.raises(ModelLoadError, match="never moves or casts"):
            BatchingEngine(model=model, tokenizer=tiny.tokenizer, model_id="tiny", **wish)
        assert unchanged(), wish

    async def go(**options: Any) -> tuple[GenerationResult, BatchingEngine]:
        engine = BatchingEngine(
            model=model, tokenizer=tiny.tokenizer, model_id="tiny", replica_id="r2", **options
        )
        try:
            return (await _collect(engine.stream(_request(max_new_tokens=4))))[1], engine
        finally:
            await engine.aclose()

    for options in ({}, {"dtype": "float32", "device": "cpu"}, {"dtype": "auto"}):
        result, engine = asyncio.run(go(**options))
        assert result.finish_reason in {"stop", "length"} and result.completion_tokens > 0
        assert engine.dtype == torch.float32 and engine.stats().dtype == "float32"
        assert unchanged(), options

    model.to(torch.bfloat16)  # the caller's own choice: the engine serves it as it is
    result, engine = asyncio.run(go())
    assert engine.dtype == torch.bfloat16 and engine.stats().dtype == "bfloat16"
    assert next(model.parameters()).dtype == torch.bfloat16


# --------------------------------------------------------------------------- adapters
@pytest.fixture(scope="module")
def tiny_peft(tiny: SimpleNamespace) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny.path, dtype=torch.float32)
    base.load_state_dict(tiny.model.state_dict())
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5 deprecated
        warnings.filterwarnings(
            "ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning
        )
        model = get_peft_model(base, config, adapter_name="v1")
    model.eval()
    return model


def test_mixed_adapter_batch_pins_each_request_to_its_version(
    tiny: SimpleNamespace, tiny_peft: Any
) -> None:
    tok = tiny.tokenizer

    def greedy(text: str, adapter: bool) -> str:
        ids, _ = build_prompt_ids(tok, _messages(text), max_prompt_tokens=400)
        kwargs: dict[str, Any] = {
            "input_ids": torch.tensor([ids]),
            "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "do_sample": False,
            "max_new_tokens": 10,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        }
        with torch.inference_mode():
            if adapter:
                out = tiny_peft.generate(**kwargs)
            else:
                with tiny_peft.disable_adapter():
                    out = tiny_peft.generate(**kwargs)
        new = [t for t in out[0, len(ids) :].tolist() if t != tok.eos_token_id]
        return tok.decode(new, skip_special_tokens=True).rstrip("\ufffd")

    want_base = greedy(PROMPTS[3], adapter=False)
    want_v1 = greedy(PROMPTS[3], adapter=True)
    assert want_base != want_v1

    async def go() -> tuple[GenerationResult, GenerationResult, dict[str, int]]:
        engine = BatchingEngine(
            model=tiny_peft, tokenizer=tok, model_id="tiny", replica_id="r1", dtype="float32"
        )
        try:
            on_base = engine.stream(_request(PROMPTS[3], max_new_tokens=10))
            engine.register_adapter("v1", "v1")
            engine.activate("v1")
            on_v1 = engine.stream(_request(PROMPTS[3], max_new_tokens=10))
            pins = engine.pinned_versions()
            with pytest.raises(AdapterError, match="serving"):
                engine.unregister_adapter("v1")
            results = [(await _collect(s))[1] for s in (on_base, on_v1)]
            return results[0], results[1], pins
        finally:
            await engine.aclose()

    on_base, on_v1, pins = asyncio.run(go())
    assert (on_base.adapter_version, on_base.text) == ("base", want_base)
    assert (on_v1.adapter_version, on_v1.text) == ("v1", want_v1)
    assert pins == {"base": 1, "v1": 1}


def test_adapters_need_a_peft_model(tiny: SimpleNamespace) -> None:
    engine = _engine(tiny)
    try:
        with pytest.raises(AdapterError, match="not loaded"):
            engine.register_adapter("v1", "v1")
        with pytest.raises(AdapterError, match="not loaded"):
            engine.activate("v1")
        assert engine.active_version == "base" and engine.loaded_versions == []
    finally:
        asyncio.run(engine.aclose())


def test_a_new_prompt_is_prefilled_in_slices_while_other_chats_decode(
    tiny: SimpleNamespace,
) -> None:
    """A long prompt arriving while a chat decodes must not stall that chat for its whole
    prefill: it goes in slices between decode steps, and the reply is still exact."""
    from serving.scheduler import MIN_PREFILL_SLICE

    long_text = PROMPTS[1] * 3
    expected, _ = _reference(tiny, long_text, 8)
    widths: list[int] = []

    def record(_module: Any, args: Any, kwargs: Any) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            widths.append(int(ids.shape[1]))

    async def go() -> tuple[GenerationResult, GenerationResult, list[int]]:
        # any measured cost per token gives the smallest slice at this budget
        engine = _engine(tiny, prefill_slice_ms=1e-9)
        hook = tiny.model.register_forward_pre_hook(record, with_kwargs=True)
        try:
            first = engine.stream(_request(PROMPTS[0], max_new_tokens=48))
            async for _delta in first:
                break  # it is decoding now
            mark = len(widths)
            second = await engine.stream(_request(long_text, max_new_tokens=8)).result()
            return await first.result(), second, widths[mark:]
        finally:
            hook.remove()
            await engine.aclose()

    first, second, later = asyncio.run(go())
    assert second.text == expected
    assert first.completion_tokens == 48  # it decoded the whole time the prompt went in
    prefills = [w for w in later if w > 1]
    assert second.prompt_tokens > 3 * MIN_PREFILL_SLICE
    assert prefills and max(prefills) <= MIN_PREFILL_SLICE
    assert sum(prefills) == second.prompt_tokens
    with pytest.raises(ValueError, match="prefill_slice_ms"):
        _engine(tiny, prefill_slice_ms=0)


def test_prefill_hands_the_lm_head_one_row_it_can_fold_into_one_matmul(
    tiny: SimpleNamespace,
) -> None:
    """A prefill keeps only its last position's logits. ``h[:, -1:, :]`` of a prompt is a
    view torch's matmul does not fold when the head's weight is frozen (as under peft):
    it copied the whole transposed head on every prefill. The head must see rows whose
    leading strides fold (stride[i] == stride[i+1] * size[i+1])."""
    seen: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def record(_module: Any, args: Any) -> None:
        seen.append((tuple(args[0].shape), tuple(args[0].stride())))

    expected, _ = _reference(tiny, PROMPTS[1], 4)
    head = tiny.model.get_output_embeddings()
    frozen = [p for p in tiny.model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    hook = head.register_forward_pre_hook(record)

    async def go() -> GenerationResult:
        engine = _engine(tiny)
        try:
            return await engine.stream(_request(PROMPTS[1], max_new_tokens=4)).result()
        finally:
            await engine.aclose()

    try:
        result = asyncio.run(go())
    finally:
        hook.remove()
        for p in frozen:
            p.requires_grad_(True)
    assert result.text == expected and result.prompt_tokens > 1
    assert seen and all(shape[1] == 1 for shape, _ in seen)  # only the last position
    for shape, stride in seen:
        foldable = all(stride[i] == stride[i + 1] * shape[i + 1] for i in range(len(shape) - 2))
        assert foldable, (shape, stride)
