"""A generation backend over an OpenAI-compatible server with runtime LoRA loading.

For deployments that serve on GPUs with vLLM (``vllm serve <base> --enable-lora``
with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``): :class:`RemoteEngine` streams
``POST /v1/chat/completions`` (server-sent events, ``stream_options.include_usage``)
and loads adapters with ``POST /v1/load_lora_adapter`` / ``/v1/unload_lora_adapter``.
It implements the same :class:`~serving.types.Generator` interface as the local
engines, so the bot does not know where its replies are computed.

Guarantees, mirroring the local engine:

- every request is pinned to the adapter that was active when it started and
  records it; :meth:`RemoteEngine.activate` only swaps a pointer;
- a failed adapter load leaves serving exactly as it was;
- adapter names are never reused for different weights (``<version>-<sha8>``):
  vLLM can return stale results when a name is reloaded (vllm#42125);
- connection errors, 429 and 5xx before the first token are retried with backoff
  (``Retry-After`` honoured); after the first token an error fails the reply,
  since a half-streamed reply cannot be replayed invisibly;
- back-pressure: at most ``max_concurrency`` requests in flight plus
  ``max_queue`` waiting, then :class:`~serving.errors.EngineBusy`.

It knows nothing of Slack, Discord or the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from serving.canary import in_canary
from serving.errors import (
    AdapterError,
    EngineBusy,
    EngineClosed,
    PromptTooLong,
    ServingError,
)
from serving.types import (
    BASE_VERSION,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    ReplyStream,
)

log = logging.getLogger(__name__)

_RETRY_STATUS = {429, 500, 502, 503, 504}
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "eos": "stop"}


@dataclass(frozen=True, slots=True)
class RemoteAdapter:
    version: str
    served_name: str


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RemoteEngine:
    """Generator over an OpenAI-compatible HTTP server (vLLM)."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        replica_id: str,
        api_key: str | None = None,
        max_concurrency: int = 32,
        max_queue: int = 256,
        retries: int = 3,
        backoff_s: float = 0.25,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model_id = model
        self.replica_id = replica_id
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._slots = asyncio.Semaphore(max_concurrency)
        self._max_waiting = max_concurrency + max_queue
        self._waiting = 0
        self._retries = retries
        self._backoff_s = backoff_s
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._adapters: dict[str, RemoteAdapter] = {}
        self._active: RemoteAdapter | None = None
        self._canary: tuple[RemoteAdapter, float] | None = None
        self._closed = False

    # session --------------------------------------------------------------------
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout_s)
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=timeout)
        return self._session

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # adapters -------------------------------------------------------------------
    @property
    def active_version(self) -> str:
        return self._active.version if self._active else BASE_VERSION

    @property
    def loaded_versions(self) -> list[str]:
        return sorted(self._adapters)

    async def load_adapter(self, version: str, path: str, *, sha256: str) -> None:
        """Load an adapter on the server under a name unique to its weights."""
        if version in self._adapters:
            return
        name = f"{version}-{sha256[:8]}"
        url = f"{self.base_url}/v1/load_lora_adapter"
        try:
            async with self._http().post(url, json={"lora_name": name, "lora_path": path}) as resp:
                body = await resp.text()
                if resp.status != 200 and "already been loaded" not in body:
                    raise AdapterError(
                        f"the server refused adapter {version}: HTTP {resp.status} {body[:300]}"
                    )
        except aiohttp.ClientError as exc:
            raise AdapterError(f"cannot reach the server to load {version}: {exc}") from exc
        self._adapters[version] = RemoteAdapter(version=version, served_name=name)

    async def unload_adapter(self, version: str) -> None:
        adapter = self._adapters.get(version)
        if adapter is None:
            return
        if self._active is adapter or (self._canary and self._canary[0] is adapter):
            raise AdapterError(f"{version} is serving; activate another version first")
        url = f"{self.base_url}/v1/unload_lora_adapter"
        try:
            async with self._http().post(url, json={"lora_name": adapter.served_name}) as resp:
                if resp.status not in (200, 404):
                    raise AdapterError(f"unloading {version} failed: HTTP {resp.status}")
        except aiohttp.ClientError as exc:
            raise AdapterError(f"cannot reach the server to unload {version}: {exc}") from exc
        del self._adapters[version]

    def activate(self, version: str) -> None:
        """New requests use ``version`` (or the base model); running ones are unaffected."""
        if version == BASE_VERSION:
            self._active = None
            return
        adapter = self._adapters.get(version)
        if adapter is None:
            raise AdapterError(f"adapter {version} is not loaded")
        self._active = adapter

    def set_canary(self, version: str | None, percent: float) -> None:
        """Route ``percent`` of conversations (sticky) to ``version``; None stops it."""
        if version is None or percent <= 0:
            self._canary = None
            return
        adapter = self._adapters.get(version)
        if adapter is None:
            raise AdapterError(f"canary adapter {version} is not loaded")
        self._canary = (adapter, percent)

    def _pin(self, request: GenerationRequest) -> RemoteAdapter | None:
        canary = self._canary
        if canary and in_canary(canary[0].version, request.conversation_key, canary[1]):
            return canary[0]
        return self._active

    # generation -----------------------------------------------------------------
    def stream(self, request: GenerationRequest) -> ReplyStream:
        if self._closed:
            raise EngineClosed("the remote engine is shut down")
        if self._waiting >= self._max_waiting:
            raise EngineBusy(f"the bot is busy: {self._waiting} requests are in flight or waiting")
        out = ReplyStream(asyncio.get_running_loop())
        pinned = self._pin(request)  # the version is fixed when the request starts
        self._waiting += 1
        task = asyncio.get_running_loop().create_task(self._run(request, out, pinned))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return out

    async def _run(
        self, request: GenerationRequest, out: ReplyStream, pinned: RemoteAdapter | None
    ) -> None:
        started = time.perf_counter()
        try:
            async with self._slots:
                await self._generate(request, out, pinned, started)
        except asyncio.CancelledError:
            out.fail(EngineClosed("the engine shut down during this request"))
            raise
        except ServingError as exc:
            out.fail(exc)
        except Exception as exc:  # never let one request take the loop down
            log.exception("remote generation failed", extra={"request_id": request.request_id})
            out.fail(ServingError(f"remote generation failed: {exc}"))
        finally:
            self._waiting -= 1

    def _payload(self, request: GenerationRequest, pinned: RemoteAdapter | None) -> dict[str, Any]:
        p = request.params
        return {
            "model": pinned.served_name if pinned else self.model_id,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": p.max_new_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "repetition_penalty": p.repetition_penalty,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    async def _generate(
        self,
        request: GenerationRequest,
        out: ReplyStream,
        pinned: RemoteAdapter | None,
        started: float,
    ) -> None:
        deadline = started + request.params.timeout_s
        attempt = 0
        while True:
            state = _StreamState()
            try:
                await self._attempt(request, out, pinned, state, deadline)
                break
            except _Retryable as exc:
                attempt += 1
                if state.text or attempt > self._retries or out.cancelled:
                    raise ServingError(f"the model server failed: {exc}") from exc
                delay = (
                    exc.retry_after
                    if exc.retry_after is not None
                    else self._backoff_s * 2 ** (attempt - 1)
                )
                if time.perf_counter() + delay > deadline:
                    raise ServingError(f"the model server failed: {exc}") from exc
                log.warning(
                    "retrying the model server", extra={"attempt": attempt, "error": str(exc)}
                )
                await asyncio.sleep(delay)
        now = time.perf_counter()
        out.finish(
            GenerationResult(
                text=state.text.strip(),
                finish_reason=state.finish,
                prompt_tokens=state.prompt_tokens,
                completion_tokens=state.completion_tokens,
                latency_ms=(now - started) * 1000,
                ttft_ms=(state.first_token_at - started) * 1000 if state.first_token_at else None,
                adapter_version=pinned.version if pinned else BASE_VERSION,
                model_id=self.model_id,
                replica_id=self.replica_id,
            )
        )

    async def _attempt(
        self,
        request: GenerationRequest,
        out: ReplyStream,
        pinned: RemoteAdapter | None,
        state: _StreamState,
        deadline: float,
    ) -> None:
        url = f"{self.base_url}/v1/chat/completions"
        try:
            async with self._http().post(url, json=self._payload(request, pinned)) as resp:
                if resp.status != 200:
                    await self._raise_for(resp)
                remaining = deadline - time.perf_counter()
                try:
                    async with asyncio.timeout(max(remaining, 0.001)):
                        await self._consume(resp, out, state)
                except TimeoutError:
                    state.finish = "timeout"
        except aiohttp.ClientError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc

    async def _raise_for(self, resp: aiohttp.ClientResponse) -> None:
        body = await resp.text()
        if resp.status in _RETRY_STATUS:
            retry_after = resp.headers.get("Retry-After")
            raise _Retryable(
                f"HTTP {resp.status}",
                float(retry_after)
                if retry_after and retry_after.replace(".", "", 1).isdigit()
                else None,
            )
        lowered = body.lower()
        if resp.status == 400 and ("context length" in lowered or "too long" in lowered):
            raise PromptTooLong(f"the model server says the prompt is too long: {body[:200]}")
        raise ServingError(f"the model server answered HTTP {resp.status}: {body[:300]}")

    async def _consume(
        self, resp: aiohttp.ClientResponse, out: ReplyStream, state: _StreamState
    ) -> None:
        async for raw in resp.content:
            if out.cancelled:
                state.finish = "cancelled"
                return
            line = raw.decode("utf-8", errors="replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError as exc:
                raise ServingError(f"the model server sent malformed data: {data[:100]!r}") from exc
            if "error" in chunk:
                raise ServingError(f"the model server failed mid-stream: {chunk['error']}")
            usage = chunk.get("usage")
            if usage:
                state.prompt_tokens = int(usage.get("prompt_tokens", 0))
                state.completion_tokens = int(usage.get("completion_tokens", 0))
            for choice in chunk.get("choices") or []:
                delta = (choice.get("delta") or {}).get("content") or ""
                if delta:
                    if state.first_token_at is None:
                        state.first_token_at = time.perf_counter()
                    state.text += delta
                    out.push(delta)
                reason = choice.get("finish_reason")
                if reason:
                    state.finish = _FINISH.get(reason, "stop")
        if state.finish == "error":
            raise _Retryable("the stream ended before the reply was complete")


@dataclass
class _StreamState:
    text: str = ""
    finish: FinishReason = "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_at: float | None = None


__all__ = ["RemoteEngine"]
