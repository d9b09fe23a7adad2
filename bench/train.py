"""``chatloop bench train``: our trainer against the plain recipe, and the bot while it trains.

Both sides fine-tune the same LoRA (same rank, alpha, target modules, learning rate,
epochs, batch size, seed) of the same base model on the same examples, tokenized the
same way, each in a fresh process of its own, one after the other:

- **plain**: ``transformers.Trainer`` + ``peft.get_peft_model``, the default padding
  collator (``DataCollatorForSeq2Seq``: each batch padded to its longest example),
  fp32;
- **ours**: :func:`learning.finetune.train_adapter` (padding-free batches, the dtype
  measured fastest on this machine, everything else as configured).

Reported per side: ``useful_tok_s`` (non-padding tokens of the examples seen, divided
by the training loop's wall time; tokenization and model loading are excluded on both
sides) and ``eval_loss`` (mean answer-token loss on a held-out split, computed for both
adapters by the same evaluator in one process, fp32). The dtype each side ran in and
the padding share of the plain side are printed too.

Then the bot: time to first token of the batching engine on the default model, p95
over sequential requests, idle and while our trainer runs a training job in its own
process (niced, with its thread budget). Data: chatterbot-corpus' English
conversations (real chat turns, shipped on PyPI), the half that the evaluator does
not hold out, deduplicated before the split.

The last line of output is one JSON object:
``{"plain": {"useful_tok_s", "eval_loss"}, "ours": {...}, "ttft_p95_ms": {"idle",
"training"}, ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from learning.examples import write_jsonl
from learning.finetune import TrainSpec
from learning.trainconfig import TrainConfig

SYSTEM = "You are a friendly chat partner. Answer in one or two sentences."


def chat_examples(n_train: int, n_eval: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Prompt-completion examples from chatterbot-corpus (not the evaluator's held-out half)."""
    from learning.generalchat import general_chat_set

    rows = general_chat_set(SYSTEM, held_out=False, limit=100_000)
    rows.sort(key=lambda r: hashlib.sha256(json.dumps(r).encode()).hexdigest())
    if len(rows) < n_train + n_eval:
        raise SystemExit(f"only {len(rows)} chat pairs; ask for fewer")
    return rows[:n_train], rows[n_train : n_train + n_eval]


# --------------------------------------------------------------------------- plain side
PLAIN = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import torch
from datasets import Dataset
from peft import get_peft_model
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq,
                          Trainer, TrainingArguments)
from learning.examples import read_jsonl
from learning.finetune import TrainSpec, tokenize_all
from learning.hf_train import lora_config

spec = TrainSpec.from_json(open(sys.argv[1]).read())
cfg = spec.config
torch.manual_seed(cfg.seed)
torch.set_num_threads(cfg.threads or torch.get_num_threads())
tok = AutoTokenizer.from_pretrained(spec.model_path)
if tok.pad_token_id is None:
    tok.pad_token = tok.eos_token
rows = tokenize_all(tok, read_jsonl(__import__("pathlib").Path(spec.sft_path)), cfg.max_length)
model = AutoModelForCausalLM.from_pretrained(spec.model_path, dtype=torch.float32)
model = get_peft_model(model, lora_config(cfg))
padded = []
class Count(DataCollatorForSeq2Seq):
    def __call__(self, features, return_tensors=None):
        batch = super().__call__(features, return_tensors)
        padded.append((int(batch["attention_mask"].sum()), int(batch["attention_mask"].numel())))
        return batch
args = TrainingArguments(output_dir=spec.out_dir + "/plain-ckpt",
    per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
    learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
    warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, lr_scheduler_type="linear",
    seed=cfg.seed, data_seed=cfg.seed, use_cpu=not torch.cuda.is_available(),
    logging_steps=10, report_to=[], save_strategy="no", disable_tqdm=True,
    remove_unused_columns=False)
trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
    data_collator=Count(tok, padding=True, label_pad_token_id=-100))
t0 = time.perf_counter()
trainer.train()
seconds = time.perf_counter() - t0
model.save_pretrained(spec.out_dir + "/adapter")
useful = sum(u for u, _ in padded)
total = sum(t for _, t in padded)
json.dump({"useful_tokens": useful, "padded_tokens": total, "seconds": seconds,
           "steps": trainer.state.global_step}, open(sys.argv[2], "w"))
