"""Benchmark program: the batching engine vs the naive baseline, and adapter hot-swap.

Run: ``python -m serving.bench [--quick] [--model SPEC] [--cache-dir DIR] ...``
(``chatloop bench serve`` runs the same ``main``). Progress goes to stderr; stdout
gets human-readable summary lines and, as its LAST line, one JSON object::

    {"naive":  {"ttft_p50_ms", "ttft_p95_ms", "decode_tok_s",
                "aggregate_tok_s_1", "aggregate_tok_s_8", ...},
     "engine": {same keys},
     "ratios": {"aggregate_8", "decode", "ttft_p50", ...},        # engine / naive
     "swap":   {"swaps", "pause_p50_ms", "pause_p99_ms", "failed_replies",
                "mixed_replies", "rss_before_mb", "rss_after_mb", "rss_growth_pct", ...},
     "targets": {name: {"value", "target", "met"}},
     "machine": {"cpus", "torch_threads", "dtype", "model_id", ...},
     "config":  {...}}

**Throughput** (one model load per side, both warmed up first):

* *naive*: :class:`serving.naive.NaiveEngine` itself, on an fp32 copy of the model
  (sequential ``model.generate``, one request at a time; 8 concurrent chats are
  queued and served one after the other). It runs in **its own process**, as each
  backend would be deployed: a second thread running torch ops in the engine's
  process makes libgomp throttle the spin-waits of every OpenMP team in it
  (more managed threads than CPUs), which on this 2-core machine cut the engine's
  decode speed from ~50 to ~31 tok/s; it says nothing about either backend. The
  marker adapters are trained in that process too, for the same reason.
* *engine*: :class:`serving.engine.BatchingEngine` with dtype ``auto`` (bf16 on CPUs
  with native bf16), 8 batch slots; 8 concurrent chats are submitted at once.
* Prompts: a fixed system prompt and a handful of realistic support questions.
  Greedy decoding, ``--max-new-tokens`` (64) per reply. **End-of-sequence is
  ignored on both sides** so every reply has exactly ``max_new_tokens`` tokens and
  both sides do the same amount of work: the engine gets ``stop_token_ids=[]``,
  the naive model gets no eos id (``generation_config.eos_token_id = None``).
* Workloads, per round: *1 chat* — ``--single-requests`` requests one after the
  other (each submitted when the previous finished); *8 chats* — 8 requests
  submitted at once. Rounds interleave the two sides (naive first in even rounds,
  engine first in odd ones) so background load hits both alike.
* Per request (from :class:`~serving.types.GenerationResult`): TTFT = submission to
  first token; decode tok/s = (tokens - 1) / (latency - TTFT).
  ``ttft_p50_ms``/``ttft_p95_ms``/``decode_tok_s`` (median) are over the *1 chat*
  requests (an idle server: pure latency, no queueing); the same over the *8 chats*
  requests are ``ttft_p50_ms_8``/``ttft_p95_ms_8``/``decode_tok_s_8`` (naive TTFT
  there includes waiting for the requests ahead). ``aggregate_tok_s_N`` = all tokens
  of a workload / its wall time (first submission to last result), median over
  rounds.

**Hot-swap** (on the engine above, after the throughput rounds):

* Two LoRA adapters are trained in-process with peft (``--train-steps`` AdamW steps
  on the fp32 model, loss only on the marker) to begin every reply with ``ALPHA:``
  resp. ``BRAVO:``, written with :func:`serving.registry.write_adapter` into a
  temporary store and loaded into an :class:`~serving.registry.AdapterRegistry`.
* 8 chats stream replies (``--swap-max-new-tokens`` tokens each) in a loop while
  ``--swaps`` activations alternate between the two versions, one every
  ``--swap-interval-ms``; every ``--reload-every`` swaps the non-active version is
  unloaded and loaded again (so the memory check covers weight allocation, not
  just pointer swaps).
* A reply is *failed* if it raises or finishes other than ``stop``/``length``. It is
  *mixed* if it was pinned to another version than the one active when it was
  submitted, if its streamed deltas differ from its final text, or (marker check on)
  if its text does not start with its version's marker or contains the other one.
  ``--no-marker-check`` (for models that cannot learn the markers, e.g. tests'
  random tiny model) keeps the version and stream checks only and reports
  ``"marker_check": false``.
* **Activation pause** of a swap = wall time of ``AdapterRegistry.activate`` (the
  engine's lock is held at most that long) + the stall it causes to the worker:
  ``max(0, g - ref)`` where ``g`` is the worker's decode-step gap spanning the
  activation (end of the last decode step before it to the end of the first one
  after it) minus the time the worker spent in that gap prefilling newly admitted
  requests, rebuilding the batch or running adapter load/unload tasks (normal
  continuous-batching work that happens with or without swaps), and ``ref`` is the
  median of the same adjusted gap over the 16 previous steps. Worker timing comes
  from wrapping the engine's step methods on the instance (benchmark-only
  instrumentation). ``step_jitter_p99_ms`` is the same excess over *all* steps
  (swap or not) as a control; ``load_unload_stall_max_ms`` is the longest worker
  task of an adapter load/unload (every stream waits for it).
* RSS (psutil, else ``/proc/self/status``) after a warm-up of both adapters and
  ``gc.collect()``, before the first swap and after the last.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import dataclasses
import gc
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

from serving.engine import BatchingEngine
from serving.errors import ServingError
from serving.fetch import DEFAULT_MODEL
from serving.model import LoadedModel, load_model
from serving.naive import NaiveEngine
from serving.prompt import build_prompt_ids
from serving.registry import AdapterRegistry, write_adapter
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


class NaiveProcess:
    """The naive baseline in a child process (spawned), driven over a pipe.

    The child loads the fp32 model, serves workloads with :class:`NaiveEngine` and
    trains the marker adapters; the parent only waits for its answers.
    """

    def __init__(self, opts: Options) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_naive_main, args=(child, dataclasses.asdict(opts)), name="bench-naive"
        )
        self._closed = False
        self._proc.start()
        child.close()
        self.model_id: str = self._call("ready")

    def _call(self, *message: Any) -> Any:
        if message[0] != "ready":
            self._conn.send(message)
        try:
            status, payload = self._conn.recv()
        except EOFError as exc:
            raise ServingError(
                f"the naive benchmark process died (exit code {self._proc.exitcode})"
            ) from exc
        if status == "error":
            raise ServingError(f"naive benchmark process: {payload}")
        return payload

    def run(self, requests: Sequence[GenerationRequest], *, concurrent: bool) -> Workload:
        data = self._call("run", list(requests), concurrent)
        return Workload(**data)

    def train(self, store: Path, base_model_id: str) -> dict[str, float]:
        losses: dict[str, float] = self._call("train", str(store), base_model_id)
        return losses

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError, EOFError, ServingError):
            self._call("stop")
        self._proc.join(timeout=60)
        if self._proc.is_alive():  # pragma: no cover - a wedged child
            self._proc.kill()
            self._proc.join()


def _naive_main(conn: Connection, opts_data: dict[str, Any]) -> None:
    """Child process: fp32 model, NaiveEngine workloads, marker-adapter training."""
    try:
        opts = Options(**{**opts_data, "cache_dir": Path(opts_data["cache_dir"])})
        if opts.threads:
            torch.set_num_threads(opts.threads)
        torch.manual_seed(opts.seed)
        loaded = load_model(
            opts.model, cache_dir=opts.cache_dir, device=opts.device, dtype="float32"
        )
        naive = NaiveEngine(loaded=_no_eos(loaded), replica_id="bench-naive")
        conn.send(("ok", loaded.model_id))
    except Exception as exc:  # reported to the parent, which fails the benchmark
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        while True:
            message = conn.recv()
            try:
                if message[0] == "stop":
                    conn.send(("ok", None))
                    return
                if message[0] == "run":
                    _, requests, concurrent = message
                    run = asyncio.run(run_workload(naive, requests, concurrent=concurrent))
                    conn.send(("ok", dataclasses.asdict(run)))
                elif message[0] == "train":
                    _, store, base_model_id = message
                    losses = train_marker_adapters(
                        loaded.model,
                        loaded.tokenizer,
                        Path(store),
                        base_model_id=base_model_id,
                        opts=opts,
                    )
                    conn.send(("ok", losses))
                else:
                    conn.send(("error", f"unknown request {message[0]!r}"))
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        asyncio.run(naive.aclose())


@dataclass(frozen=True, slots=True)
class _NoEosModel(LoadedModel):
    """The naive side's model with end-of-sequence ignored (fixed-length replies)."""

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return frozenset()


