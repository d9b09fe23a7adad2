"""A local fake of vLLM's OpenAI-compatible server with runtime LoRA loading.

Speaks ``POST /v1/chat/completions`` (streamed as server-sent events, with a usage
chunk, or as one JSON answer), ``GET /v1/models``, ``POST /v1/load_lora_adapter`` and
``POST /v1/unload_lora_adapter``. The reply names the model that produced it
(``[<model>] ...``) so tests can see which adapter a request was pinned to. Failure
modes are injected per test: HTTP errors with Retry-After, a connection dropped
mid-stream, malformed chunks, slow tokens, and a context-length error.

Like a real server, it can accept a load it did not really do (``accept_missing``):
"ghost" answers 200 for a path that does not exist and serves nothing under the name;
"lazy" answers 200, lists the name, and fails when the name is used. ``events``
records loads, unloads, verification probes and the start and end of every streamed
reply in order, and ``hold`` (an event) keeps streams whose question starts with
"hold" after their first chunk until it is set, so tests can see what happens while
a reply is in flight. It is a fake of
the boundary, not of our code.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import web


@dataclass
class Failure:
    status: int = 500
    retry_after: float | None = None
    drop_after_chunks: int | None = None
    malformed: bool = False


@dataclass
class FakeVLLM:
    base_model: str = "base-model"
    max_prompt_chars: int = 2000
    token_delay_s: float = 0.0
    adapters: dict[str, str] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    url: str = ""
    accept_missing: Literal["ghost", "lazy"] | None = None
    hold: asyncio.Event | None = None
    events: list[tuple[str, str]] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)  # names accepted lazily, not loadable
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeVLLM:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/load_lora_adapter", self._load)
        app.router.add_post("/v1/unload_lora_adapter", self._unload)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def fail_next(self, failure: Failure, times: int = 1) -> None:
        self.failures.extend([failure] * times)

    async def _load(self, request: web.Request) -> web.Response:
        body = await request.json()
        name, path = body.get("lora_name"), body.get("lora_path")
        missing = not path or not (Path(path) / "adapter_config.json").is_file()
        if name and missing and self.accept_missing is not None:
            self.events.append(("load", name))
            if self.accept_missing == "lazy":
                self.adapters[name] = str(path)
                self.broken.add(name)
            return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")
        if not name or missing:
            return web.json_response(
                {"object": "error", "message": f"No adapter found at {path}", "code": 404},
                status=404,
            )
        if name in self.adapters:
            return web.json_response(
                {
                    "object": "error",
                    "message": f"The lora adapter '{name}' has already been loaded.",
                },
                status=400,
            )
        self.adapters[name] = path
        self.events.append(("load", name))
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def _unload(self, request: web.Request) -> web.Response:
        name = (await request.json()).get("lora_name")
        self.events.append(("unload", name))
        self.broken.discard(name)
        if self.adapters.pop(name, None) is None:
            return web.json_response({"object": "error", "message": "not found"}, status=404)
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": self.base_model, "object": "model", "owned_by": "vllm"}]
        data += [
            {"id": name, "object": "model", "owned_by": "vllm", "parent": self.base_model}
            for name in self.adapters
        ]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        model = body["model"]
        if model != self.base_model and model not in self.adapters:
            return web.json_response(
                {"object": "error", "message": f"model {model} does not exist"}, status=404
            )
        if model in self.broken:
            return web.json_response(
                {"object": "error", "message": f"No adapter found at {self.adapters[model]}"},
                status=400,
            )
        if not body.get("stream"):
            self.events.append(("complete", model))
            text = f"[{model}]"
            return web.json_response(
                {
                    "object": "chat.completion",
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "length",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            )
        failure = self.failures.pop(0) if self.failures else None
        if failure and failure.drop_after_chunks is None and not failure.malformed:
            headers = (
                {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            )
            return web.json_response(
                {"object": "error", "message": "injected"}, status=failure.status, headers=headers
            )
        prompt = "".join(m["content"] for m in body["messages"])
        if len(prompt) > self.max_prompt_chars:
            return web.json_response(
                {
                    "object": "error",
                    "message": "This model's maximum context length is 2048 tokens.",
                },
                status=400,
            )
        words = f"[{model}] echo: {body['messages'][-1]['content']}".split(" ")
        words = words[: body.get("max_tokens", 256)]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self.events.append(("stream-start", model))
        try:
            return await self._stream(request, resp, body, words, prompt, failure)
        finally:
            self.events.append(("stream-end", model))

    async def _stream(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        body: dict[str, Any],
        words: list[str],
        prompt: str,
        failure: Failure | None,
    ) -> web.StreamResponse:
        for i, word in enumerate(words):
            question = str(body["messages"][-1]["content"])
            if i == 1 and self.hold is not None and question.startswith("hold"):
                await self.hold.wait()
            if failure and failure.drop_after_chunks is not None and i == failure.drop_after_chunks:
                assert request.transport is not None
                request.transport.close()
                return resp
            if failure and failure.malformed and i == 1:
                await resp.write(b"data: {not json\n\n")
                return resp
            chunk = {
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": word if i == 0 else " " + word},
                        "finish_reason": None,
                    }
                ]
            }
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
        finish = "length" if len(words) >= body.get("max_tokens", 256) else "stop"
        last = {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
        await resp.write(f"data: {json.dumps(last)}\n\n".encode())
        usage = {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len(words),
            "total_tokens": 0,
        }
        await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
