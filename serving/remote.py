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
- every load uses a name never used before, ``<version>-<sha8>-<nonce>-<serial>``
  (weights hash, a random nonce per engine, a serial per load): vLLM can serve stale
  prefix-cache entries when a name is loaded again (vllm#42125), so even reloading
  the same version after an unload gets a new name;
- a load is verified before the adapter can serve: the server can answer 200 to
  ``load_lora_adapter`` for a path that does not exist, so the name must then be
  listed by ``GET /v1/models`` and answer a one-token completion; otherwise the
  name is unloaded again and :class:`~serving.errors.AdapterError` is raised;
- a failed adapter load leaves serving exactly as it was;
- promotion order (driven by :class:`serving.sync.RegistryFollower`): load the new
  name, verify it, route new requests to it, and only then unload the old name:
  :meth:`RemoteEngine.unload_adapter` takes the version out of service at once and
  unloads its name on the server after the replies pinned to it (counted per name)
  have finished, in the background (``wait=True`` waits for it);
- connection errors, 429 and 5xx before the first token are retried with backoff
  (``Retry-After`` honoured); after the first token an error fails the reply,
  since a half-streamed reply cannot be replayed invisibly;
- back-pressure: at most ``max_concurrency`` requests in flight plus
  ``max_queue`` waiting, then :class:`~serving.errors.EngineBusy`.

It knows nothing of Slack, Discord or the database.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
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
        drain_timeout_s: float = 600.0,
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
        self._nonce = secrets.token_hex(3)
        self._serial = itertools.count(1)
        self._inflight: dict[str, int] = {}  # served name -> replies pinned to it
        self._drained: dict[str, asyncio.Event] = {}
        self._unloading: set[asyncio.Task[None]] = set()
        self._drain_timeout_s = drain_timeout_s

    # session --------------------------------------------------------------------
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout_s)
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=timeout)
        return self._session

    async def aclose(self) -> None:
        """Cancel running requests and unload this engine's names from the server."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._active, self._canary = None, None
        for version in list(self._adapters):
            await self.unload_adapter(version)
        await self.drained()
        if self._session is not None:
            await self._session.close()

    async def drained(self) -> None:
        """Wait until every background unload (drain, then unload on the server) is done."""
        while self._unloading:
            await asyncio.gather(*list(self._unloading), return_exceptions=True)

    # adapters -------------------------------------------------------------------
    @property
    def active_version(self) -> str:
        return self._active.version if self._active else BASE_VERSION

    @property
    def loaded_versions(self) -> list[str]:
        return sorted(self._adapters)

    @property
    def draining(self) -> int:
        """Adapters out of service whose names wait for their replies before unloading."""
        return len(self._unloading)

    def _new_name(self, version: str, sha256: str) -> str:
        return f"{version}-{sha256[:8]}-{self._nonce}-{next(self._serial)}"

    async def load_adapter(self, version: str, path: str, *, sha256: str) -> None:
        """Load an adapter under a new name, verify it is really served, then keep it."""
        if version in self._adapters:
            return
        name = self._new_name(version, sha256)
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
        try:
            await self._verify(version, name)
        except AdapterError:
            await self._unload_name(name, attempts=1)  # do not leave a broken name behind
            raise
        self._adapters[version] = RemoteAdapter(version=version, served_name=name)
        log.info("remote adapter loaded and verified", extra={"version": version, "name": name})

    async def _verify(self, version: str, name: str) -> None:
        """The name is listed by /v1/models and answers a one-token completion."""
        try:
            async with self._http().get(f"{self.base_url}/v1/models") as resp:
                if resp.status != 200:
                    raise AdapterError(f"cannot list the server's models: HTTP {resp.status}")
                listed = {m.get("id") for m in (await resp.json()).get("data") or []}
            if name not in listed:
                raise AdapterError(
                    f"the server accepted adapter {version} but does not serve it "
                    f"({name} is not in /v1/models): is the path right on the server?"
                )
            probe = {
                "model": name,
                "messages": [{"role": "user", "content": "ping"}],
                "max_tokens": 1,
                "temperature": 0.0,
                "stream": False,
            }
            url = f"{self.base_url}/v1/chat/completions"
            async with self._http().post(url, json=probe) as resp:
                body = await resp.text()
                if resp.status != 200 or not (json.loads(body).get("choices") or []):
                    raise AdapterError(
                        f"adapter {version} is listed but cannot answer: "
                        f"HTTP {resp.status} {body[:300]}"
                    )
        except (aiohttp.ClientError, ValueError) as exc:
            raise AdapterError(f"cannot verify adapter {version}: {exc}") from exc

    async def unload_adapter(self, version: str, *, wait: bool = False) -> None:
        """Take ``version`` out of service now; unload its name once its replies finish.

        The server-side unload runs in the background after the replies pinned to the
        name have ended (at most ``drain_timeout_s``); ``wait=True`` awaits it.
        Loading the version again meanwhile uses a new name.
        """
        adapter = self._adapters.get(version)
        if adapter is None:
            return
        if self._active is adapter or (self._canary and self._canary[0] is adapter):
            raise AdapterError(f"{version} is serving; activate another version first")
        del self._adapters[version]
        task = asyncio.get_running_loop().create_task(self._drain_and_unload(adapter))
        self._unloading.add(task)
        task.add_done_callback(self._unloading.discard)
        if wait:
            await task

    async def _drain_and_unload(self, adapter: RemoteAdapter) -> None:
        name = adapter.served_name
        if self._inflight.get(name):
            event = self._drained.setdefault(name, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), self._drain_timeout_s)
            except TimeoutError:
                log.warning(
                    "replies still running on an adapter being unloaded; unloading anyway",
                    extra={"version": adapter.version, "running": self._inflight.get(name)},
                )
            finally:
                self._drained.pop(name, None)
        await self._unload_name(name)
        log.info("remote adapter unloaded", extra={"version": adapter.version, "name": name})

    async def _unload_name(self, name: str, *, attempts: int = 3) -> None:
        """Unload a name on the server; errors are logged (the name is out of service)."""
        url = f"{self.base_url}/v1/unload_lora_adapter"
        for attempt in range(attempts):
            try:
                async with self._http().post(url, json={"lora_name": name}) as resp:
                    if resp.status in (200, 404):
                        return
                    problem = f"HTTP {resp.status}"
            except aiohttp.ClientError as exc:
                problem = str(exc)
            if attempt + 1 < attempts:
                await asyncio.sleep(self._backoff_s * 2**attempt)
        log.warning("unloading a remote adapter failed", extra={"name": name, "error": problem})

    def _pinned(self, name: str) -> None:
        self._inflight[name] = self._inflight.get(name, 0) + 1

    def _unpinned(self, name: str) -> None:
        left = self._inflight.get(name, 1) - 1
        if left > 0:
            self._inflight[name] = left
            return
        self._inflight.pop(name, None)
        event = self._drained.get(name)
        if event is not None:
            event.set()

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
        if pinned is not None:  # counted until the task ends, even if it never started
            name = pinned.served_name
            self._pinned(name)
            task.add_done_callback(lambda _t: self._unpinned(name))
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