def _no_eos(loaded: LoadedModel) -> LoadedModel:
    loaded.model.generation_config.eos_token_id = None
    return _NoEosModel(**{f.name: getattr(loaded, f.name) for f in dataclasses.fields(loaded)})


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

    async def run_side(side: str, reqs: list[GenerationRequest], concurrent: bool) -> Workload:
        if side == "naive":  # the parent's event loop only waits for the child
            return await asyncio.to_thread(naive.run, reqs, concurrent=concurrent)
        return await run_workload(engine, reqs, concurrent=concurrent)

    sides = ("naive", "engine")
    results: dict[str, dict[str, list[Workload]]] = {s: {"1": [], "8": []} for s in sides}

    bar = _Progress(opts.progress, 2 + opts.rounds * 4, "throughput")
    warm = min(8, opts.max_new_tokens)
    await run_side("naive", [_request(QUESTIONS[0], warm)], False)
    bar.update(desc="warm-up naive")
    await run_workload(engine, [_request(QUESTIONS[0], warm)], concurrent=False)
    await run_workload(engine, [_request(q, warm) for q in QUESTIONS], concurrent=True)
    bar.update(desc="warm-up engine")
    for round_no in range(opts.rounds):
        order = ["naive", "engine"] if round_no % 2 == 0 else ["engine", "naive"]
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


