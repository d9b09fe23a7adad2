"""A local fake of Slack's Web API, plus signed request builders for Slack's HTTP callbacks.

``FakeSlackAPI`` is an aiohttp server running on its own event loop in a background thread,
so the same instance serves the sync ``slack_sdk.WebClient`` (urllib) and the async
``AsyncWebClient`` (aiohttp), from sync and async tests alike::

    with FakeSlackAPI() as api:
        client = WebClient(token=api.bot_token, base_url=api.url)
        client.chat_postMessage(channel="C1", text="hi")
        assert api.messages("C1")[0]["text"] == "hi"

It speaks the Web API the way slack_sdk calls it: ``POST``/``GET`` on ``/api/<method>``,
arguments in the query string, a form-encoded, JSON or multipart body, the token as
``Authorization: Bearer ...`` (or a ``token`` argument); every answer is HTTP 200 with a JSON
``{"ok": ...}`` body unless a failure was injected. A missing or unknown token gets
``{"ok": false, "error": "not_authed" | "invalid_auth"}``.

Covered methods (enough state to be checked, see each ``_m_*`` handler): auth.test,
chat.postMessage / update / delete / postEphemeral / getPermalink, conversations.open / info /
replies / history, users.info, reactions.add / remove, views.open / update / push / publish,
apps.connections.open (see Socket Mode below). Any other method answers ``{"ok": true}`` and
is recorded, so the tests can see it.

Socket Mode: ``apps.connections.open`` called with the app-level token (``api.app_token``,
``xapp-...``) answers a one-time ``ws://.../link/?ticket=...`` URL; with a bot token it
answers ``not_allowed_token_type``, as Slack does. A client connecting there gets
``{"type": "hello", ...}``; the test then pushes envelopes with ``send_envelope`` /
``async_send_envelope`` (``{"envelope_id", "type", "payload", "accepts_response_payload"}``,
built by ``socket_mode_envelope``) and reads the client's acknowledgements
(``{"envelope_id", "payload"?}``) with ``socket_acks`` / ``async_wait_for_ack``. This is the
protocol slack_sdk's ``SocketModeClient`` (and slack-bolt's ``AsyncSocketModeHandler``)
speak; Slack's ``disconnect`` / refresh messages and multiple connections per app are not
modelled.

Every call is recorded (``calls``, ``wait_for``, ``async_wait_for``); channels keep their
messages (``messages``) so edits, deletions, thread replies and reactions are visible.
Failures are injected per method with ``fail_next`` (HTTP 429 with ``Retry-After``, HTTP 5xx,
or an HTTP 200 ``ok: false`` error such as ``ratelimited``).

Deliberately not covered: files.* uploads (recorded, not stored), pagination cursors,
scopes and per-channel membership or permission checks (every channel exists and the bot is
in it), Socket Mode's disconnect/refresh cycle, OAuth, and Slack's real rate limits (only
injected ones).

The module-level builders produce what Slack *sends to the app* over HTTP (Events API
envelopes, interactivity payloads, slash commands), with ``sign_slack_request`` computing
the ``X-Slack-Signature`` v0 headers that Bolt verifies. Shapes follow docs.slack.dev:
"Events API", "block_actions payload", "message_actions", "view_submission", "slash commands".
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web

__all__ = [
    "DEFAULT_APP_ID",
    "DEFAULT_APP_TOKEN",
    "DEFAULT_BOT_ID",
    "DEFAULT_BOT_TOKEN",
    "DEFAULT_BOT_USER_ID",
    "DEFAULT_CHANNEL_ID",
    "DEFAULT_DM_CHANNEL_ID",
    "DEFAULT_TEAM_ID",
    "DEFAULT_USER_ID",
    "FORM_CONTENT_TYPE",
    "JSON_CONTENT_TYPE",
    "FakeSlackAPI",
    "RecordedCall",
    "app_mention_event",
    "block_actions_payload",
    "event_callback",
    "message_event",
    "message_shortcut_payload",
    "new_ts",
    "parse_form_payload",
    "reaction_added_event",
    "sign_slack_request",
    "signed_request",
    "slash_command_body",
    "socket_mode_envelope",
    "view_submission_payload",
]

DEFAULT_BOT_TOKEN = "xoxb-0000000000-fake-bot-token"
DEFAULT_APP_TOKEN = "xapp-1-A0000FAKE-0000000000-fake-app-token"
DEFAULT_TEAM_ID = "T0000FAKE"
DEFAULT_TEAM_DOMAIN = "fake-team"
DEFAULT_APP_ID = "A0000FAKE"
DEFAULT_BOT_USER_ID = "U0000BOT1"
DEFAULT_BOT_ID = "B0000BOT1"
DEFAULT_USER_ID = "U0000USR1"
DEFAULT_USER_NAME = "alice"
DEFAULT_CHANNEL_ID = "C0000CHN1"
DEFAULT_DM_CHANNEL_ID = "D0000DM01"
VERIFICATION_TOKEN = "fake-verification-token"

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE = "application/json"

# Arguments that slack_sdk sends JSON-encoded inside form bodies (and natively inside JSON bodies).
_JSON_ARGS = frozenset({"blocks", "attachments", "view", "metadata", "user_auth_blocks", "users"})


# --------------------------------------------------------------------------------------
# timestamps and ids
# --------------------------------------------------------------------------------------

_ts_lock = threading.Lock()
_last_ts = [0]


def new_ts() -> str:
    """A Slack message timestamp ("1700000000.000100"), strictly increasing in this process."""
    with _ts_lock:
        micros = max(int(time.time() * 1_000_000), _last_ts[0] + 1)
        _last_ts[0] = micros
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}{next(_ids):08X}"


# --------------------------------------------------------------------------------------
# recorded calls and injected failures
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedCall:
    """One Web API request as the fake received and answered it.

    ``args`` merges query string and body; JSON-valued arguments (``blocks``, ``view``...)
    are decoded even when they came form-encoded, so tests compare native structures.
    """

    method: str
    args: dict[str, Any]
    headers: dict[str, str]  # as the client spelled them
    http_method: str
    content_type: str
    status: int
    response: dict[str, Any]

    @property
    def ok(self) -> bool:
        """True when the fake answered HTTP 200 with ``"ok": true``."""
        return self.status == 200 and bool(self.response.get("ok"))

    @property
    def token(self) -> str | None:
        """The token the call carried (Bearer header first, then a ``token`` argument)."""
        auth = next((v for k, v in self.headers.items() if k.lower() == "authorization"), "")
        if auth.startswith("Bearer "):
            return auth.removeprefix("Bearer ")
        token = self.args.get("token")
        return token if isinstance(token, str) else None


@dataclass
class _Failure:
    method: str
    status: int
    retry_after: int | None
    error: str
    times: int


class _SlackError(Exception):
    """Raised by a method handler: becomes ``{"ok": false, "error": ...}`` (HTTP 200)."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


