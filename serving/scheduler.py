"""The batching engine's worker loop: scheduling, prefill, decode steps.

:class:`EngineLoop` is the half of :class:`serving.engine.BatchingEngine` that runs
on its worker thread (see that module for the behaviour); :class:`SeqState` is one
request's state from submission to its result.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from serving.detok import Detokenizer
from serving.errors import (
    EngineClosed,
    ServingError,
)
from serving.kvcache import SlotCache, decode_inputs, merge_rows
from serving.prompt import build_prompt_ids
from serving.sampling import sample_next
from serving.types import (
    FinishReason,
    GenerationParams,
    GenerationRequest,
    GenerationResult,
    ReplyStream,
)

log = logging.getLogger(__name__)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


MIN_PREFILL_SLICE = 16
"""The smallest prefill slice: below it a forward pass is mostly fixed overhead."""
FIRST_PREFILL_SLICE = 64
"""The slice before any prefill was timed."""

PEFT_BASE_ADAPTER = "__base__"
"""peft's name for "no adapter" in a mixed batch (``adapter_names=[...]``)."""
PEFT_UNKNOWN = "\x00unknown"
"""The engine's cached peft layer state after anything may have changed it."""


# --------------------------------------------------------------------------- sequences
@dataclass(eq=False)
class SeqState:
    request: GenerationRequest
    stream: ReplyStream
    submitted: float
    deadline: float
    version: str
    adapter: str | None
    detok: Detokenizer
    prompt_ids: list[int] | None = None
    dropped_turns: int = 0
    ctx_limit: int = 0
    generated: list[int] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    prefill_pos: int = 0
    prefill_cache: SlotCache | None = None
    n_cached: int = 0
    first_token_at: float | None = None
    done: bool = False

    @property
    def params(self) -> GenerationParams:
        return self.request.params

    @property
    def peft_name(self) -> str:
        return self.adapter or PEFT_BASE_ADAPTER