"""


def _python(code_or_module: list[str], threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, *code_or_module], check=True, env=env, cwd=root)  # noqa: S603


def run_plain(spec: TrainSpec, work: Path) -> dict[str, Any]:
    spec_path, out = work / "plain-spec.json", work / "plain-result.json"
    spec_path.write_text(spec.to_json(), encoding="utf-8")
    _python(["-c", PLAIN, str(spec_path), str(out)], spec.config.threads)
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return data


def run_ours(spec: TrainSpec, work: Path) -> dict[str, Any]:
    from learning.worker import train_in_subprocess

    result = train_in_subprocess(spec)
    data: dict[str, Any] = json.loads(result.to_json())
    return data


def eval_losses(
    model_dir: str, adapters: dict[str, str], evals: list[dict[str, Any]], work: Path
) -> dict[str, float]:
    from learning.evaluate import EvalSpec
    from learning.worker import evaluate_in_subprocess

    items = [{"prompt": e["prompt"], "reference": e["completion"][0]["content"]} for e in evals]
    write_jsonl(work / "eval-items.jsonl", items)
    report = evaluate_in_subprocess(
        EvalSpec(
            model_path=model_dir,
            adapters=dict(adapters),
            items_path=str(work / "eval-items.jsonl"),
            max_new_tokens=1,
            latency_prompts=0,
        ),
        work / "eval",
        nice=0,
    )
    return {name: float(s.eval_loss or 0.0) for name, s in report.models.items()}


# --------------------------------------------------------------------------- the bot
async def _ttfts(engine: Any, n: int, stop: float | None = None) -> list[float]:
    from serving.types import ChatMessage, GenerationParams, GenerationRequest

    values: list[float] = []
    questions = ["How are you today?", "What is your favourite book?", "Tell me a joke.",
                 "What do you do for fun?"]  # fmt: skip
    i = 0
    while len(values) < n and (stop is None or time.monotonic() < stop):
        req = GenerationRequest(
            messages=(ChatMessage("system", SYSTEM), ChatMessage("user", questions[i % 4])),
            params=GenerationParams(max_new_tokens=8),
            conversation_key=f"bench-{i}",
        )
        stream = engine.stream(req)
        async for _ in stream:
            pass
        result = await stream.result()
        if result.ttft_ms is not None:
            values.append(float(result.ttft_ms))
        i += 1
        await asyncio.sleep(0.2)  # a customer every so often, not a flood
    return values


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 1)


async def bot_ttft(model_dir: str, spec: TrainSpec, requests: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from learning.worker import train_in_subprocess
    from serving.engine import BatchingEngine

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    engine = BatchingEngine(model=model, tokenizer=tok, model_id="bench", dtype="float32")
    try:
        await _ttfts(engine, 3)  # warm-up
        idle = await _ttfts(engine, requests)
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(None, lambda: train_in_subprocess(spec))
        await asyncio.sleep(8.0)  # the trainer has loaded and is in its loop
        during = await _ttfts(engine, requests, stop=None)
        training_done_before_end = job.done()
        await job
    finally:
        await engine.aclose()
    return {
        "idle": p95(idle),
        "training": p95(during),
        "idle_p50": round(statistics.median(idle), 1),
        "training_p50": round(statistics.median(during), 1),
        "requests": requests,
        "trainer_finished_early": training_done_before_end,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chatloop bench train", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model-dir", required=True, help="local directory of the base model")
    parser.add_argument("--train", type=int, default=256, help="training examples")
    parser.add_argument("--eval", type=int, default=64, help="held-out examples for eval loss")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--requests", type=int, default=30, help="bot requests per TTFT phase")
    parser.add_argument("--quick", action="store_true", help="128 examples, 20 requests")
    args = parser.parse_args(argv)
    if args.quick:
        args.train, args.eval, args.requests = 128, 32, 20
    train, evals = chat_examples(args.train, args.eval)
    work = Path(tempfile.mkdtemp(prefix="chatloop-bench-train-"))
    write_jsonl(work / "train.jsonl", train)
    config = TrainConfig(
        lora_r=16, lora_alpha=32, lora_dropout=0.0, learning_rate=2e-4, epochs=args.epochs,
        batch_size=args.batch_size, threads=args.threads, nice=0, max_length=512,
        early_stopping_patience=0, preference="off", warmup_ratio=0.0,
    )  # fmt: skip

    def spec(name: str, cfg: TrainConfig) -> TrainSpec:
        return TrainSpec(
            model_path=args.model_dir, out_dir=str(work / name), config=cfg,
            sft_path=str(work / "train.jsonl"), dtype_cache=str(work / "dtype.json"),
        )  # fmt: skip

    sys.stderr.write(f"· plain recipe: {len(train)} examples, fp32, padded batches\n")
    plain = run_plain(spec("plain", config), work)
    sys.stderr.write("· our trainer\n")
    ours = run_ours(spec("ours", config), work)
    losses = eval_losses(
        args.model_dir,
        {"plain": str(work / "plain" / "adapter"), "ours": ours["adapter_dir"]},
        evals,
        work,
    )
    sys.stderr.write("· bot time to first token, idle and while training\n")
    bot_cfg = TrainConfig.from_dict({**config.to_dict(), "threads": 1, "nice": 19, "epochs": 3.0})
    ttft = asyncio.run(bot_ttft(args.model_dir, spec("bot", bot_cfg), args.requests))

    plain_tok_s = plain["useful_tokens"] / plain["seconds"]
    out = {
        "plain": {
            "useful_tok_s": round(plain_tok_s, 1),
            "eval_loss": round(losses["plain"], 4),
            "dtype": "float32",
            "padding_share": round(1 - plain["useful_tokens"] / plain["padded_tokens"], 3),
            "seconds": round(plain["seconds"], 1),
            "steps": plain["steps"],
        },
        "ours": {
            "useful_tok_s": round(ours["useful_tok_s"], 1),
            "eval_loss": round(losses["ours"], 4),
            "dtype": ours["dtype"],
            "seconds": ours["train_seconds"],
            "steps": ours["steps"],
        },
        "ratios": {
            "useful_tok_s": round(ours["useful_tok_s"] / plain_tok_s, 3),
            "eval_loss": round(losses["ours"] / losses["plain"], 4),
            "ttft_p95": round(ttft["training"] / ttft["idle"], 3),
        },
        "ttft_p95_ms": {"idle": ttft["idle"], "training": ttft["training"]},
        "ttft_detail": ttft,
        "config": {
            "examples": len(train),
            "eval_examples": len(evals),
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "lora_r": config.lora_r,
            "useful_tokens_plain": plain["useful_tokens"],
            "useful_tokens_ours": ours["useful_tokens"],
            "data": "chatterbot-corpus english (not the evaluator's held-out half)",
        },
    }
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