# --------------------------------------------------------------------------------------
# the fake
# --------------------------------------------------------------------------------------


@dataclass
class _Channel:
    id: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    ephemeral: list[dict[str, Any]] = field(default_factory=list)


class FakeSlackAPI:
    """A fake ``https://slack.com/api/`` on ``http://127.0.0.1:<free port>/api/``.

    Use as ``with FakeSlackAPI() as api:`` (or ``async with``) and give slack_sdk
    ``base_url=api.url`` and ``token=api.bot_token``. The server thread is started on enter
    and stopped on exit; all public methods are thread-safe.
    """

    def __init__(
        self,
        *,
        bot_token: str = DEFAULT_BOT_TOKEN,
        app_token: str = DEFAULT_APP_TOKEN,
        extra_tokens: Mapping[str, str] | None = None,
        team_id: str = DEFAULT_TEAM_ID,
        team_domain: str = DEFAULT_TEAM_DOMAIN,
        app_id: str = DEFAULT_APP_ID,
        bot_user_id: str = DEFAULT_BOT_USER_ID,
        bot_id: str = DEFAULT_BOT_ID,
        users: Mapping[str, Mapping[str, Any]] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """Configure the workspace the fake pretends to be.

        ``extra_tokens`` maps more accepted tokens (e.g. a ``xoxp-`` user token) to the user
        id that ``auth.test`` reports for them. ``users`` maps user ids to ``users.info``
        objects (merged over defaults); the bot user and ``DEFAULT_USER_ID`` ("alice") exist
        unless overridden.
        """
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.team_domain = team_domain
        self.app_id = app_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.host = host
        self._tokens: dict[str, str] = {bot_token: bot_user_id, **(extra_tokens or {})}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._calls: list[RecordedCall] = []
        self._failures: list[_Failure] = []
        self._channels: dict[str, _Channel] = {}
        self._views: dict[str, dict[str, Any]] = {}
        self._users: dict[str, dict[str, Any]] = {}
        self.add_user(bot_user_id, "fakebot", is_bot=True)
        self.add_user(DEFAULT_USER_ID, DEFAULT_USER_NAME)
        for user_id, info in (users or {}).items():
            extra = dict(info)
            name = str(extra.pop("name", user_id.lower()))
            self.add_user(user_id, name, is_bot=bool(extra.pop("is_bot", False)), **extra)
        self._tickets: set[str] = set()
        self._sockets: set[web.WebSocketResponse] = set()
        self._socket_connections = 0
        self._socket_received: list[dict[str, Any]] = []
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._handlers: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
            "auth.test": self._m_auth_test,
            "apps.connections.open": self._m_apps_connections_open,
            "chat.postMessage": self._m_chat_post_message,
            "chat.update": self._m_chat_update,
            "chat.delete": self._m_chat_delete,
            "chat.postEphemeral": self._m_chat_post_ephemeral,
            "chat.getPermalink": self._m_chat_get_permalink,
            "conversations.open": self._m_conversations_open,
            "conversations.info": self._m_conversations_info,
            "conversations.replies": self._m_conversations_replies,
            "conversations.history": self._m_conversations_history,
            "users.info": self._m_users_info,
            "reactions.add": self._m_reactions_add,
            "reactions.remove": self._m_reactions_remove,
            "views.open": self._m_views_open,
            "views.push": self._m_views_open,
            "views.update": self._m_views_update,
            "views.publish": self._m_views_publish,
        }

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL to give slack_sdk (``base_url=``), ending in ``/api/``."""
        return f"http://{self.host}:{self._require_port()}/api/"

    def response_url(self, name: str = "default") -> str:
        """A ``response_url`` served by the fake, for the payload builders.

        Posts to it (Bolt's ``respond()``) are recorded as calls of method
        ``"response_url"`` with the JSON body as ``args`` (plus ``args["_path"]``).
        """
        return f"http://{self.host}:{self._require_port()}/hooks/{name}"

    def _require_port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeSlackAPI is not started")
        return self._port

    def start(self) -> FakeSlackAPI:
        """Bind a free port and serve from a daemon thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("FakeSlackAPI already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(128)
        sock.setblocking(False)
        self._port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        self._loop = loop
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                app = web.Application()
                app.router.add_route("*", "/api/{method}", self._handle)
                app.router.add_post("/hooks/{path:.*}", self._handle_hook)
                app.router.add_get("/link/", self._handle_socket)
                runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
                loop.run_until_complete(runner.setup())
                loop.run_until_complete(web.SockSite(runner, sock).start())
                self._runner = runner
            except BaseException as exc:  # surfaced to start()
                failure.append(exc)
                sock.close()
                loop.close()
                started.set()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(runner.cleanup())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=serve, name="FakeSlackAPI", daemon=True)
        self._thread.start()
        if not started.wait(10) or failure:
            self._thread.join(5)
            self._thread = None
            cause = failure[0] if failure else None
            raise RuntimeError("FakeSlackAPI failed to start") from cause
        return self

    def stop(self) -> None:
        """Stop serving: close connections, the listening socket and the loop; join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if self._sockets:  # close Socket Mode connections cleanly before the loop stops
            closing = asyncio.run_coroutine_threadsafe(self._close_sockets(), loop)
            with contextlib.suppress(Exception):
                closing.result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if thread.is_alive():
            raise RuntimeError("FakeSlackAPI thread did not stop")
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeSlackAPI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> FakeSlackAPI:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # stop() joins a thread for a few milliseconds; do it off the caller's loop.
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    # ---- test-facing state -----------------------------------------------------------

    def add_user(self, user_id: str, name: str, *, is_bot: bool = False, **extra: Any) -> None:
        """Make ``users.info`` know a user (``extra`` is merged over the built user object)."""
        user: dict[str, Any] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "real_name": name.title(),
            "tz": "Europe/Berlin",
            "tz_label": "Central European Time",
            "tz_offset": 3600,
            "is_admin": False,
            "is_owner": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": int(time.time()),
            "profile": {
                "real_name": name.title(),
                "display_name": name,
                "real_name_normalized": name.title(),
                "display_name_normalized": name,
                "team": self.team_id,
                "image_48": f"https://example.invalid/{user_id}_48.png",
            },
        }
        if is_bot:
            user["profile"]["bot_id"] = self.bot_id
        user.update(extra)
        with self._lock:
            self._users[user_id] = user

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str = DEFAULT_USER_ID,
        thread_ts: str | None = None,
        ts: str | None = None,
        **extra: Any,
    ) -> str:
        """Seed a (human) message, e.g. the parent of a thread for ``conversations.replies``."""
        message: dict[str, Any] = {
            "type": "message",
            "user": user,
            "text": text,
            "ts": ts or new_ts(),
            "team": self.team_id,
        }
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
        message.update(extra)
        with self._changed:
            self._channel(channel).messages.append(message)
            self._changed.notify_all()
        return str(message["ts"])

    def calls(self, method: str | None = None, *, ok: bool | None = None) -> list[RecordedCall]:
        """Recorded calls, oldest first, optionally only of ``method`` and/or ``ok`` outcome."""
        with self._lock:
            return [
                c
                for c in self._calls
                if (method is None or c.method == method) and (ok is None or c.ok == ok)
            ]

    def wait_for(
        self,
        method: str,
        count: int = 1,
        timeout: float = 5.0,
        *,
        ok: bool | None = None,
        where: Callable[[RecordedCall], bool] | None = None,
    ) -> list[RecordedCall]:
        """Block until ``count`` matching calls were recorded; return them all.

        Raises ``TimeoutError`` (listing what was received) after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = self._matching(method, ok, where)
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(self._timeout_message(method, count, found))
                self._changed.wait(remaining)

    async def async_wait_for(
        self,
        method: str,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - a polling deadline, mirrors wait_for()
        *,
        ok: bool | None = None,
        where: Callable[[RecordedCall], bool] | None = None,
    ) -> list[RecordedCall]:
        """``wait_for`` for async tests: polls without blocking the running event loop."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = self._matching(method, ok, where)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(self._timeout_message(method, count, found))
            await asyncio.sleep(0.01)

    def messages(self, channel: str, *, thread_ts: str | None = None) -> list[dict[str, Any]]:
        """Current messages of ``channel`` (copies, oldest first), after edits and deletions.

        Each has ``ts``, ``text``, ``user``, and where set ``blocks``, ``thread_ts``,
        ``edited``, ``reactions`` (``[{"name", "users", "count"}]``), ``metadata``.
        With ``thread_ts``: only that thread (parent and replies).
        """
        with self._lock:
            msgs = list(self._channels[channel].messages) if channel in self._channels else []
            if thread_ts is not None:
                msgs = [m for m in msgs if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts]
            return copy.deepcopy(msgs)

    def ephemeral_messages(self, channel: str) -> list[dict[str, Any]]:
        """Messages sent with ``chat.postEphemeral`` to ``channel`` (each has ``user``)."""
        with self._lock:
            chan = self._channels.get(channel)
            return copy.deepcopy(chan.ephemeral) if chan else []

    def views(self) -> list[dict[str, Any]]:
        """Views opened, pushed or published (latest version of each), oldest first."""
        with self._lock:
            return copy.deepcopy(list(self._views.values()))

    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: int | None = 1,
        error: str | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail (``"*"``: any method).

        ``status=429``: HTTP 429, header ``Retry-After: <retry_after>`` (whole seconds, as
        Slack sends it; slack_sdk's RateLimitErrorRetryHandler sleeps that plus up to 1 s),
        body ``{"ok": false, "error": "ratelimited"}``. ``status>=500``: that status with
        ``{"ok": false, "error": "internal_error"}``. ``status=200``: HTTP 200 with
        ``{"ok": false, "error": error}`` (e.g. ``"ratelimited"``, ``"channel_not_found"``).
        ``error`` overrides the error string in every case.
        """
        if status not in (200, 429) and status < 400:
            raise ValueError(f"status must be 200, 429 or an HTTP error, not {status}")
        default = {200: "fatal_error", 429: "ratelimited"}.get(status, "internal_error")
        with self._lock:
            self._failures.append(_Failure(method, status, retry_after, error or default, times))

    def reset(self) -> None:
        """Forget recorded calls, pending failures, messages and views (users stay)."""
        with self._lock:
            self._calls.clear()
            self._failures.clear()
            self._channels.clear()
            self._views.clear()

    # ---- Socket Mode -----------------------------------------------------------------

    @property
    def socket_connections(self) -> int:
        """How many Socket Mode websockets are open now."""
        with self._lock:
            return len(self._sockets)

    @property
    def socket_connections_opened(self) -> int:
        """How many Socket Mode websockets were opened so far."""
        with self._lock:
            return self._socket_connections

    async def async_wait_socket_connected(
        self,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - a polling deadline, mirrors wait_for()
    ) -> None:
        """Wait until ``count`` Socket Mode connections are open (and greeted)."""
        deadline = time.monotonic() + timeout
        while self.socket_connections < count:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"waited for {count} Socket Mode connection(s)")
            await asyncio.sleep(0.01)

    def send_envelope(self, envelope: Mapping[str, Any], timeout: float = 5.0) -> str:
        """Push one envelope to every open Socket Mode connection; its ``envelope_id``.

        Raises ``RuntimeError`` when no client is connected (Slack would queue it).
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("FakeSlackAPI is not started")
        future = asyncio.run_coroutine_threadsafe(self._broadcast(json.dumps(envelope)), loop)
        if not future.result(timeout):
            raise RuntimeError("no Socket Mode client is connected")
        return str(envelope["envelope_id"])

    async def async_send_envelope(self, envelope: Mapping[str, Any]) -> str:
        """``send_envelope`` for async tests (does not block the running loop)."""
        return await asyncio.get_running_loop().run_in_executor(None, self.send_envelope, envelope)

    def socket_acks(self, envelope_id: str | None = None) -> list[dict[str, Any]]:
        """What the clients sent back over Socket Mode (acks), oldest first."""
        with self._lock:
            return [
                copy.deepcopy(m)
                for m in self._socket_received
                if envelope_id is None or m.get("envelope_id") == envelope_id
            ]

    async def async_wait_for_ack(
        self,
        envelope_id: str,
        timeout: float = 5.0,  # noqa: ASYNC109 - a polling deadline, mirrors wait_for()
    ) -> dict[str, Any]:
        """Wait for the client's acknowledgement of ``envelope_id``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            acks = self.socket_acks(envelope_id)
            if acks:
                return acks[0]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no Socket Mode ack for {envelope_id}")
            await asyncio.sleep(0.01)

    # ---- internals: matching ---------------------------------------------------------

    def _matching(
        self, method: str, ok: bool | None, where: Callable[[RecordedCall], bool] | None
    ) -> list[RecordedCall]:
        return [
            c
            for c in self._calls
            if c.method == method and (ok is None or c.ok == ok) and (where is None or where(c))
        ]

    def _timeout_message(self, method: str, count: int, found: list[RecordedCall]) -> str:
        seen = [c.method for c in self.calls()]
        return f"waited for {count} x {method}, got {len(found)}; all calls so far: {seen}"

    def _channel(self, channel_id: str) -> _Channel:
        chan = self._channels.get(channel_id)
        if chan is None:
            chan = self._channels[channel_id] = _Channel(channel_id)
        return chan

    def _find_message(self, channel_id: str, ts: str) -> dict[str, Any] | None:
        chan = self._channels.get(channel_id)
        if chan is None:
            return None
        return next((m for m in chan.messages if m["ts"] == ts), None)

    # ---- internals: HTTP -------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        content_type = request.content_type
        if request.body_exists:
            if content_type == "application/json":
                body = await request.json()
                if isinstance(body, dict):
                    args.update(body)
            elif content_type == "multipart/form-data":
                form = await request.post()
                for key, value in form.items():
                    args[key] = value if isinstance(value, str) else "<file>"
            else:
                raw = await request.read()
                args.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        for key in _JSON_ARGS & args.keys():
            if isinstance(args[key], str) and args[key][:1] in ("[", "{"):
                with contextlib.suppress(ValueError):
                    args[key] = json.loads(args[key])
        headers = dict(request.headers)
        with self._changed:
            status, extra_headers, response = self._respond(method, args, request.headers)
            self._calls.append(
                RecordedCall(
                    method=method,
                    args=args,
                    headers=headers,
                    http_method=request.method,
                    content_type=content_type,
                    status=status,
                    response=response,
                )
            )
            self._changed.notify_all()
        extra_headers["x-slack-req-id"] = uuid.uuid4().hex
        return web.json_response(response, status=status, headers=extra_headers)

    async def _handle_hook(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = {"_raw": await request.text()}
        args = dict(body) if isinstance(body, dict) else {"_raw": body}
        args["_path"] = request.match_info["path"]
        response = {"ok": True}
        with self._changed:
            self._calls.append(
                RecordedCall(
                    method="response_url",
                    args=args,
                    headers=dict(request.headers),
                    http_method=request.method,
                    content_type=request.content_type,
                    status=200,
                    response=response,
                )
            )
            self._changed.notify_all()
        return web.json_response(response)

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        with self._lock:
            known = ticket in self._tickets
            self._tickets.discard(ticket)  # a ticket opens one connection
        if not known:
            return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        hello = {
            "type": "hello",
            "num_connections": 1,
            "debug_info": {
                "host": "fake-socket-mode",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": self.app_id},
        }
        await ws.send_str(json.dumps(hello))
        with self._changed:
            self._sockets.add(ws)
            self._socket_connections += 1
            self._changed.notify_all()
        try:
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(message.data)
                except ValueError:
                    data = {"_raw": message.data}
                with self._changed:
                    self._socket_received.append(data if isinstance(data, dict) else {"_raw": data})
                    self._changed.notify_all()
        finally:
            with self._changed:
                self._sockets.discard(ws)
                self._changed.notify_all()
        return ws

    async def _broadcast(self, text: str) -> bool:
        with self._lock:
            sockets = [ws for ws in self._sockets if not ws.closed]
        for ws in sockets:
            await ws.send_str(text)
        return bool(sockets)

    async def _close_sockets(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"fake shutting down")

    def _socket_url(self) -> str:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return f"ws://{self.host}:{self._require_port()}/link/?ticket={ticket}&app_id={self.app_id}"

    def _respond(
        self, method: str, args: dict[str, Any], headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        for failure in self._failures:
            if failure.method in (method, "*"):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                extra: dict[str, str] = {}
                if failure.status == 429:
                    extra["Retry-After"] = str(failure.retry_after or 0)
                return failure.status, extra, {"ok": False, "error": failure.error}
        auth = headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.get("token")
        if not token:
            return 200, {}, {"ok": False, "error": "not_authed"}
        if token == self.app_token:  # an app-level token opens Socket Mode, nothing else
            if method != "apps.connections.open":
                return 200, {}, {"ok": False, "error": "not_allowed_token_type"}
            return 200, {}, {"ok": True, "url": self._socket_url()}
        if token not in self._tokens:
            return 200, {}, {"ok": False, "error": "invalid_auth"}
        handler = self._handlers.get(method)
        try:
            body = handler(args, self._tokens[token]) if handler else {}
        except _SlackError as err:
            return 200, {}, {"ok": False, "error": err.error, **err.extra}
        extra = {
            "x-oauth-scopes": "app_mentions:read,channels:history,chat:write,commands,"
            "im:history,reactions:read,reactions:write,users:read"
        }
        return 200, extra, {"ok": True, **body}

    # ---- internals: methods ----------------------------------------------------------

    @staticmethod
    def _require(args: Mapping[str, Any], *names: str) -> None:
        for name in names:
            if not args.get(name):
                raise _SlackError(
                    "invalid_arguments",
                    response_metadata={"messages": [f"[ERROR] missing required field: {name}"]},
                )

    def _resolve_channel(self, channel: str) -> str:
        """A user id as channel means "DM with that user" (Slack answers with a D id)."""
        if channel.startswith(("U", "W")):
            return "D" + channel[1:]
        return channel

    def _m_auth_test(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": "Fake Team",
            "user": self._users.get(user_id, {}).get("name", user_id),
            "team_id": self.team_id,
            "user_id": user_id,
            "is_enterprise_install": False,
        }
        if user_id == self.bot_user_id:
            body["bot_id"] = self.bot_id
        return body

    def _m_apps_connections_open(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        raise _SlackError("not_allowed_token_type")  # a bot or user token; see _respond

    def _bot_message(self, args: Mapping[str, Any]) -> dict[str, Any]:
        if not (args.get("text") or args.get("blocks") or args.get("attachments")):
            raise _SlackError("no_text")
        message: dict[str, Any] = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "text": args.get("text", ""),
            "team": self.team_id,
            "ts": new_ts(),
            "bot_profile": {
                "id": self.bot_id,
                "app_id": self.app_id,
                "name": "fakebot",
                "team_id": self.team_id,
                "deleted": False,
            },
        }
        for key in ("blocks", "attachments", "metadata"):
            if args.get(key):
                message[key] = args[key]
        if args.get("thread_ts"):
            message["thread_ts"] = str(args["thread_ts"])
        return message

    def _m_chat_post_message(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        self._require(args, "channel")
        channel = self._resolve_channel(str(args["channel"]))
        message = self._bot_message(args)
        self._channel(channel).messages.append(message)
        return {"channel": channel, "ts": message["ts"], "message": copy.deepcopy(message)}

    def _m_chat_update(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        self._require(args, "channel", "ts")
        channel = self._resolve_channel(str(args["channel"]))
        message = self._find_message(channel, str(args["ts"]))
        if message is None:
            raise _SlackError("message_not_found")
        if message.get("user") != user_id:
            raise _SlackError("cant_update_message")
        for key in ("text", "blocks", "attachments", "metadata"):
            if key in args:
                message[key] = args[key]
        message["edited"] = {"user": user_id, "ts": new_ts()}
        return {
            "channel": channel,
            "ts": message["ts"],
            "text": message.get("text", ""),
            "message": copy.deepcopy(message),
        }

    def _m_chat_delete(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        self._require(args, "channel", "ts")
        channel = self._resolve_channel(str(args["channel"]))
        message = self._find_message(channel, str(args["ts"]))
        if message is None:
            raise _SlackError("message_not_found")
        self._channels[channel].messages.remove(message)
        return {"channel": channel, "ts": message["ts"]}

    def _m_chat_post_ephemeral(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        self._require(args, "channel", "user")
        channel = self._resolve_channel(str(args["channel"]))
        message = self._bot_message(args)
        message["recipient"] = str(args["user"])
        self._channel(channel).ephemeral.append(message)
        return {"message_ts": message["ts"]}

    def _m_chat_get_permalink(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        self._require(args, "channel", "message_ts")
        ts = str(args["message_ts"]).replace(".", "")
        return {
            "channel": args["channel"],
            "permalink": f"https://{self.team_domain}.slack.com/archives/{args['channel']}/p{ts}",
        }

    def _m_conversations_open(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        if args.get("channel"):
            return {"channel": {"id": args["channel"]}}
        self._require(args, "users")
        users = args["users"]
        first = users[0] if isinstance(users, list) else str(users).split(",")[0]
        return {
            "no_op": True,
            "already_open": True,
            "channel": {"id": self._resolve_channel(str(first))},
        }

    def _m_conversations_info(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        self._require(args, "channel")
        channel = str(args["channel"])
        is_im = channel.startswith("D")
        info: dict[str, Any] = {
            "id": channel,
            "created": 1_700_000_000,
            "is_channel": channel.startswith("C"),
            "is_group": channel.startswith("G"),
            "is_im": is_im,
            "is_mpim": False,
            "is_private": not channel.startswith("C"),
            "is_archived": False,
            "is_member": True,
            "context_team_id": self.team_id,
        }
        if is_im:
            info["user"] = "U" + channel[1:]
        else:
            info["name"] = channel.lower()
        return {"channel": info}

    def _m_conversations_replies(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        self._require(args, "channel", "ts")
        channel, ts = str(args["channel"]), str(args["ts"])
        parent = self._find_message(channel, ts)
        if parent is None:
            raise _SlackError("thread_not_found")
        thread_ts = str(parent.get("thread_ts", parent["ts"]))
        thread = [
            m
            for m in self._channels[channel].messages
            if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts
        ]
        out = copy.deepcopy(thread)
        replies = [m for m in out if m["ts"] != thread_ts]
        for m in out:
            if m["ts"] == thread_ts:
                m["thread_ts"] = thread_ts
                m["reply_count"] = len(replies)
                m["reply_users"] = sorted({str(r.get("user")) for r in replies})
                if replies:
                    m["latest_reply"] = replies[-1]["ts"]
        limit = int(args.get("limit") or 1000)
        return {
            "messages": out[:limit],
            "has_more": len(out) > limit,
            "response_metadata": {"next_cursor": ""},
        }

    def _m_conversations_history(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        self._require(args, "channel")
        chan = self._channels.get(str(args["channel"]))
        top = [m for m in chan.messages if m.get("thread_ts") in (None, m["ts"])] if chan else []
        limit = int(args.get("limit") or 100)
        newest_first = copy.deepcopy(top[::-1])
        return {
            "messages": newest_first[:limit],
            "has_more": len(top) > limit,
            "response_metadata": {"next_cursor": ""},
        }

    def _m_users_info(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        self._require(args, "user")
        user = self._users.get(str(args["user"]))
        if user is None:
            raise _SlackError("user_not_found")
        return {"user": copy.deepcopy(user)}

    def _reactions_of(self, args: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        self._require(args, "channel", "timestamp", "name")
        channel = self._resolve_channel(str(args["channel"]))
        message = self._find_message(channel, str(args["timestamp"]))
        if message is None:
            # Reactions on messages the fake never saw (e.g. a user message that arrived as
            # an event built by the test) are accepted: store a placeholder.
            message = {
                "type": "message",
                "ts": str(args["timestamp"]),
                "text": "",
                "placeholder": True,
            }
            self._channel(channel).messages.append(message)
            self._channel(channel).messages.sort(key=lambda m: float(m["ts"]))
        reactions: list[dict[str, Any]] = message.setdefault("reactions", [])
        return reactions, str(args["name"]).strip(":")

    def _m_reactions_add(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        reactions, name = self._reactions_of(args)
        entry = next((r for r in reactions if r["name"] == name), None)
        if entry is None:
            entry = {"name": name, "users": [], "count": 0}
            reactions.append(entry)
        if user_id in entry["users"]:
            raise _SlackError("already_reacted")
        entry["users"].append(user_id)
        entry["count"] = len(entry["users"])
        return {}

    def _m_reactions_remove(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        reactions, name = self._reactions_of(args)
        entry = next((r for r in reactions if r["name"] == name), None)
        if entry is None or user_id not in entry["users"]:
            raise _SlackError("no_reaction")
        entry["users"].remove(user_id)
        entry["count"] = len(entry["users"])
        if not entry["users"]:
            reactions.remove(entry)
        return {}

    def _store_view(self, view: Any, view_id: str | None = None, **extra: Any) -> dict[str, Any]:
        if not isinstance(view, dict):
            raise _SlackError("invalid_arguments")
        stored: dict[str, Any] = {
            "id": view_id or _new_id("V"),
            "team_id": self.team_id,
            "app_id": self.app_id,
            "bot_id": self.bot_id,
            "app_installed_team_id": self.team_id,
            "external_id": "",
            "private_metadata": "",
            "callback_id": "",
            "state": {"values": {}},
            "hash": uuid.uuid4().hex[:16],
            "previous_view_id": None,
            "root_view_id": None,
            "clear_on_close": False,
            "notify_on_close": False,
            **view,
            **extra,
        }
        stored["root_view_id"] = stored["root_view_id"] or stored["id"]
        self._views[stored["id"]] = stored
        return copy.deepcopy(stored)

    def _m_views_open(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        if not args.get("trigger_id") and not args.get("interactivity_pointer"):
            raise _SlackError("invalid_arguments")
        self._require(args, "view")
        return {"view": self._store_view(args["view"])}

    def _m_views_update(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        self._require(args, "view")
        view_id = args.get("view_id")
        if not view_id and args.get("external_id"):
            view_id = next(
                (
                    v["id"]
                    for v in self._views.values()
                    if v.get("external_id") == args["external_id"]
                ),
                None,
            )
        if not view_id or view_id not in self._views:
            raise _SlackError("not_found")
        old = self._views[str(view_id)]
        if args.get("hash") and args["hash"] != old["hash"]:
            raise _SlackError("hash_conflict")
        return {
            "view": self._store_view(args["view"], str(view_id), root_view_id=old["root_view_id"])
        }

    def _m_views_publish(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        self._require(args, "user_id", "view")
        existing = next(
            (
                v["id"]
                for v in self._views.values()
                if v.get("type") == "home" and v.get("user_id") == args["user_id"]
            ),
            None,
        )
        return {"view": self._store_view(args["view"], existing, user_id=args["user_id"])}


# --------------------------------------------------------------------------------------
# what Slack sends to the app: signing and payload builders
# --------------------------------------------------------------------------------------


def sign_slack_request(
    signing_secret: str, body: bytes | str, timestamp: int | None = None
) -> dict[str, str]:
    """The ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature`` headers Slack would send.

    Slack's v0 scheme: ``"v0=" + hex(HMAC-SHA256(secret, b"v0:" + ts + b":" + raw_body))``.
    ``timestamp`` defaults to now (Bolt rejects timestamps more than 5 minutes off).
    """
    ts = int(time.time()) if timestamp is None else int(timestamp)
    raw = body.encode("utf-8") if isinstance(body, str) else body
    base = b"v0:" + str(ts).encode("ascii") + b":" + raw
    digest = hmac.new(signing_secret.encode("utf-8"), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={digest}"}


def signed_request(
    signing_secret: str, payload: Mapping[str, Any] | str, timestamp: int | None = None
) -> tuple[str, dict[str, str]]:
    """``(body, headers)`` ready to send to the app (or wrap in ``BoltRequest``).

    A mapping is sent as JSON (Events API); a string is taken to be a form body (the
    ``*_payload`` / ``slash_command_body`` builders). Headers include Content-Type and the
    signature.
    """
    if isinstance(payload, str):
        body, content_type = payload, FORM_CONTENT_TYPE
    else:
        body, content_type = json.dumps(payload), JSON_CONTENT_TYPE
    headers = {"Content-Type": content_type, **sign_slack_request(signing_secret, body, timestamp)}
    return body, headers


def parse_form_payload(body: str) -> dict[str, Any]:
    """Decode a ``payload=<json>`` form body back into the payload dict."""
    return dict(json.loads(dict(parse_qsl(body))["payload"]))


def _form(payload: Mapping[str, Any]) -> str:
    return urlencode({"payload": json.dumps(payload)})


def _user(user: str, team_id: str) -> dict[str, Any]:
    return {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team_id}


def _team(team_id: str) -> dict[str, Any]:
    return {"id": team_id, "domain": DEFAULT_TEAM_DOMAIN}


def event_callback(
    event: Mapping[str, Any],
    *,
    event_id: str | None = None,
    team_id: str = DEFAULT_TEAM_ID,
    api_app_id: str = DEFAULT_APP_ID,
    bot_user_id: str = DEFAULT_BOT_USER_ID,
    event_time: int | None = None,
) -> dict[str, Any]:
    """The Events API envelope (``type: event_callback``) around an inner ``event``.

    Slack retries deliveries with the same ``event_id`` (and ``X-Slack-Retry-Num`` headers):
    pass the same ``event_id`` twice to test de-duplication.
    """
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "context_team_id": team_id,
        "context_enterprise_id": None,
        "api_app_id": api_app_id,
        "event": dict(event),
        "type": "event_callback",
        "event_id": event_id or _new_id("Ev"),
        "event_time": event_time if event_time is not None else int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-{uuid.uuid4().hex}",
    }


def _message_fields(
    text: str, user: str, channel: str, ts: str | None, thread_ts: str | None, team: str
) -> dict[str, Any]:
    ts = ts or new_ts()
    fields: dict[str, Any] = {
        "user": user,
        "text": text,
        "ts": ts,
        "client_msg_id": str(uuid.uuid4()),
        "team": team,
        "blocks": [
            {
                "type": "rich_text",
                "block_id": uuid.uuid4().hex[:5],
                "elements": [
                    {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
                ],
            }
        ],
        "channel": channel,
        "event_ts": ts,
    }
    if thread_ts is not None:
        fields["thread_ts"] = thread_ts
        fields["parent_user_id"] = DEFAULT_BOT_USER_ID
    return fields


def app_mention_event(
    text: str,
    *,
    user: str = DEFAULT_USER_ID,
    channel: str = DEFAULT_CHANNEL_ID,
    ts: str | None = None,
    thread_ts: str | None = None,
    bot_user_id: str = DEFAULT_BOT_USER_ID,
    team: str = DEFAULT_TEAM_ID,
) -> dict[str, Any]:
    """An ``app_mention`` event; ``<@bot_user_id>`` is prefixed to ``text`` if absent."""
    mention = f"<@{bot_user_id}>"
    if mention not in text:
        text = f"{mention} {text}"
    return {"type": "app_mention", **_message_fields(text, user, channel, ts, thread_ts, team)}


def message_event(
    text: str,
    *,
    user: str = DEFAULT_USER_ID,
    channel: str = DEFAULT_DM_CHANNEL_ID,
    channel_type: str = "im",
    ts: str | None = None,
    thread_ts: str | None = None,
    subtype: str | None = None,
    bot_id: str | None = None,
    team: str = DEFAULT_TEAM_ID,
) -> dict[str, Any]:
    """A ``message`` event (default: a DM, ``channel_type: "im"`` as in ``message.im``).

    ``bot_id`` marks a bot's own message (Slack echoes those too; bots must ignore them).
    """
    event: dict[str, Any] = {
        "type": "message",
        **_message_fields(text, user, channel, ts, thread_ts, team),
        "channel_type": channel_type,
    }
    if subtype is not None:
        event["subtype"] = subtype
    if bot_id is not None:
        event["bot_id"] = bot_id
        event.pop("client_msg_id")
    return event


def reaction_added_event(
    reaction: str,
    *,
    item_ts: str,
    user: str = DEFAULT_USER_ID,
    channel: str = DEFAULT_CHANNEL_ID,
    item_user: str = DEFAULT_BOT_USER_ID,
) -> dict[str, Any]:
    """A ``reaction_added`` event on the message ``item_ts`` (e.g. ``"+1"``, no colons)."""
    return {
        "type": "reaction_added",
        "user": user,
        "reaction": reaction.strip(":"),
        "item_user": item_user,
        "item": {"type": "message", "channel": channel, "ts": item_ts},
        "event_ts": new_ts(),
    }


def block_actions_payload(
    action_id: str,
    *,
    value: str | None = None,
    block_id: str = "actions",
    action_type: str = "button",
    user: str = DEFAULT_USER_ID,
    channel: str = DEFAULT_CHANNEL_ID,
    message: Mapping[str, Any] | None = None,
    message_ts: str | None = None,
    view: Mapping[str, Any] | None = None,
    team_id: str = DEFAULT_TEAM_ID,
    api_app_id: str = DEFAULT_APP_ID,
    response_url: str = "https://hooks.slack.com/actions/T0000FAKE/1/fake",
    **extra: Any,
) -> str:
    """A ``block_actions`` interaction as the form body Slack posts (``payload=<json>``).

    For a button on a message pass ``message`` (e.g. ``api.messages(ch)[-1]``) or
    ``message_ts``; for an element inside a modal pass ``view`` instead. ``extra`` keys
    override top-level payload fields.
    """
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": block_id,
        "type": action_type,
        "action_ts": new_ts(),
    }
    if action_type == "button":
        action["text"] = {"type": "plain_text", "text": action_id, "emoji": True}
        if value is not None:
            action["value"] = value
    elif action_type == "static_select":
        action["selected_option"] = {
            "text": {"type": "plain_text", "text": value or "", "emoji": True},
            "value": value,
        }
    elif value is not None:
        action["value"] = value
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": _user(user, team_id),
        "api_app_id": api_app_id,
        "token": VERIFICATION_TOKEN,
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}",
        "team": _team(team_id),
        "enterprise": None,
        "is_enterprise_install": False,
        "state": {"values": {}},
        "actions": [action],
    }
    if view is not None:
        payload["container"] = {"type": "view", "view_id": view.get("id", _new_id("V"))}
        payload["view"] = dict(view)
    else:
        msg = (
            dict(message)
            if message is not None
            else {
                "type": "message",
                "user": DEFAULT_BOT_USER_ID,
                "text": "",
                "ts": message_ts or new_ts(),
            }
        )
        ts = str(msg["ts"])
        payload["container"] = {
            "type": "message",
            "message_ts": ts,
            "channel_id": channel,
            "is_ephemeral": False,
        }
        payload["channel"] = {"id": channel, "name": channel.lower()}
        payload["message"] = msg
        payload["response_url"] = response_url
    payload.update(extra)
    return _form(payload)


def message_shortcut_payload(
    callback_id: str,
    *,
    message: Mapping[str, Any] | None = None,
    text: str = "",
    user: str = DEFAULT_USER_ID,
    channel: str = DEFAULT_CHANNEL_ID,
    team_id: str = DEFAULT_TEAM_ID,
    api_app_id: str = DEFAULT_APP_ID,
    **extra: Any,
) -> str:
    """A message shortcut (``type: message_action``) on ``message`` as a form body.

    Without ``message``, a human message with ``text`` from ``user`` is used.
    """
    msg = (
        dict(message)
        if message is not None
        else {
            "type": "message",
            "user": user,
            "text": text,
            "ts": new_ts(),
            "team": team_id,
        }
    )
    payload: dict[str, Any] = {
        "type": "message_action",
        "token": VERIFICATION_TOKEN,
        "action_ts": new_ts(),
        "team": _team(team_id),
        "user": _user(user, team_id),
        "channel": {"id": channel, "name": channel.lower()},
        "is_enterprise_install": False,
        "enterprise": None,
        "api_app_id": api_app_id,
        "callback_id": callback_id,
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}",
        "response_url": "https://hooks.slack.com/app/T0000FAKE/1/fake",
        "message_ts": msg["ts"],
        "message": msg,
    }
    payload.update(extra)
    return _form(payload)


def view_submission_payload(
    callback_id: str,
    values: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    *,
    private_metadata: str = "",
    view_id: str | None = None,
    user: str = DEFAULT_USER_ID,
    team_id: str = DEFAULT_TEAM_ID,
    api_app_id: str = DEFAULT_APP_ID,
    blocks: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> str:
    """A modal submission (``type: view_submission``) as a form body.

    ``values`` is ``view.state.values``: ``{block_id: {action_id: {"type": "plain_text_input",
    "value": "..."}}}``.
    """
    vid = view_id or _new_id("V")
    payload: dict[str, Any] = {
        "type": "view_submission",
        "team": _team(team_id),
        "user": _user(user, team_id),
        "api_app_id": api_app_id,
        "token": VERIFICATION_TOKEN,
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}",
        "view": {
            "id": vid,
            "team_id": team_id,
            "type": "modal",
            "blocks": blocks or [],
            "private_metadata": private_metadata,
            "callback_id": callback_id,
            "state": {"values": {k: dict(v) for k, v in (values or {}).items()}},
            "hash": uuid.uuid4().hex[:16],
            "title": {"type": "plain_text", "text": "Fake", "emoji": True},
            "clear_on_close": False,
            "notify_on_close": False,
            "close": None,
            "submit": {"type": "plain_text", "text": "Submit", "emoji": True},
            "previous_view_id": None,
            "root_view_id": vid,
            "app_id": api_app_id,
            "external_id": "",
            "app_installed_team_id": team_id,
            "bot_id": DEFAULT_BOT_ID,
        },
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }
    payload.update(extra)
    return _form(payload)


def slash_command_body(
    command: str,
    text: str = "",
    *,
    user: str = DEFAULT_USER_ID,
    user_name: str = DEFAULT_USER_NAME,
    channel: str = DEFAULT_CHANNEL_ID,
    channel_name: str = "general",
    team_id: str = DEFAULT_TEAM_ID,
    api_app_id: str = DEFAULT_APP_ID,
    **extra: str,
) -> str:
    """A slash command invocation: a flat form body (no ``payload=`` wrapper)."""
    fields: dict[str, str] = {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "team_domain": DEFAULT_TEAM_DOMAIN,
        "channel_id": channel,
        "channel_name": channel_name,
        "user_id": user,
        "user_name": user_name,
        "command": command if command.startswith("/") else f"/{command}",
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": "https://hooks.slack.com/commands/T0000FAKE/1/fake",
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}",
    }
    fields.update(extra)
    return urlencode(fields)


def socket_mode_envelope(
    payload: Mapping[str, Any],
    *,
    envelope_type: str = "events_api",
    envelope_id: str | None = None,
    accepts_response_payload: bool | None = None,
    retry_attempt: int = 0,
    retry_reason: str = "",
) -> dict[str, Any]:
    """What Slack sends over Socket Mode around a payload.

    ``envelope_type``: ``events_api`` (``payload`` is an ``event_callback`` envelope),
    ``interactive`` (the JSON of a ``*_payload`` builder: ``parse_form_payload(body)``) or
    ``slash_commands`` (the fields of a slash command). Only events carry the retry fields;
    only interactions and commands accept a response payload by default.
    """
    envelope: dict[str, Any] = {
        "envelope_id": envelope_id or str(uuid.uuid4()),
        "type": envelope_type,
        "payload": dict(payload),
        "accepts_response_payload": (
            envelope_type != "events_api"
            if accepts_response_payload is None
            else accepts_response_payload
        ),
    }
    if envelope_type == "events_api":
        envelope["retry_attempt"] = retry_attempt
        envelope["retry_reason"] = retry_reason
    return envelope
