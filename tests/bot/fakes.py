"""Fakes at the core's boundaries: a recording reply sink and a scripted generator.

The scripted generator implements :class:`serving.types.Generator` (it is a fake
of the serving boundary, like errbot's test backend); the real engines are
exercised with tiny models elsewhere.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from serving.errors import EngineBusy, ServingError
from serving.types import GenerationRequest, GenerationResult, ReplyStream


@dataclass
class RecordingSink:
    deltas: list[str] = field(default_factory=list)
    finals: list[tuple[str, int]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    platform_id: str = ""

    async def delta(self, text: str) -> None:
        self.deltas.append(text)

    async def done(self, text: str, *, reply_id: int, note: str = "") -> str:
        self.finals.append((text, reply_id))
        self.notes.append(note)
        return self.platform_id

    async def notice(self, text: str) -> None:
        self.notices.append(text)


class ScriptedGenerator:
    """Answers ``answer: <last user text>`` in two deltas; records every request."""

    model_id = "scripted"

    def __init__(self, *, version: str = "base", fail: BaseException | None = None) -> None:
        self.version = version
        self.fail = fail
        self.requests: list[GenerationRequest] = []

    @property
    def active_version(self) -> str:
        return self.version

    def stream(self, request: GenerationRequest) -> ReplyStream:
        if isinstance(self.fail, EngineBusy):
            raise self.fail
        self.requests.append(request)
        out = ReplyStream(asyncio.get_running_loop())
        if self.fail is not None:
            out.fail(self.fail)
            return out
        text = f"answer: {request.messages[-1].content}"
        half = len(text) // 2
        out.push(text[:half])
        out.push(text[half:])
        out.finish(
            GenerationResult(
                text=text,
                finish_reason="stop",
                prompt_tokens=sum(len(m.content.split()) for m in request.messages),
                completion_tokens=len(text.split()),
                latency_ms=12.5,
                ttft_ms=3.0,
                adapter_version=self.version,
                model_id=self.model_id,
                replica_id="replica-test",
            )
        )
        return out

    async def aclose(self) -> None:
        return None


__all__ = ["RecordingSink", "ScriptedGenerator", "ServingError"]
