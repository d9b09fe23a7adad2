"""The report: targets, summary lines, the machine it ran on; ``main``."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.serve.common import (
    CONCURRENCY,
    TARGETS,
    Options,
    _r,
    _ratio,
    _say,
    parse_args,
)
from bench.serve.naive_side import NaiveProcess
from bench.serve.swap import bench_swap
from bench.serve.throughput import bench_throughput
from serving.engine import BatchingEngine
from serving.errors import ServingError
from serving.model import load_model
from serving.tuning import cpu_info

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- report
def _targets(ratios: dict[str, Any], swap: dict[str, Any]) -> dict[str, Any]:
    values = {
        "aggregate_8_ratio": ratios["aggregate_8"],
        "decode_ratio": ratios["decode"],
        "ttft_p50_ratio": ratios["ttft_p50"],
        "failed_replies": swap["failed_replies"],
        "mixed_replies": swap["mixed_replies"],
        "pause_p99_ms": swap["pause_p99_ms"],
        "rss_growth_pct": swap["rss_growth_pct"],
        "load_step_gap_p99_ms": swap["load_step_gap_p99_ms"],
    }
    out: dict[str, Any] = {}
    for name, (op, limit) in TARGETS.items():
        value = values[name]
        met = None if value is None else (value >= limit if op == ">=" else value <= limit)
        out[name] = {"value": value, "target": f"{op} {limit:g}", "met": met}
    return out


def _summary_lines(report: dict[str, Any]) -> list[str]:
    naive, engine, ratios, swap = (report[k] for k in ("naive", "engine", "ratios", "swap"))
    machine = report["machine"]
    lines = [
        f"model {machine['model_id']} | cpus {machine['cpus']} | torch threads "
        f"{machine['torch_threads']} | engine dtype {machine['dtype']} | naive dtype float32 | "
        f"load avg {machine['loadavg_start']} -> {machine['loadavg_end']}",
    ]
    for name, side in (("naive ", naive), ("engine", engine)):
        lines.append(
            f"{name}: TTFT p50 {side['ttft_p50_ms']} ms p95 {side['ttft_p95_ms']} ms | "
            f"decode {side['decode_tok_s']} tok/s/stream | aggregate 1 chat "
            f"{side['aggregate_tok_s_1']} tok/s, 8 chats {side['aggregate_tok_s_8']} tok/s | "
            f"8-chat TTFT p50 {side['ttft_p50_ms_8']} ms"
        )
    lines.append(
        f"ratios engine/naive: aggregate@8 x{ratios['aggregate_8']} | decode x{ratios['decode']} "
        f"| TTFT p50 x{ratios['ttft_p50']} | aggregate@1 x{ratios['aggregate_1']} | "
        f"TTFT p50 @8 x{ratios['ttft_p50_8']}"
    )
    same, gain = report["ratios_same_dtype"], report["dtype_gain"]
    lines.append(
        f"same dtype ({machine['dtype']} both sides): aggregate@8 x{same['aggregate_8']} | "
        f"decode x{same['decode']} | TTFT p50 x{same['ttft_p50']}; dtype gain of naive "
        f"generate, {machine['dtype']}/float32: decode x{gain['decode']} | aggregate@8 "
        f"x{gain['aggregate_8']}"
    )
    cpu = machine["cpu"]
    lines.append(
        f"cpu {cpu['model']} | flags {' '.join(cpu['flags']) or '-'} | torch capability "
        f"{cpu['torch_capability']} | native bf16 {cpu['native_bf16']} | engine threads "
        f"{machine['engine_threads']} | tuning {machine['tuning']}"
    )
    lines.append(
        f"hot-swap: {swap['swaps']} swaps, {swap['reloads']} reloads, {swap['replies']} replies "
        f"{swap['replies_by_version']}, failed {swap['failed_replies']}, mixed "
        f"{swap['mixed_replies']} (marker check {'on' if swap['marker_check'] else 'off'}, "
        f"warm-up marker rate {swap['marker_rate_warmup']}) | pause p50 {swap['pause_p50_ms']} "
        f"ms p99 {swap['pause_p99_ms']} ms | RSS {swap['rss_before_mb']} -> "
        f"{swap['rss_after_mb']} MiB ({swap['rss_growth_pct']}%) | step gap during reloads "
        f"p50 {swap['load_step_gap_p50_ms']} p99 {swap['load_step_gap_p99_ms']} max "
        f"{swap['load_step_gap_max_ms']} ms over {swap['load_step_gaps']} gaps a reply lived "
        f"through ({swap['load_batch_refill_gaps']} batch refills apart, max "
        f"{swap['load_batch_refill_gap_max_ms']} ms; all steps p99 {swap['step_gap_p99_ms']} ms)"
    )
    for problem in swap["setup_problems"]:
        lines.append(f"  hot-swap SET-UP PROBLEM: {problem}")
    for problem in swap["problems"]:
        lines.append(f"  hot-swap problem: {problem}")
    for name, t in report["targets"].items():
        verdict = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        lines.append(f"target {name}: {t['value']} (want {t['target']}) {verdict}")
    return lines


async def _run(opts: Options) -> dict[str, Any]:
    loadavg_start = [round(v, 2) for v in os.getloadavg()]
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)

    def note(message: str) -> None:
        if opts.progress:
            sys.stderr.write(message + "\n")

    # dtype auto: on a CPU measured once per machine and cached (serving.tuning)
    engine_loaded = load_model(
        opts.model,
        cache_dir=opts.cache_dir,
        device=opts.device,
        progress=note,
        remeasure=opts.retune,
    )
    engine_dtype = str(engine_loaded.dtype).removeprefix("torch.")
    note(f"starting the naive baseline's process (float32 and {engine_dtype} models)")
    naive = await asyncio.to_thread(NaiveProcess, opts, ("float32", engine_dtype))
    try:
        model_id = engine_loaded.model_id
        engine = BatchingEngine(
            model=engine_loaded.model,
            tokenizer=engine_loaded.tokenizer,
            model_id=model_id,
            replica_id="bench",
            max_batch_size=CONCURRENCY,
            device=opts.device,
            dtype="auto",
            stop_token_ids=[],  # fixed-length replies: eos ignored, as on the naive side
            seed=opts.seed,
            threads=opts.threads or engine_loaded.threads,
        )
        try:
            sides = await bench_throughput(naive, engine, opts)
            with tempfile.TemporaryDirectory(prefix="chatloop-bench-") as tmp:
                store = Path(tmp) / "adapters"
                note("training the two marker adapters (in the naive process, fp32)")
                losses = await asyncio.to_thread(naive.train, store, model_id)
                await asyncio.to_thread(naive.close)
                gc.collect()
                swap = await bench_swap(engine, store, base_model_id=model_id, opts=opts)
                swap["train_loss"] = {v: _r(loss, 4) for v, loss in losses.items()}
        finally:
            await engine.aclose()
    finally:
        await asyncio.to_thread(naive.close)

    naive_side, engine_side = sides["naive"], sides["engine"]
    same_side = sides.get("naive_same_dtype", naive_side)

    def ratios_of(top: dict[str, Any], bottom: dict[str, Any]) -> dict[str, float | None]:
        def ratio(key: str) -> float | None:
            return _r(_ratio(top[key], bottom[key]), 3)

        return {
            "aggregate_8": ratio("aggregate_tok_s_8"),
            "decode": ratio("decode_tok_s"),
            "ttft_p50": ratio("ttft_p50_ms"),
            "aggregate_1": ratio("aggregate_tok_s_1"),
            "ttft_p50_8": ratio("ttft_p50_ms_8"),
            "decode_8": ratio("decode_tok_s_8"),
        }

    ratios = ratios_of(engine_side, naive_side)
    tuning = engine_loaded.tuning
    report: dict[str, Any] = {
        "naive": naive_side,
        "naive_same_dtype": same_side,
        "engine": engine_side,
        "ratios": ratios,
        "ratios_same_dtype": ratios_of(engine_side, same_side),
        "dtype_gain": ratios_of(same_side, naive_side),
        "swap": swap,
        "targets": _targets(ratios, swap),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "dtype": str(engine.dtype).removeprefix("torch."),
            "naive_dtype": "float32",
            "engine_threads": engine.threads or torch.get_num_threads(),
            "cpu": cpu_info(),
            "tuning": None
            if tuning is None
            else {
                "dtype": tuning.dtype,
                "threads": tuning.threads,
                "cached": tuning.cached,
                "step_ms": tuning.step_ms,
            },
            "device": str(engine.device),
            "model_id": model_id,
            "torch": torch.__version__,
            "loadavg_start": loadavg_start,
            "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        },
        "config": {
            "quick": opts.quick,
            "rounds": opts.rounds,
            "single_requests": opts.single_requests,
            "concurrency": CONCURRENCY,
            "max_new_tokens": opts.max_new_tokens,
            "eos": "ignored (fixed-length replies on both sides)",
            "swap_interval_ms": opts.swap_interval_ms,
            "swap_max_new_tokens": opts.swap_max_new_tokens,
            "reload_every": opts.reload_every,
            "train_steps": opts.train_steps,
        },
    }
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the last stdout line is the JSON report. Returns the exit code."""
    opts = parse_args(argv)
    try:
        report = asyncio.run(_run(opts))
    except ServingError as exc:
        sys.stderr.write(f"bench serve failed: {exc}\n")
        return 2
    for line in _summary_lines(report):
        _say(line)
    _say(json.dumps(report, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
