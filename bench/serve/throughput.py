"""Throughput: the engine and the naive baseline on the same workloads, interleaved."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from bench.serve.common import (
    CONCURRENCY,
    QUESTIONS,
    Options,
    Workload,
    _median,
    _Progress,
    _r,
    _request,
    percentile,
    run_workload,
)
from bench.serve.naive_side import NaiveProcess
from serving.engine import BatchingEngine
from serving.types import GenerationRequest

log = logging.getLogger(__name__)


def _summarise_side(single: list[Workload], multi: list[Workload]) -> dict[str, Any]:
    ttft_1 = [v for w in single for v in w.ttft_ms]
    ttft_8 = [v for w in multi for v in w.ttft_ms]
    return {
        "ttft_p50_ms": _r(percentile(ttft_1, 50), 1),
        "ttft_p95_ms": _r(percentile(ttft_1, 95), 1),
        "decode_tok_s": _r(_median([v for w in single for v in w.decode_tok_s])),
        "aggregate_tok_s_1": _r(_median([w.aggregate_tok_s for w in single])),
        "aggregate_tok_s_8": _r(_median([w.aggregate_tok_s for w in multi])),
        "ttft_p50_ms_8": _r(percentile(ttft_8, 50), 1),
        "ttft_p95_ms_8": _r(percentile(ttft_8, 95), 1),
        "decode_tok_s_8": _r(_median([v for w in multi for v in w.decode_tok_s])),
        "aggregate_tok_s_8_rounds": [_r(w.aggregate_tok_s) for w in multi],
        "requests": sum(len(w.ttft_ms) for w in single + multi),
        "tokens": sum(w.tokens for w in single + multi),
    }


async def bench_throughput(
    naive: NaiveProcess, engine: BatchingEngine, opts: Options
) -> dict[str, dict[str, Any]]:
    single_reqs = [
        _request(QUESTIONS[i % len(QUESTIONS)], opts.max_new_tokens)
        for i in range(opts.single_requests)
    ]
    multi_reqs = [
        _request(QUESTIONS[i % len(QUESTIONS)], opts.max_new_tokens) for i in range(CONCURRENCY)
    ]

    engine_dtype = str(engine.dtype).removeprefix("torch.")
    naive_dtypes = {"naive": "float32"}
    if engine_dtype != "float32":  # batching's gain with both sides in the same dtype
        naive_dtypes["naive_same_dtype"] = engine_dtype

    async def run_side(side: str, reqs: list[GenerationRequest], concurrent: bool) -> Workload:
        if side in naive_dtypes:  # the parent's event loop only waits for the child
            return await asyncio.to_thread(
                naive.run, reqs, concurrent=concurrent, dtype=naive_dtypes[side]
            )
        return await run_workload(engine, reqs, concurrent=concurrent)

    sides = (*naive_dtypes, "engine")
    results: dict[str, dict[str, list[Workload]]] = {s: {"1": [], "8": []} for s in sides}

    bar = _Progress(opts.progress, 2 + opts.rounds * 2 * len(sides), "throughput")
    warm = min(8, opts.max_new_tokens)
    for side in naive_dtypes:
        await run_side(side, [_request(QUESTIONS[0], warm)], False)
    bar.update(desc="warm-up naive")
    await run_workload(engine, [_request(QUESTIONS[0], warm)], concurrent=False)
    await run_workload(engine, [_request(q, warm) for q in QUESTIONS], concurrent=True)
    bar.update(desc="warm-up engine")
    for round_no in range(opts.rounds):
        order = list(sides) if round_no % 2 == 0 else list(reversed(sides))
        for workload, reqs, concurrent in (("1", single_reqs, False), ("8", multi_reqs, True)):
            for side in order:
                run = await run_side(side, reqs, concurrent)
                results[side][workload].append(run)
                bar.update(
                    desc=f"throughput round {round_no + 1}/{opts.rounds}",
                    round=round_no,
                    side=side,
                    chats=workload,
                    tok_s=f"{run.aggregate_tok_s:.1f}",
                    load=f"{os.getloadavg()[0]:.2f}",
                )
                log.debug(
                    "round %d %s x%s: %.1f tok/s", round_no, side, workload, run.aggregate_tok_s
                )
    bar.close()
    return {side: _summarise_side(r["1"], r["8"]) for side, r in results.items()}