class EngineLoop:
    """The worker side of :class:`~serving.engine.BatchingEngine`: admission,
    prefill, batch composition, decode steps, sampling, finishing requests.

    Only the worker thread runs these methods; state shared with the event loop
    is guarded by ``_cond``. The attributes are set by ``BatchingEngine.__init__``.
    """

    model_id: str
    replica_id: str
    tokenizer: Any
    device: torch.device
    max_batch_size: int
    max_context_tokens: int
    prefill_chunk_tokens: int
    prefill_slice_ms: float | None
    _prefill_ms_per_token: float | None
    stop_token_ids: frozenset[int]
    threads: int | None
    _model: Any
    _is_peft: bool
    _peft_mode: str | None
    _lora_layers: list[Any] | None
    _num_layers: int
    _logits_to_keep: bool
    _cache_kwarg: str
    _rng: torch.Generator
    _cond: threading.Condition
    _pending: collections.deque[SeqState]
    _in_flight: int
    _pins: collections.Counter[str]
    _closing: bool
    _close_deadline: float
    _stopped: bool
    _stop_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]
    _unpin_waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]]
    _tasks: collections.deque[tuple[Callable[[], Any], concurrent.futures.Future[Any]]]
    _decode_steps: int
    _generated_tokens: int
    _finished: int
    _prefilling: list[SeqState]
    _joiners: list[SeqState]
    _rows: list[SeqState]
    _batch_cache: SlotCache | None
    _batch_len: int

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)  # per thread under OpenMP: this worker's team
        try:
            while True:
                self._run_tasks()
                with torch.inference_mode():
                    if not self._iterate():
                        break
        except BaseException as exc:  # pragma: no cover - last-resort guard
            log.exception("engine worker crashed")
            self._fail_everything(ServingError(f"engine worker crashed: {exc}"))
            raise
        finally:
            self._release_batch()
            with self._cond:
                self._stopped = True
                waiters, self._stop_waiters = self._stop_waiters, []
                tasks, self._tasks = list(self._tasks), collections.deque()
            for _, future in tasks:
                future.set_exception(EngineClosed("the engine stopped before running this task"))
            for loop, event in waiters:
                with contextlib.suppress(RuntimeError):  # that loop is closed already
                    loop.call_soon_threadsafe(event.set)

    def _run_tasks(self) -> None:
        while True:
            with self._cond:
                if not self._tasks:
                    return
                fn, future = self._tasks.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                with torch.no_grad():
                    future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)
            finally:
                self._peft_mode = PEFT_UNKNOWN  # a task may have added or removed adapters

    def _iterate(self) -> bool:
        closed_out: list[SeqState] = []
        with self._cond:
            while not (self._pending or self._in_flight or self._closing or self._tasks):
                self._cond.wait(timeout=1.0)
            closing = self._closing
            if closing:
                closed_out = list(self._pending)
                self._pending.clear()
            while self._pending and self._in_flight < self.max_batch_size:
                self._prefilling.append(self._pending.popleft())
                self._in_flight += 1
        for seq in closed_out:
            self._fail(
                seq,
                EngineClosed("the engine was closed before the request started"),
                admitted=False,
            )

        try:
            if closing and time.monotonic() >= self._close_deadline:
                for seq in [*self._prefilling, *self._joiners, *self._rows]:
                    if not seq.done:
                        self._finish(seq, "cancelled")
            self._reap()
            self._prefill_some()
            self._sync_batch()
            if self._rows:
                self._decode_step()
        except Exception as exc:
            log.exception("generation step failed")
            err = ServingError(f"generation failed: {type(exc).__name__}: {exc}")
            err.__cause__ = exc
            for seq in [*self._prefilling, *self._joiners, *self._rows]:
                if not seq.done:
                    self._fail(seq, err)
            self._prefilling.clear()
            self._joiners.clear()
            self._rows.clear()
            self._release_batch()

        if closing:
            with self._cond:
                return bool(self._in_flight or self._pending)
        return True

    # ------------------------------------------------------------------ lifecycle of a sequence
    def _reap(self) -> None:
        """Finish cancelled and timed-out sequences, queued ones included."""
        now = time.monotonic()
        expired: list[SeqState] = []
        with self._cond:
            for seq in list(self._pending):
                if seq.stream.cancelled or now >= seq.deadline:
                    self._pending.remove(seq)
                    expired.append(seq)
        for seq in expired:
            self._finish(seq, "cancelled" if seq.stream.cancelled else "timeout", admitted=False)
        for seq in [*self._prefilling, *self._joiners, *self._rows]:
            if seq.done:
                continue
            if seq.stream.cancelled:
                self._finish(seq, "cancelled")
            elif now >= seq.deadline:
                self._finish(seq, "timeout")
        self._prefilling = [s for s in self._prefilling if not s.done]

    def _push(self, seq: SeqState, delta: str) -> None:
        if not delta:
            return
        seq.parts.append(delta)
        try:
            seq.stream.push(delta)
        except RuntimeError:  # the consumer's event loop is gone
            seq.stream.cancelled = True

    def _finish(self, seq: SeqState, reason: FinishReason, *, admitted: bool = True) -> None:
        if seq.done:
            return
        seq.done = True
        self._push(seq, seq.detok.flush())
        seq.prefill_cache = None
        now = time.monotonic()
        result = GenerationResult(
            text="".join(seq.parts),
            finish_reason=reason,
            prompt_tokens=len(seq.prompt_ids or ()),
            completion_tokens=len(seq.generated),
            latency_ms=(now - seq.submitted) * 1000.0,
            ttft_ms=None
            if seq.first_token_at is None
            else (seq.first_token_at - seq.submitted) * 1000.0,
            adapter_version=seq.version,
            model_id=self.model_id,
            replica_id=self.replica_id,
            dropped_turns=seq.dropped_turns,
        )
        self._release(seq, admitted)  # first, so a consumer woken by the result sees a free slot
        with contextlib.suppress(RuntimeError):  # RuntimeError: the consumer's loop is gone
            seq.stream.finish(result)

    def _fail(self, seq: SeqState, exc: BaseException, *, admitted: bool = True) -> None:
        if seq.done:
            return
        seq.done = True
        seq.prefill_cache = None
        self._release(seq, admitted)
        with contextlib.suppress(RuntimeError):  # RuntimeError: the consumer's loop is gone
            seq.stream.fail(exc)

    def _release(self, seq: SeqState, admitted: bool) -> None:
        with self._cond:
            self._pins[seq.version] -= 1
            if self._pins[seq.version] <= 0:
                del self._pins[seq.version]
                for loop, done in self._unpin_waiters.pop(seq.version, []):
                    with contextlib.suppress(RuntimeError):  # that loop is closed already
                        loop.call_soon_threadsafe(_resolve, done)
            if admitted:
                self._in_flight -= 1
            self._finished += 1
            self._cond.notify_all()

    def _fail_everything(self, exc: ServingError) -> None:
        with self._cond:
            pending = list(self._pending)
            self._pending.clear()
        for seq in pending:
            self._fail(seq, exc, admitted=False)
        for seq in [*self._prefilling, *self._joiners, *self._rows]:
            self._fail(seq, exc)

    # ------------------------------------------------------------------ prefill
    def _prepare(self, seq: SeqState) -> bool:
        """Build the prompt of a newly admitted sequence; False if it failed."""
        params = seq.params
        ctx = min(params.max_context_tokens, self.max_context_tokens)
        if ctx >= params.max_context_tokens:
            reserve = params.max_new_tokens
        else:  # the engine's context is the tighter one: keep room for a reply
            reserve = min(params.max_new_tokens, ctx // 2)
        try:
            ids, dropped = build_prompt_ids(
                self.tokenizer, seq.request.messages, max_prompt_tokens=ctx - reserve
            )
        except ServingError as exc:
            self._fail(seq, exc)
            return False
        except Exception as exc:
            err = ServingError(f"could not build the prompt: {exc}")
            err.__cause__ = exc
            self._fail(seq, err)
            return False
        if not ids:
            self._fail(seq, ServingError("the prompt is empty"))
            return False
        seq.prompt_ids, seq.dropped_turns, seq.ctx_limit = ids, dropped, ctx
        seq.prefill_cache = SlotCache.empty(self._num_layers, len(ids))
        return True

    def _forward_kwargs(self, seqs: Sequence[SeqState], tokens: int = 1) -> dict[str, Any]:
        """Keyword arguments of a forward over ``tokens`` positions per row.

        Only the last position's logits are kept. For a multi-token prefill they are
        asked for by index, not as ``logits_to_keep=1``: the slice ``h[:, -1:, :]`` is a
        view whose strides torch's matmul will not fold into one ``mm`` when the LM
        head's weight does not require grad (peft freezes it), so it ran a ``bmm`` on a
        contiguous copy of the whole transposed head (28M values, ~130 ms on a 2-core
        CPU) on every prefill once an adapter was loaded. Indexing copies one row.
        """
        kwargs: dict[str, Any] = {"use_cache": True}
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = (
                1 if tokens == 1 else torch.tensor([tokens - 1], device=self.device)
            )
        if self._is_peft:
            names = [s.peft_name for s in seqs]
            if len(set(names)) == 1:
                self._peft_route(names[0])  # one version: peft's plain forward, no sub-batching
            else:
                self._peft_route(None)
                kwargs["adapter_names"] = names
        return kwargs

    def _peft_route(self, name: str | None) -> None:
        """Set peft's layers for a batch of one adapter ``name`` (None: a mixed batch).

        A batch on one version skips peft's mixed-batch path (a gather and scatter per
        LoRA layer and adapter): the base version runs with adapter layers disabled, an
        adapter as peft's only active one. Mixed batches pass ``adapter_names``, which
        needs the layers enabled. Cached until the next worker task changes the model.
        """
        if name == self._peft_mode:
            return
        if self._peft_mode == PEFT_UNKNOWN:  # the model may have changed: find its layers
            self._lora_layers = _lora_layers(self._model)
        if self._lora_layers is not None:
            # peft's own calls walk every module and reset requires_grad flags (~15 ms
            # per switch on 2 cores); its layers' forward reads just these two fields
            disabled = name == PEFT_BASE_ADAPTER
            for layer in self._lora_layers:
                layer._disable_adapters = disabled
                if name is not None and not disabled:
                    layer._active_adapter = [name]
            if name is not None and not disabled:
                self._model.base_model.active_adapter = name
            self._peft_mode = name
            return
        tuner = self._model.base_model
        if name == PEFT_BASE_ADAPTER:
            tuner.disable_adapter_layers()
        else:
            tuner.enable_adapter_layers()
            if name is not None:
                tuner.set_adapter(name, inference_mode=True)
        self._peft_mode = name

    def _prefill_slice(self) -> int:
        """Prompt tokens to prefill between two decode steps while others decode."""
        if self.prefill_slice_ms is None:
            return self.prefill_chunk_tokens
        if self._prefill_ms_per_token is None:
            return min(self.prefill_chunk_tokens, FIRST_PREFILL_SLICE)
        tokens = int(self.prefill_slice_ms / self._prefill_ms_per_token)
        return max(
            min(MIN_PREFILL_SLICE, self.prefill_chunk_tokens),
            min(tokens, self.prefill_chunk_tokens),
        )

    def _note_prefill(self, tokens: int, seconds: float) -> None:
        """Keep a running estimate of the prefill cost per token (ms)."""
        if tokens < MIN_PREFILL_SLICE // 2:  # tiny chunks are all overhead: no signal
            return
        ms = seconds * 1000.0 / tokens
        old = self._prefill_ms_per_token
        self._prefill_ms_per_token = ms if old is None else 0.7 * old + 0.3 * ms

    def _prefill_some(self) -> None:
        """Prefill admitted sequences between two decode steps.

        While rows are decoding, at most one slice (:meth:`_prefill_slice` tokens) per
        call, so their next step waits about ``prefill_slice_ms`` at most. When nothing
        is decoding there is nobody to keep waiting, so all pending prefill work is done
        at once, in ``prefill_chunk_tokens`` chunks.
        """
        decoding = any(not s.done for s in self._rows)  # finished rows leave at _sync_batch
        step = self._prefill_slice() if decoding else self.prefill_chunk_tokens
        budget = step
        while self._prefilling and (budget > 0 or not decoding):
            seq = self._prefilling[0]
            if seq.prompt_ids is None and not self._prepare(seq):
                self._prefilling.pop(0)
                continue
            assert seq.prompt_ids is not None and seq.prefill_cache is not None
            start = seq.prefill_pos
            end = min(len(seq.prompt_ids), start + (min(step, budget) if decoding else step))
            ids = torch.tensor([seq.prompt_ids[start:end]], dtype=torch.long, device=self.device)
            positions = torch.arange(start, end, device=self.device).unsqueeze(0)
            began = time.perf_counter()
            out = self._model(
                input_ids=ids,
                position_ids=positions,
                **{self._cache_kwarg: seq.prefill_cache},
                **self._forward_kwargs([seq], end - start),
            )
            if self.prefill_slice_ms is not None:
                self._note_prefill(end - start, time.perf_counter() - began)
            seq.prefill_pos = end
            budget -= end - start
            if end < len(seq.prompt_ids):
                continue
            self._prefilling.pop(0)
            seq.n_cached = end
            token = self._sample(out.logits[:, -1, :], [seq])[0]
            self._accept(seq, token)
            if not seq.done:
                self._joiners.append(seq)
            else:
                seq.prefill_cache = None

    # ------------------------------------------------------------------ batch composition
    def _release_batch(self) -> None:
        self._batch_cache = None
        self._batch_len = 0

    def _sync_batch(self) -> None:
        """Drop finished rows and merge newly prefilled ones into the batch cache."""
        keep = [i for i, s in enumerate(self._rows) if not s.done]
        joiners = [s for s in self._joiners if not s.done]
        self._joiners = []
        if len(keep) == len(self._rows) and not joiners:
            return
        rows = [self._rows[i] for i in keep] + joiners
        if not rows:
            self._rows = []
            self._release_batch()
            return
        parts = [(s.prefill_cache, s.n_cached) for s in joiners if s.prefill_cache is not None]
        self._batch_cache, self._batch_len = merge_rows(
            self._batch_cache, self._batch_len, keep, parts, self._num_layers
        )
        for seq in joiners:
            seq.prefill_cache = None
        self._rows = rows

    # ------------------------------------------------------------------ decode
    def _decode_step(self) -> None:
        rows = self._rows
        assert self._batch_cache is not None
        width = self._batch_len
        positions, attention_mask = decode_inputs([s.n_cached for s in rows], width, self.device)
        input_ids = torch.tensor([[s.generated[-1]] for s in rows], dtype=torch.long)
        if self.device.type != "cpu":
            input_ids = input_ids.to(self.device)
        out = self._model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            **{self._cache_kwarg: self._batch_cache},
            **self._forward_kwargs(rows),
        )
        self._batch_len = width + 1
        for seq in rows:
            seq.n_cached += 1
        tokens = self._sample(out.logits[:, -1, :], rows)
        with self._cond:
            self._decode_steps += 1
        for seq, token in zip(rows, tokens, strict=True):
            if not seq.done:
                self._accept(seq, token)

    def _accept(self, seq: SeqState, token: int) -> None:
        """Record a sampled token: stream its text, finish the sequence if it ends."""
        if seq.first_token_at is None:
            seq.first_token_at = time.monotonic()
        with self._cond:
            self._generated_tokens += 1
        if token in self.stop_token_ids:  # not part of the reply nor of completion_tokens
            self._finish(seq, "stop")
            return
        seq.generated.append(token)
        self._push(seq, seq.detok.add(token))
        assert seq.prompt_ids is not None
        if len(seq.generated) >= seq.params.max_new_tokens or (
            len(seq.prompt_ids) + len(seq.generated) >= seq.ctx_limit
        ):
            self._finish(seq, "length")

    def _sample(self, logits: torch.Tensor, seqs: Sequence[SeqState]) -> list[int]:
        """Next token per row: greedy, or temperature/top-p sampling, after penalties."""
        seen = [
            (s.prompt_ids or []) + s.generated if s.params.repetition_penalty != 1.0 else None
            for s in seqs
        ]
        return sample_next(logits, [s.params for s in seqs], seen, self._rng)


def _lora_layers(model: Any) -> list[Any] | None:
    """The peft tuner layers of ``model`` whose routing :meth:`EngineLoop._peft_route` may
    set directly, or None where that is not safe (an unknown layer layout, or modules
    peft routes some other way) and peft's own calls must do it."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils import ModulesToSaveWrapper
    except ImportError:  # pragma: no cover - a peft model without peft installed
        return None
    layers: list[Any] = []
    for module in model.modules():
        if isinstance(module, ModulesToSaveWrapper):
            return None
        if isinstance(module, BaseTunerLayer):
            if not (hasattr(module, "_active_adapter") and hasattr(module, "_disable_adapters")):
                return None
            layers.append(module)
    return layers
