"""``make gpu-check``: train a few steps and serve the result, on CUDA and on the CPU.

One prepared script for a machine with a GPU, a few minutes end to end: on each
device available (CUDA in bf16 when present, and the CPU in the dtype our trainer
measures fastest), it

1. trains a LoRA adapter for ``--steps`` optimizer steps with :func:`learning.finetune.
   train_adapter` on chatterbot-corpus chat pairs (the same examples everywhere) and
   reports training tokens/s;
2. loads the result into the batching engine through the adapter registry (manifest
   written last, verified, hot-swapped in) and decodes ``--chats`` concurrent replies of
   ``--tokens`` tokens each, reporting decode tokens/s.

The last line is one JSON object ``{"cuda": {...} | null, "cpu": {...}, ...}``. Without
CUDA the GPU half is ``null`` with the reason, and the exit code is still 0, so the
script doubles as a quick CPU smoke check. It never needs the network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from learning.examples import write_jsonl
from learning.finetune import TrainSpec, train_adapter
from learning.trainconfig import TrainConfig


def _train(model_dir: str, work: Path, device: str, steps: int) -> dict[str, Any]:
    from bench.train import chat_examples

    train, _ = chat_examples(steps * 8, 1)
    write_jsonl(work / "train.jsonl", train)
    config = TrainConfig(
        lora_r=16, lora_alpha=32, lora_dropout=0.0, epochs=1, batch_size=8, max_steps=steps,
        early_stopping_patience=0, preference="off", nice=0,
        dtype="bfloat16" if device == "cuda" else "auto",
    )  # fmt: skip
    spec = TrainSpec(
        model_path=model_dir, out_dir=str(work / "train"), config=config,
        sft_path=str(work / "train.jsonl"), dtype_cache=str(work / "dtype.json"),
    )  # fmt: skip
    result = train_adapter(spec)
    return {
        "train_tok_s": result.useful_tok_s,
        "train_steps": result.steps,
        "train_dtype": result.dtype,
        "adapter_dir": result.adapter_dir,
    }


async def _serve(model_dir: str, adapter_dir: str, work: Path, device: str, chats: int,
                 tokens: int) -> dict[str, Any]:  # fmt: skip
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from serving.engine import BatchingEngine
    from serving.registry import AdapterRegistry, write_adapter
    from serving.types import ChatMessage, GenerationParams, GenerationRequest

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    model.to(device)  # type: ignore[arg-type]
    engine = BatchingEngine(
        model=model, tokenizer=tok, model_id="gpu-check", device=device, dtype=dtype,
        max_batch_size=chats, stop_token_ids=[],
    )  # fmt: skip
    try:
        store = work / "store"
        write_adapter(store, "gpu-check", Path(adapter_dir), base_model_id="gpu-check",
                      dataset_sha256="0" * 64)  # fmt: skip
        registry = AdapterRegistry(engine, base_model_id="gpu-check", store_dir=store)
        await registry.load_version("gpu-check")
        registry.activate("gpu-check")

        def request(i: int) -> GenerationRequest:
            return GenerationRequest(
                messages=(ChatMessage("user", f"Tell me something about the number {i}."),),
                params=GenerationParams(max_new_tokens=tokens),
                conversation_key=f"c{i}",
            )

        async def one(i: int) -> Any:
            stream = engine.stream(request(i))
            async for _ in stream:
                pass
            return await stream.result()

        await one(0)  # warm-up
        start = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(chats)))
        seconds = time.perf_counter() - start
    finally:
        await engine.aclose()
    produced = sum(r.completion_tokens for r in results)
    return {
        "decode_tok_s": round(produced / seconds, 1),
        "chats": chats,
        "tokens_per_chat": tokens,
        "served_by": sorted({r.adapter_version for r in results}),
        "serve_dtype": str(dtype).removeprefix("torch."),
    }


def check(model_dir: str, device: str, *, steps: int, chats: int, tokens: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"chatloop-gpu-check-{device}-"))
    out = _train(model_dir, work, device, steps)
    out.update(asyncio.run(_serve(model_dir, out.pop("adapter_dir"), work, device, chats, tokens)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True, help="local directory of the base model")
    parser.add_argument("--steps", type=int, default=8, help="training steps per device")
    parser.add_argument("--chats", type=int, default=8, help="concurrent replies when serving")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per reply")
    args = parser.parse_args(argv)
    import torch

    report: dict[str, Any] = {"torch": torch.__version__, "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(0)
        sys.stderr.write(f"· CUDA: {report['gpu']}\n")
        report["cuda"] = check(
            args.model_dir, "cuda", steps=args.steps, chats=args.chats, tokens=args.tokens
        )
    else:
        report["cuda"] = None
        report["cuda_reason"] = "torch.cuda.is_available() is False on this machine"
    sys.stderr.write("· CPU\n")
    report["cpu"] = check(args.model_dir, "cpu", steps=args.steps, chats=args.chats,
                          tokens=args.tokens)  # fmt: skip
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
