"""Hot-swap under load: activation pauses, decode-step gaps during adapter loads."""

from __future__ import annotations

import asyncio
import bisect
import gc
import itertools
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.serve.common import (
    CONCURRENCY,
    PAUSE_REF_STEPS,
    QUESTIONS,
    VERSIONS,
    Options,
    _Progress,
    _r,
    _request,
    classify_reply,
    percentile,
    rss_mb,
)
from serving.engine import BatchingEngine
from serving.registry import AdapterRegistry
from serving.types import GenerationRequest, GenerationResult

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- worker timing
class WorkerTimer:
    """Timestamps of the engine worker's steps (wraps the instance's step methods)."""

    WORK = ("_prefill_some", "_sync_batch", "_run_tasks")

    def __init__(self, engine: BatchingEngine) -> None:
        self.engine = engine
        self.decode: list[tuple[float, float]] = []
        self.streams: dict[float, frozenset[int]] = {}  # decode step end -> its live rows
        self.other: list[tuple[float, float]] = []
        self.tasks: list[float] = []
        self.recording = False
        for name in ("_decode_step", *self.WORK):
            original = getattr(engine, name)
            setattr(engine, name, self._wrap(name, original))

    def _wrap(self, name: str, original: Callable[[], Any]) -> Callable[[], Any]:
        sink = self.decode if name == "_decode_step" else self.other

        def timed() -> Any:
            rows = (
                frozenset(id(s) for s in self.engine._rows if not s.done)
                if name == "_decode_step"
                else frozenset()
            )  # read on the worker thread, which owns the rows
            start = time.perf_counter()
            try:
                return original()
            finally:
                end = time.perf_counter()
                if self.recording:
                    sink.append((start, end))
                    if name == "_decode_step":
                        self.streams[end] = rows
                    if name == "_run_tasks":
                        self.tasks.append(end - start)

        return timed

    def adjusted_gaps(self) -> tuple[list[float], list[float]]:
        """(end times of decode steps, adjusted gap before each step in seconds).

        Gap ``i`` runs from the end of step ``i-1`` to the end of step ``i``, minus the
        prefill / batch-rebuild / task time inside it; gap 0 is NaN.
        """
        steps = sorted(self.decode)
        other = sorted(self.other)
        ends = [e for _, e in steps]
        gaps = [float("nan")]
        j = 0
        for i in range(1, len(steps)):
            lo, hi = ends[i - 1], ends[i]
            while j < len(other) and other[j][1] <= lo:
                j += 1
            busy = 0.0
            k = j
            while k < len(other) and other[k][0] < hi:
                busy += max(0.0, min(hi, other[k][1]) - max(lo, other[k][0]))
                k += 1
            gaps.append(max(0.0, (hi - lo) - busy))
        return ends, gaps

    @staticmethod
    def excess(gaps: list[float], i: int) -> float | None:
        """How much adjusted gap ``i`` exceeds the median of the previous ones."""
        ref = [g for g in gaps[max(1, i - PAUSE_REF_STEPS) : i] if g == g]
        if i < 1 or i >= len(gaps) or len(ref) < 2:
            return None
        return max(0.0, gaps[i] - statistics.median(ref))


# --------------------------------------------------------------------------- hot-swap
@dataclass
class SwapStats:
    replies: int = 0
    failed: int = 0
    mixed: int = 0
    by_version: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def note(self, problem: str) -> None:
        if len(self.problems) < 10:
            self.problems.append(problem)


