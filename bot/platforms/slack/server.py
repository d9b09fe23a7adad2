"""The HTTP endpoint Slack calls in Events API mode: ``POST /slack/events``.

One path takes events, interactivity (buttons, shortcuts, modals) and slash
commands, as Slack's app settings expect. For each request:

1. the signature is verified (``X-Slack-Signature``, HMAC-SHA256 with the signing
   secret over ``v0:<timestamp>:<raw body>``) and the timestamp must be within 5
   minutes: otherwise **401**, and the body is not parsed;
2. the body is parsed (JSON, ``payload=<json>`` form, or a flat form) and its
   outline checked: a signed but malformed body gets **400**;
3. slack-bolt dispatches it; listeners only acknowledge and schedule the work
   (see :mod:`bot.platforms.slack.adapter`), so Slack gets its answer well within 3 s.

Redeliveries (``X-Slack-Retry-Num``) are dispatched like first deliveries: the
core claims each event's id in the database and answers it once. The signature is
checked here rather than by slack-bolt's middleware because that one logs the
body of a request it rejects; request bodies carry personal data and are never
logged, at any level.

It knows HTTP, Slack's signing scheme and slack-bolt's request type; nothing of
the core.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
SIGNATURE_WINDOW_S = 5 * 60


def signature_ok(
    secret: str,
    raw: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    now: float | None = None,
) -> bool:
    """Slack's v0 request signature over the raw bytes, timestamp within 5 minutes.

    Computed on the bytes as received (slack_sdk's verifier decodes them first and
    fails on a body that is not UTF-8, which must be a 400, not a 401).
    """
    if not timestamp or not signature or not (timestamp.isascii() and timestamp.isdigit()):
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > SIGNATURE_WINDOW_S:
        return False
    base = b"v0:" + timestamp.encode("ascii") + b":" + raw
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


class MalformedBody(ValueError):
    """A signed request whose body is not a Slack payload."""


def _check_outline(body: dict[str, Any]) -> None:
    """Reject payloads whose fields have the wrong JSON types before bolt reads them."""
    shapes: dict[str, type | tuple[type, ...]] = {
        "type": str,
        "event": dict,
        "user": (dict, str),
        "team": (dict, str, type(None)),
        "channel": (dict, str),
        "container": dict,
        "message": dict,
        "view": dict,
        "actions": list,
        "command": str,
        "text": str,
    }
    for key, kind in shapes.items():
        if key in body and not isinstance(body[key], kind):
            raise MalformedBody(f"field {key!r} has the wrong type")
    if not body:
        raise MalformedBody("empty payload")
    if body.get("type") == "event_callback":
        event = body.get("event")
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise MalformedBody("event_callback without an event")
    if any(not isinstance(a, dict) for a in body.get("actions", [])):
        raise MalformedBody("actions must be objects")
    if not {"type", "command", "ssl_check"} & body.keys():
        raise MalformedBody("neither an event, an interaction nor a command")


def parse(raw: bytes, headers: Mapping[str, str], query: str) -> AsyncBoltRequest:
    """A verified body as slack-bolt's request; :class:`MalformedBody` if it is not one."""
    try:
        text = raw.decode("utf-8")
        plain: dict[str, str | Sequence[str]] = dict(headers)
        request = AsyncBoltRequest(body=text, query=query, headers=plain)
    except Exception as exc:  # json, form or slack-bolt's own extraction failing
        raise MalformedBody(type(exc).__name__) from exc
    if not isinstance(request.body, dict):
        raise MalformedBody("not an object")
    _check_outline(request.body)
    return request


class SlackHttpServer:
    """An aiohttp server with the one Slack endpoint. Keyword-only construction."""

    def __init__(
        self,
        *,
        app: AsyncApp,
        signing_secret: str,
        host: str = "127.0.0.1",
        port: int = 3000,
        path: str = "/slack/events",
    ) -> None:
        self.app = app
        if not signing_secret:
            raise ValueError("the Slack HTTP endpoint needs a signing secret")
        self.signing_secret = signing_secret
        self.host = host
        self.requested_port = port
        self.path = path
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        if self._port is None:
            raise RuntimeError("the Slack HTTP server is not running")
        return self._port

    def web_app(self) -> web.Application:
        application = web.Application(client_max_size=MAX_BODY_BYTES)
        application.router.add_post(self.path, self.handle)
        return application

    async def start(self) -> None:
        runner = web.AppRunner(self.web_app(), access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self._port = sockets[0].getsockname()[1] if sockets else self.requested_port
        log.info("Slack HTTP endpoint listening", extra={"host": self.host, "port": self._port})

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        retry = request.headers.get("X-Slack-Retry-Num")
        timestamp = request.headers.get("X-Slack-Request-Timestamp")
        signature = request.headers.get("X-Slack-Signature")
        if not signature_ok(self.signing_secret, raw, timestamp, signature):
            log.warning(
                "rejected a Slack request: bad signature or stale timestamp",
                extra={"remote": request.remote, "bytes": len(raw)},
            )
            return web.json_response({"error": "invalid signature"}, status=401)
        try:
            bolt_request = parse(raw, request.headers, request.query_string)
        except MalformedBody as exc:
            log.warning(
                "rejected a signed but malformed Slack request",
                extra={"problem": str(exc), "bytes": len(raw)},
            )
            return web.json_response({"error": "malformed body"}, status=400)
        if retry:
            log.info(
                "Slack redelivery",
                extra={
                    "retry_num": retry,
                    "retry_reason": request.headers.get("X-Slack-Retry-Reason", ""),
                },
            )
        bolt_response = await self.app.async_dispatch(bolt_request)
        log.debug(
            "Slack request handled",
            extra={"status": bolt_response.status, "bytes": len(raw)},
        )
        return await to_aiohttp_response(bolt_response)