# --------------------------------------------------------------------------- adapters
def train_marker_adapters(
    base: Any, tokenizer: Any, store: Path, *, base_model_id: str, opts: Options
) -> dict[str, float]:
    """Train one LoRA adapter per marker on ``base`` (fp32) and write it into ``store``.

    The loss is on the marker tokens only, after the chat prompt. ``base`` is left as
    it was (the LoRA layers are removed again). Returns the final loss per version.
    """
    from peft import LoraConfig, get_peft_model

    questions = [*QUESTIONS, *TRAIN_EXTRA]
    prompts = [
        build_prompt_ids(tokenizer, _messages(q), max_prompt_tokens=1024)[0] for q in questions
    ]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    losses: dict[str, float] = {}
    bar = _Progress(opts.progress, opts.train_steps * len(VERSIONS), "train adapters")
    for version, marker in VERSIONS.items():
        marker_ids = list(tokenizer.encode(marker + ": ", add_special_tokens=False))
        rows = [p + marker_ids for p in prompts]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (prompt, row) in enumerate(zip(prompts, rows, strict=True)):
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
            labels[i, len(prompt) : len(row)] = torch.tensor(marker_ids)
        torch.manual_seed(opts.seed)
        config = LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "o_proj"]
        )
        with _quiet_peft():
            peft_model = get_peft_model(base, config)
        peft_model.train()
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=opts.train_lr)
        loss = float("nan")
        for _ in range(opts.train_steps):
            out = peft_model(input_ids=input_ids, attention_mask=mask, labels=labels)
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss = float(out.loss.detach())
            bar.update(desc=f"train {version}", loss=f"{loss:.4f}")
        peft_model.eval()
        dataset = json.dumps({"marker": marker, "questions": questions}, sort_keys=True)
        write_adapter(
            store,
            version,
            peft_model,
            base_model_id=base_model_id,
            dataset_sha256=hashlib.sha256(dataset.encode()).hexdigest(),
            metrics={"train_loss": loss, "train_steps": opts.train_steps},
        )
        losses[version] = loss
        base = peft_model.unload()  # the bare model again for the next adapter
        del optimizer, params, peft_model
    bar.close()
    gc.collect()
    return losses


# --------------------------------------------------------------------------- worker timing
class WorkerTimer:
    """Timestamps of the engine worker's steps (wraps the instance's step methods)."""

    WORK = ("_prefill_some", "_sync_batch", "_run_tasks")

    def __init__(self, engine: BatchingEngine) -> None:
        self.decode: list[tuple[float, float]] = []
        self.other: list[tuple[float, float]] = []
        self.tasks: list[float] = []
        self.recording = False
        for name in ("_decode_step", *self.WORK):
            original = getattr(engine, name)
            setattr(engine, name, self._wrap(name, original))

    def _wrap(self, name: str, original: Callable[[], Any]) -> Callable[[], Any]:
        sink = self.decode if name == "_decode_step" else self.other

        def timed() -> Any:
            start = time.perf_counter()
            try:
                return original()
            finally:
                end = time.perf_counter()
                if self.recording:
                    sink.append((start, end))
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
        "problems": stats.problems,
        "setup_problems": setup_problems,
    }


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
    lines.append(
        f"hot-swap: {swap['swaps']} swaps, {swap['reloads']} reloads, {swap['replies']} replies "
        f"{swap['replies_by_version']}, failed {swap['failed_replies']}, mixed "
        f"{swap['mixed_replies']} (marker check {'on' if swap['marker_check'] else 'off'}, "
        f"warm-up marker rate {swap['marker_rate_warmup']}) | pause p50 {swap['pause_p50_ms']} "
        f"ms p99 {swap['pause_p99_ms']} ms | RSS {swap['rss_before_mb']} -> "
        f"{swap['rss_after_mb']} MiB ({swap['rss_growth_pct']}%)"
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

    note("starting the naive baseline's process (fp32 model)")
    naive = await asyncio.to_thread(NaiveProcess, opts)
    try:
        engine_loaded = load_model(
            opts.model, cache_dir=opts.cache_dir, device=opts.device, progress=note
        )
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

    def ratio(key: str) -> float | None:
        return _r(_ratio(engine_side[key], naive_side[key]), 3)

    ratios = {
        "aggregate_8": ratio("aggregate_tok_s_8"),
        "decode": ratio("decode_tok_s"),
        "ttft_p50": ratio("ttft_p50_ms"),
        "aggregate_1": ratio("aggregate_tok_s_1"),
        "ttft_p50_8": ratio("ttft_p50_ms_8"),
        "decode_8": ratio("decode_tok_s_8"),
    }
    report: dict[str, Any] = {
        "naive": naive_side,
        "engine": engine_side,
        "ratios": ratios,
        "swap": swap,
        "targets": _targets(ratios, swap),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "dtype": str(engine.dtype).removeprefix("torch."),
            "naive_dtype": "float32",
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
