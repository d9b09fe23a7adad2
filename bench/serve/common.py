"""Shared pieces of the serving benchmark: options, prompts, statistics, workloads."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.errors import ServingError
from serving.fetch import DEFAULT_MODEL
from serving.types import ChatMessage, GenerationParams, GenerationRequest, GenerationResult

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are a friendly customer support assistant for an online shop. Answer helpfully."
)
QUESTIONS = (
    "How do I reset my password if I no longer have access to my email address?",
    "My invoice shows a charge I don't recognize. What should I do?",
    "Can I change the email address on my account, and will I lose my order history?",
    "The app keeps crashing when I upload a photo. How can I fix it?",
    "How do I cancel my subscription, and will I get a refund for this month?",
    "Why is my order still marked as processing after three days?",
    "How can I turn on two-factor authentication for my account?",
    "Is there a way to export all of my data to a spreadsheet?",
)
TRAIN_EXTRA = (
    "Hello, is anyone there?",
    "What are your opening hours?",
    "I was charged twice for the same order.",
    "Do you ship to Canada?",
)
VERSIONS = {"bench-alpha": "ALPHA", "bench-bravo": "BRAVO"}
CONCURRENCY = 8
PAUSE_REF_STEPS = 16

TARGETS = {
    "aggregate_8_ratio": (">=", 8.0),
    "decode_ratio": (">=", 1.5),
    "ttft_p50_ratio": ("<=", 0.5),
    "failed_replies": ("<=", 0),
    "mixed_replies": ("<=", 0),
    "pause_p99_ms": ("<=", 50.0),
    "rss_growth_pct": ("<=", 5.0),
    "load_step_gap_p99_ms": ("<=", 100.0),
}


# --------------------------------------------------------------------------- helpers
def _say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def rss_mb() -> float:
    """Resident set size of this process in MiB."""
    try:
        import psutil

        return float(psutil.Process().memory_info().rss) / 2**20
    except ImportError:  # pragma: no cover - psutil is installed with the dev tools
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024
        return 0.0


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft 0.21 reads a property transformers 5 deprecated when it wraps a model."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning
        )
        yield


class _Progress:
    """A tqdm bar on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc=desc, file=sys.stderr, leave=True, dynamic_ncols=True
            )

    def update(self, n: int = 1, desc: str | None = None, **postfix: Any) -> None:
        if self._bar is not None:
            if desc is not None:
                self._bar.set_description(desc, refresh=False)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def classify_reply(
    result: GenerationResult,
    streamed: str,
    *,
    expected_version: str,
    markers: dict[str, str] | None,
) -> str | None:
    """Why a hot-swap reply is "mixed" (None if it is clean).

    ``markers`` maps version -> marker; None switches the marker check off.
    """
    if result.adapter_version != expected_version:
        return f"pinned to {result.adapter_version}, expected {expected_version}"
    if streamed != result.text:
        return "streamed deltas differ from the final text"
    if markers is not None:
        own = markers[expected_version]
        text = result.text.lstrip()
        if not text.startswith(own):
            return f"does not start with {own}: {text[:40]!r}"
        for version, marker in markers.items():
            if version != expected_version and marker in text:
                return f"contains {marker}: {text[:40]!r}"
    return None


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Options:
    model: str
    cache_dir: Path
    device: str
    quick: bool
    rounds: int
    single_requests: int
    max_new_tokens: int
    swaps: int
    reload_every: int
    swap_interval_ms: float
    swap_max_new_tokens: int
    train_steps: int
    train_lr: float
    marker_check: bool
    threads: int | None
    progress: bool
    seed: int
    retune: bool = False


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="chatloop bench serve",
        description=(
            "Benchmark the batching engine against the naive sequential baseline and "
            "measure LoRA hot-swap. The last stdout line is one JSON object."
        ),
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model spec (default: %(default)s)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("CHATLOOP_MODEL_CACHE_DIR", "var/models")),
        help="model cache directory (default: $CHATLOOP_MODEL_CACHE_DIR or var/models)",
    )
    parser.add_argument("--device", default="auto", help="device for both sides (default: auto)")
    parser.add_argument("--quick", action="store_true", help="every measurement, fewer repetitions")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 2)")
    parser.add_argument(
        "--single-requests",
        type=int,
        help="requests per round in the 1-chat workload (default 8, quick 4)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens per reply (64)")
    parser.add_argument("--swaps", type=int, help="adapter activations (default 500, quick 100)")
    parser.add_argument(
        "--reload-every",
        type=int,
        help="unload + reload the non-active adapter every N swaps (25, quick 20; 0: never)",
    )
    parser.add_argument(
        "--swap-interval-ms", type=float, default=20.0, help="time between swaps (20)"
    )
    parser.add_argument(
        "--swap-max-new-tokens", type=int, default=16, help="tokens per hot-swap reply (16)"
    )
    parser.add_argument(
        "--train-steps", type=int, default=10, help="LoRA training steps per adapter (10)"
    )
    parser.add_argument("--train-lr", type=float, default=3e-3, help="LoRA learning rate (3e-3)")
    parser.add_argument(
        "--no-marker-check",
        dest="marker_check",
        action="store_false",
        help="do not require replies to carry their adapter's marker (untrainable models)",
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bars"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--retune",
        action="store_true",
        help="measure the engine's CPU dtype and thread choice again (else the cached one)",
    )
    ns = parser.parse_args(argv)
    quick = bool(ns.quick)

    def pick(value: int | None, full: int, short: int) -> int:
        return value if value is not None else (short if quick else full)

    opts = Options(
        model=ns.model,
        cache_dir=ns.cache_dir,
        device=ns.device,
        quick=quick,
        rounds=pick(ns.rounds, 3, 2),
        single_requests=pick(ns.single_requests, 8, 4),
        max_new_tokens=ns.max_new_tokens,
        swaps=pick(ns.swaps, 500, 100),
        reload_every=pick(ns.reload_every, 25, 20),
        swap_interval_ms=ns.swap_interval_ms,
        swap_max_new_tokens=ns.swap_max_new_tokens,
        train_steps=ns.train_steps,
        train_lr=ns.train_lr,
        marker_check=ns.marker_check,
        threads=ns.threads,
        progress=ns.progress,
        seed=ns.seed,
        retune=ns.retune,
    )
    for name in ("rounds", "single_requests", "max_new_tokens", "swaps", "swap_max_new_tokens"):
        if getattr(opts, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if opts.reload_every < 0 or opts.train_steps < 0 or opts.swap_interval_ms < 0:
        parser.error("--reload-every, --train-steps and --swap-interval-ms must be >= 0")
    return opts


def _messages(question: str) -> tuple[ChatMessage, ...]:
    return (ChatMessage("system", SYSTEM_PROMPT), ChatMessage("user", question))


def _request(question: str, max_new_tokens: int) -> GenerationRequest:
    return GenerationRequest(
        messages=_messages(question),
        params=GenerationParams(
            max_new_tokens=max_new_tokens, max_context_tokens=max_new_tokens + 512, timeout_s=600
        ),
    )


# --------------------------------------------------------------------------- throughput
@dataclass
class Workload:
    """One run of a workload on one side."""

    ttft_ms: list[float] = field(default_factory=list)
    decode_tok_s: list[float] = field(default_factory=list)
    tokens: int = 0
    wall_s: float = 0.0

    @property
    def aggregate_tok_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0


async def _reply(generator: Any, request: GenerationRequest) -> GenerationResult:
    stream = generator.stream(request)
    async for _ in stream:
        pass
    result: GenerationResult = await stream.result()
    if result.finish_reason not in ("stop", "length") or result.ttft_ms is None:
        raise ServingError(f"benchmark request ended with {result.finish_reason!r}")
    return result


async def run_workload(
    generator: Any, requests: Sequence[GenerationRequest], *, concurrent: bool
) -> Workload:
    """Serve ``requests`` all at once (``concurrent``) or one after the other."""
    start = time.perf_counter()
    if concurrent:
        results = list(await asyncio.gather(*(_reply(generator, r) for r in requests)))
    else:
        results = [await _reply(generator, r) for r in requests]
    run = Workload(wall_s=time.perf_counter() - start)
    for result in results:
        assert result.ttft_ms is not None
        run.tokens += result.completion_tokens
        run.ttft_ms.append(result.ttft_ms)
        decode_s = (result.latency_ms - result.ttft_ms) / 1000.0
        if result.completion_tokens > 1 and decode_s > 0:
            run.decode_tok_s.append((result.completion_tokens - 1) / decode_s)
    return run