async def _swap_chat(
    engine: BatchingEngine,
    chat_no: int,
    stop: asyncio.Event,
    stats: SwapStats,
    markers: dict[str, str] | None,
    max_new_tokens: int,
) -> None:
    n = 0
    while not stop.is_set():
        request = _request(QUESTIONS[(chat_no + n) % len(QUESTIONS)], max_new_tokens)
        n += 1
        expected = engine.active_version  # no await until stream(): the version it must pin
        try:
            stream = engine.stream(request)
            streamed = "".join([d async for d in stream])
            result = await stream.result()
        except Exception as exc:
            stats.replies += 1
            stats.failed += 1
            stats.note(f"failed: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.01)
            continue
        stats.replies += 1
        stats.by_version[result.adapter_version] = (
            stats.by_version.get(result.adapter_version, 0) + 1
        )
        if result.finish_reason not in ("stop", "length"):
            stats.failed += 1
            stats.note(f"failed: finish_reason {result.finish_reason}")
            continue
        why = classify_reply(result, streamed, expected_version=expected, markers=markers)
        if why is not None:
            stats.mixed += 1
            stats.note(f"mixed: {why}")


async def _marker_rate(
    engine: BatchingEngine, version: str, marker: str, max_new_tokens: int
) -> float:
    replies = await asyncio.gather(
        *(
            _reply_pinned(engine, _request(q, max_new_tokens), version)
            for q in QUESTIONS[:CONCURRENCY]
        )
    )
    return sum(r.text.lstrip().startswith(marker) for r in replies) / len(replies)


async def _reply_pinned(
    engine: BatchingEngine, request: GenerationRequest, version: str
) -> GenerationResult:
    stream = engine.stream(request, adapter_version=version)
    async for _ in stream:
        pass
    return await stream.result()


async def bench_swap(
    engine: BatchingEngine, store: Path, *, base_model_id: str, opts: Options
) -> dict[str, Any]:
    registry = AdapterRegistry(engine, base_model_id=base_model_id, store_dir=store)
    versions = list(VERSIONS)
    for version in versions:
        await registry.load_version(version)
    registry.activate(versions[0])

    # warm-up: both adapters in mixed batches, and how well the markers were learned
    rates = {
        v: await _marker_rate(engine, v, VERSIONS[v], opts.swap_max_new_tokens) for v in versions
    }
    markers = dict(VERSIONS) if opts.marker_check else None
    setup_problems = [
        f"{v} began only {rate:.0%} of its warm-up replies with {VERSIONS[v]}: the marker "
        "check cannot tell a mixed reply from an untrained adapter (raise --train-steps)"
        for v, rate in rates.items()
        if markers is not None and rate < 1.0
    ]
    timer = WorkerTimer(engine)
    gc.collect()
    rss_before = rss_mb()

    stats = SwapStats()
    stop = asyncio.Event()
    chats = [
        asyncio.create_task(_swap_chat(engine, i, stop, stats, markers, opts.swap_max_new_tokens))
        for i in range(CONCURRENCY)
    ]
    timer.recording = True
    activations: list[tuple[float, float]] = []
    reload_s: list[float] = []
    load_windows: list[tuple[float, float]] = []
    reload_due, last_reloaded = False, ""
    bar = _Progress(opts.progress, opts.swaps, "hot-swap")
    try:
        await asyncio.sleep(0.5)  # let the chats fill the batch
        for i in range(opts.swaps):
            target = versions[(i + 1) % len(versions)]
            start = time.perf_counter()
            registry.activate(target)
            activations.append((start, time.perf_counter()))
            reload_due = reload_due or bool(opts.reload_every and (i + 1) % opts.reload_every == 0)
            other = next(v for v in versions if v != target)
            if reload_due and other != last_reloaded:  # alternate which adapter is reloaded
                t0 = time.perf_counter()
                await registry.unload_adapter(other)
                await registry.load_version(other)
                reload_s.append(time.perf_counter() - t0)
                load_windows.append((t0, time.perf_counter()))
                reload_due, last_reloaded = False, other
            bar.update(replies=stats.replies, failed=stats.failed, mixed=stats.mixed)
            await asyncio.sleep(opts.swap_interval_ms / 1000.0)
        await asyncio.sleep(0.2)  # a few steps after the last swap, for its pause
    finally:
        stop.set()
        await asyncio.gather(*chats)
        timer.recording = False
        bar.close()
    gc.collect()
    rss_after = rss_mb()

    ends, gaps = timer.adjusted_gaps()
    pauses: list[float] = []
    calls: list[float] = []
    for start, end in activations:
        call = end - start
        calls.append(call * 1000)
        i = bisect.bisect_right(ends, end)  # the first decode step ending after the call
        stall = WorkerTimer.excess(gaps, i) or 0.0
        pauses.append((call + stall) * 1000)
    jitter = [
        e * 1000 for i in range(1, len(gaps)) if (e := WorkerTimer.excess(gaps, i)) is not None
    ]
    raw_gaps = [(b - a) * 1000 for a, b in itertools.pairwise(ends)]

    def during_load(a: float, b: float) -> bool:
        return any(a < w_end and b > w_start for w_start, w_end in load_windows)

    # what a stream sees while an adapter is unloaded and loaded again: every gap
    # between two decode steps that overlaps a reload (prefills included) and that a
    # reply lives through (a row decoding in both steps). A gap in which every reply
    # had ended (the batch empty, new prompts prefilled at once) pauses no stream: it
    # is counted apart, as ``load_batch_refill_gaps``; the wait for a first token is
    # the TTFT figures' business.
    load_gaps: list[float] = []
    refill_gaps: list[float] = []
    for a, b in itertools.pairwise(ends):
        if during_load(a, b):
            lived = timer.streams.get(a, frozenset()) & timer.streams.get(b, frozenset())
            (load_gaps if lived else refill_gaps).append((b - a) * 1000)
    return {
        "swaps": len(activations),
        "pause_p50_ms": _r(percentile(pauses, 50), 3),
        "pause_p99_ms": _r(percentile(pauses, 99), 3),
        "pause_max_ms": _r(max(pauses, default=0.0), 3),
        "failed_replies": stats.failed,
        "mixed_replies": stats.mixed,
        "rss_before_mb": _r(rss_before, 1),
        "rss_after_mb": _r(rss_after, 1),
        "rss_growth_pct": _r((rss_after - rss_before) / rss_before * 100 if rss_before else None),
        "replies": stats.replies,
        "replies_by_version": dict(sorted(stats.by_version.items())),
        "marker_check": opts.marker_check,
        "marker_rate_warmup": {v: _r(rate) for v, rate in rates.items()},
        "activate_call_p99_ms": _r(percentile(calls, 99), 4),
        "step_jitter_p99_ms": _r(percentile(jitter, 99), 3),
        "step_gap_p50_ms": _r(percentile(raw_gaps, 50), 2),
        "step_gap_p99_ms": _r(percentile(raw_gaps, 99), 2),
        "decode_steps": len(ends),
        "reloads": len(reload_s),
        "reload_p50_ms": _r(percentile([s * 1000 for s in reload_s], 50), 1),
        "load_unload_stall_max_ms": _r(max(timer.tasks, default=0.0) * 1000, 2),
        "load_step_gap_p50_ms": _r(percentile(load_gaps, 50), 2),
        "load_step_gap_p99_ms": _r(percentile(load_gaps, 99), 2),
        "load_step_gap_max_ms": _r(max(load_gaps, default=0.0), 2),
        "load_step_gaps": len(load_gaps),
        "load_batch_refill_gaps": len(refill_gaps),
        "load_batch_refill_gap_max_ms": _r(max(refill_gaps, default=0.0), 2),
        "problems": stats.problems,
        "setup_problems": setup_problems,
    }
