"""Benchmark program: the batching engine vs the naive baseline, and adapter hot-swap.

Run: ``python -m bench.serve [--quick] [--model SPEC] [--cache-dir DIR] ...``
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

from bench.serve.report import main

__all__ = ["main"]
