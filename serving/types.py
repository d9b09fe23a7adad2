"""Value types shared by every generation backend.

A backend (the naive reference in ``serving.naive``, the batching engine in
``serving.engine``, the remote OpenAI-compatible client) takes a
:class:`GenerationRequest` and returns a :class:`ReplyStream`: an async iterator of
text deltas whose :meth:`ReplyStream.result` gives the final
:class:`GenerationResult` (text, token counts, latency, adapter version).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "timeout", "cancelled", "error"]

BASE_VERSION = "base"
"""Adapter version name of the bare base model (no adapter)."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn of a conversation as the model sees it."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Limits and sampling settings of one request."""

    max_new_tokens: int = 256
    max_context_tokens: int = 2048
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.max_context_tokens <= self.max_new_tokens:
            raise ValueError("max_context_tokens must be larger than max_new_tokens")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0 (0 means greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")


@dataclass(frozen=True, slots=True)
class MemoryItem:
    """One approved question/answer pair placed in a prompt from the answer memory.

    ``entry_id`` is the ``memory_entries`` row (0 for pairs that are not stored, e.g.
    a training example's distractor built elsewhere); ``score`` is the retrieval score
    (hybrid of cosine and lexical, 0..1).
    """

    entry_id: int
    question: str
    answer: str
    score: float = 0.0


def _new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What to generate: the conversation (system prompt first) and its limits.

    ``conversation_key`` identifies the conversation for sticky canary routing.
    """

    messages: tuple[ChatMessage, ...]
    params: GenerationParams = field(default_factory=GenerationParams)
    conversation_key: str = ""
    request_id: str = field(default_factory=_new_request_id)


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """The finished reply and everything needed to trace it."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    ttft_ms: float | None
    adapter_version: str
    model_id: str
    replica_id: str
    dropped_turns: int = 0


class ReplyStream:
    """Async iterator of text deltas of one reply, plus its final result.

    The producer (a backend) calls :meth:`push`, then exactly one of :meth:`finish`
    or :meth:`fail`. The consumer iterates for deltas, then awaits :meth:`result`.
    Calling :meth:`cancel` tells the producer that the consumer went away.
    Producers may run on another thread: every producer method is thread-safe.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._done: asyncio.Future[GenerationResult] = self._loop.create_future()
        self.cancelled = False

    # producer side -------------------------------------------------------------
    def push(self, delta: str) -> None:
        if delta:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, delta)

    def finish(self, result: GenerationResult) -> None:
        self._loop.call_soon_threadsafe(self._settle, result, None)

    def fail(self, exc: BaseException) -> None:
        self._loop.call_soon_threadsafe(self._settle, None, exc)

    def _settle(self, result: GenerationResult | None, exc: BaseException | None) -> None:
        if self._done.done():
            return
        if exc is not None:
            self._done.set_exception(exc)
        else:
            assert result is not None
            self._done.set_result(result)
        self._queue.put_nowait(None)

    # consumer side -------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the producer to stop; it finishes with ``finish_reason="cancelled"``."""
        self.cancelled = True

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    async def result(self) -> GenerationResult:
        """The final result; raises the backend's error if generation failed."""
        return await self._done


class Generator(Protocol):
    """What the bot core needs from a generation backend."""

    model_id: str

    def stream(self, request: GenerationRequest) -> ReplyStream:
        """Start generating; returns at once. Raises EngineBusy/EngineClosed."""
        ...

    @property
    def active_version(self) -> str:
        """The adapter version new requests are pinned to (``"base"`` for none)."""
        ...

    async def aclose(self) -> None:
        """Stop accepting requests and release the model."""
        ...
