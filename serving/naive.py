"""The reference backend: one request at a time through ``model.generate``.

This is what most tutorials deploy, and it is the baseline that
``chatloop bench serve`` measures the batching engine against. It is complete
(streaming, timeouts, cancellation, a bounded queue) so it can also serve when the
batching engine is not wanted, e.g. on a remote debugging box.

It knows nothing of platforms, storage or adapters (it always serves "base").
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from serving.detok import Detokenizer
from serving.errors import EngineBusy, EngineClosed, ServingError
from serving.model import LoadedModel
from serving.prompt import build_prompt_ids
from serving.types import (
    BASE_VERSION,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    ReplyStream,
)

log = logging.getLogger(__name__)


@dataclass
class _Job:
    request: GenerationRequest
    stream: ReplyStream
    submitted: float = field(default_factory=time.perf_counter)


class _StreamHook:
    """A transformers streamer + stopping criterion bound to one job."""

    def __init__(self, job: _Job, tokenizer: Any, deadline: float) -> None:
        self.job = job
        self.decoder = Detokenizer(tokenizer)
        self.deadline = deadline
        self.first_token_at: float | None = None
        self.prompt_seen = False
        self.stop_reason: FinishReason | None = None

    # streamer protocol (transformers.generation.streamers.BaseStreamer)
    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first puts the prompt
            self.prompt_seen = True
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.job.stream.push(self.decoder.add_many(value.reshape(-1).tolist()))

    def end(self) -> None:
        self.job.stream.push(self.decoder.flush())

    # stopping criterion
    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        if self.job.stream.cancelled:
            self.stop_reason = "cancelled"
        elif time.perf_counter() > self.deadline:
            self.stop_reason = "timeout"
        stop = self.stop_reason is not None
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class NaiveEngine:
    """Sequential ``model.generate`` on one worker thread (the baseline)."""

    def __init__(self, *, loaded: LoadedModel, replica_id: str, max_queue: int = 64) -> None:
        self.loaded = loaded
        self.model_id = loaded.model_id
        self.replica_id = replica_id
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="naive-engine", daemon=True)
        self._thread.start()

    @property
    def active_version(self) -> str:
        return BASE_VERSION

    def stream(self, request: GenerationRequest) -> ReplyStream:
        if self._closed:
            raise EngineClosed("the engine is shut down")
        out = ReplyStream(asyncio.get_running_loop())
        try:
            self._jobs.put_nowait(_Job(request, out))
        except queue.Full:
            raise EngineBusy(
                f"the bot is busy: {self._jobs.maxsize} requests are already waiting"
            ) from None
        return out

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        while True:  # fail whatever is still queued
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.stream.fail(EngineClosed("the engine shut down before this request ran"))
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join, 30)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if job.stream.cancelled:
                job.stream.finish(self._result(job, "", "cancelled", 0, 0, None))
                continue
            try:
                self._generate(job)
            except ServingError as exc:
                job.stream.fail(exc)
            except Exception as exc:
                log.exception("generation failed", extra={"request_id": job.request.request_id})
                job.stream.fail(ServingError(f"generation failed: {exc}"))

    def _generate(self, job: _Job) -> None:
        params = job.request.params
        tok = self.loaded.tokenizer
        ids, dropped = build_prompt_ids(
            tok,
            job.request.messages,
            max_prompt_tokens=params.max_context_tokens - params.max_new_tokens,
        )
        hook = _StreamHook(job, tok, job.submitted + params.timeout_s)
        input_ids = torch.tensor([ids], device=self.loaded.device)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
            if params.temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        with torch.inference_mode():
            out = self.loaded.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=params.max_new_tokens,
                repetition_penalty=params.repetition_penalty,
                eos_token_id=sorted(self.loaded.eos_token_ids) or None,
                pad_token_id=tok.pad_token_id,
                streamer=hook,
                stopping_criteria=[hook],
                **sampling,
            )
        new = out[0, len(ids) :].tolist()
        eos = self.loaded.eos_token_ids
        reason: FinishReason
        if hook.stop_reason is not None:
            reason = hook.stop_reason
        elif new and new[-1] in eos:
            reason = "stop"
        else:
            reason = "length"
        completion = len(new) - (1 if reason == "stop" else 0)
        text = tok.decode(new, skip_special_tokens=True)
        job.stream.finish(
            self._result(job, text, reason, len(ids), completion, hook.first_token_at, dropped)
        )

    def _result(
        self,
        job: _Job,
        text: str,
        reason: FinishReason,
        prompt_tokens: int,
        completion_tokens: int,
        first_token_at: float | None,
        dropped: int = 0,
    ) -> GenerationResult:
        now = time.perf_counter()
        return GenerationResult(
            text=text.strip(),
            finish_reason=reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=max(completion_tokens, 0),
            latency_ms=(now - job.submitted) * 1000,
            ttft_ms=(first_token_at - job.submitted) * 1000 if first_token_at else None,
            adapter_version=BASE_VERSION,
            model_id=self.model_id,
            replica_id=self.replica_id,
            dropped_turns=dropped,
        )
