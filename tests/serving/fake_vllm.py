"""A local fake of vLLM's OpenAI-compatible server with runtime LoRA loading.

Speaks ``POST /v1/chat/completions`` (streamed as server-sent events, with a usage
chunk), ``POST /v1/load_lora_adapter`` and ``POST /v1/unload_lora_adapter``. The
reply names the model that produced it (``[<model>] ...``) so tests can see which
adapter a request was pinned to. Failure modes are injected per test: HTTP errors
with Retry-After, a connection dropped mid-stream, malformed chunks, slow tokens,
and a context-length error. It is a fake of the boundary, not of our code.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeVLLM:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/load_lora_adapter", self._load)
        app.router.add_post("/v1/unload_lora_adapter", self._unload)
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
        if not name or not path or not (Path(path) / "adapter_config.json").is_file():
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
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def _unload(self, request: web.Request) -> web.Response:
        name = (await request.json()).get("lora_name")
        if self.adapters.pop(name, None) is None:
            return web.json_response({"object": "error", "message": "not found"}, status=404)
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        model = body["model"]
        if model != self.base_model and model not in self.adapters:
            return web.json_response(
                {"object": "error", "message": f"model {model} does not exist"}, status=404
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
        for i, word in enumerate(words):
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
