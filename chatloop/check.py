"""``chatloop run --check``: would the bot start here, and if not, what to fix.

It validates the settings, reaches the database (and reports its schema revision),
finds the model without loading or converting it, and checks the shape of the
platform tokens, then prints one table. A row is ``ok``, ``warn`` (worth a look,
does not stop a start) or ``FAIL`` (``chatloop run`` would not start or not work);
the command exits 1 when any row fails. Secrets are never printed: a token shows
at most its well-known type prefix (``set (xoxb-…)``).

It changes nothing: no schema is created, no model converted, no platform contacted.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from chatloop.schema import backend_of, refusal, safe_url, schema_state
from chatloop.settings import Settings, SettingsError, env_name, load_settings, source_name
from storage.db import head_revision, make_engine, normalize_url
from storage.errors import StorageError

Status = Literal["ok", "warn", "FAIL"]

CONNECT_TIMEOUT_S = 5
"""How long the check waits for a PostgreSQL server to answer."""

_DISCORD_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{20,}")
_SLACK_SIGNING_SECRET = re.compile(r"[0-9a-f]{32}")
_SLACK_PREFIXES = ("xoxb-", "xoxp-", "xoxa-", "xoxe-", "xoxr-", "xapp-")


@dataclass(frozen=True, slots=True)
class Row:
    check: str
    status: Status
    detail: str


def run_check(config_file: Path | None, *, migrate: bool, interactive: bool) -> list[Row]:
    """Every check, in order; a settings failure stops the rest (they would mislead)."""
    try:
        settings = load_settings(config_file)
    except SettingsError as exc:
        return [Row("settings", "FAIL", _one_line(str(exc)))]
    source = f" (with {os.environ['CHATLOOP_CONFIG']})" if os.environ.get("CHATLOOP_CONFIG") else ""
    rows = [Row("settings", "ok", f"valid{source}")]
    rows += check_platforms(settings, interactive=interactive)
    rows.append(check_database(settings.database_url, migrate=migrate))
    rows.append(check_model(settings))
    return rows


def render(rows: list[Row]) -> str:
    """A plain-text table, one row per line, and a closing verdict."""
    width = max(len(r.check) for r in rows)
    lines = [f"{'check':<{width}}  status  detail"]
    lines += [f"{r.check:<{width}}  {r.status:<6}  {r.detail}" for r in rows]
    failed = sum(r.status == "FAIL" for r in rows)
    lines.append(
        "ready: `chatloop run` would start"
        if not failed
        else f"not ready: {failed} check{'s' if failed > 1 else ''} failed"
    )
    return "\n".join(lines)


def passed(rows: list[Row]) -> bool:
    return all(r.status != "FAIL" for r in rows)


# --------------------------------------------------------------------------- platforms
def check_platforms(settings: Settings, *, interactive: bool) -> list[Row]:
    rows = [Row("platforms", "FAIL", problem) for problem in settings.platform_problems()]
    if settings.slack_enabled:
        mode = (
            "Socket Mode"
            if _given(settings.slack_app_token)
            else f"HTTP Events API on {settings.http_host}:{settings.http_port}/slack/events"
        )
        rows.append(Row("slack", "ok", f"on ({mode})"))
    if settings.discord_enabled:
        rows.append(Row("discord", "ok", "on (gateway)"))
    if not rows:
        if interactive:
            rows.append(Row("platforms", "ok", "none configured: the terminal chat runs"))
        else:
            rows.append(Row("platforms", "FAIL", no_platform_message()))
    rows += _token_rows(settings)
    return rows


def no_platform_message() -> str:
    return (
        "no platform is configured and stdin is not a terminal: set "
        f"{env_name('slack_bot_token')} with {env_name('slack_signing_secret')} (or "
        f"{env_name('slack_app_token')}), or {env_name('discord_token')}; "
        "for a piped conversation use `chatloop chat`"
    )


def _token_rows(settings: Settings) -> list[Row]:
    rows: list[Row] = []
    bot = _secret(settings.slack_bot_token)
    if bot:
        prefix = _slack_prefix(bot)
        if prefix == "xoxb-":
            rows.append(Row(source_name("slack_bot_token"), "ok", "set (xoxb-…)"))
        else:
            shown = f"set ({prefix}…)" if prefix else "set"
            rows.append(
                Row(
                    source_name("slack_bot_token"),
                    "FAIL",
                    f"{shown}, but a Slack bot token starts with xoxb- "
                    "(OAuth & Permissions → Bot User OAuth Token)",
                )
            )
    signing = _secret(settings.slack_signing_secret)
    if signing:
        if _SLACK_SIGNING_SECRET.fullmatch(signing):
            rows.append(Row(source_name("slack_signing_secret"), "ok", "set"))
        else:
            rows.append(
                Row(
                    source_name("slack_signing_secret"),
                    "warn",
                    "set, but Slack's signing secrets are 32 hex characters "
                    "(Basic Information → Signing Secret); signed requests may be refused",
                )
            )
    app_token = _secret(settings.slack_app_token)
    if app_token:
        prefix = _slack_prefix(app_token)
        if prefix == "xapp-":
            rows.append(Row(source_name("slack_app_token"), "ok", "set (xapp-…)"))
        else:
            shown = f"set ({prefix}…)" if prefix else "set"
            rows.append(
                Row(
                    source_name("slack_app_token"),
                    "FAIL",
                    f"{shown}, but an app-level token starts with xapp- "
                    "(Basic Information → App-Level Tokens)",
                )
            )
    discord = _secret(settings.discord_token)
    if discord:
        if discord.lower().startswith("bot "):
            detail = "set, with a 'Bot ' prefix: give the token alone"
            rows.append(Row(source_name("discord_token"), "FAIL", detail))
        elif _DISCORD_TOKEN.fullmatch(discord):
            rows.append(Row(source_name("discord_token"), "ok", "set"))
        else:
            rows.append(
                Row(
                    source_name("discord_token"),
                    "FAIL",
                    "set, but not shaped like a Discord bot token (three dot-separated parts; "
                    "Developer Portal → Bot → Reset Token)",
                )
            )
    return rows


def _slack_prefix(token: str) -> str:
    return next((p for p in _SLACK_PREFIXES if token.startswith(p)), "")


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value else ""


def _given(value: SecretStr | None) -> bool:
    return bool(_secret(value))


# --------------------------------------------------------------------------- database
def check_database(url: str, *, migrate: bool) -> Row:
    shown = safe_url(url)
    try:
        if backend_of(url) == "sqlite":
            missing = _missing_sqlite_file(url)
            if missing is not None:
                return _new_sqlite_file(shown, missing)
            engine = make_engine(url)
        else:
            engine = create_engine(
                normalize_url(url), connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
            )
        try:
            state = schema_state(engine)
        finally:
            engine.dispose()
    except (StorageError, OSError) as exc:
        return Row("database", "FAIL", f"{shown}: {_one_line(str(exc))}")
    why_not = refusal(state)
    if why_not is None:
        if state.up_to_date:
            return Row("database", "ok", f"{shown}: {state.describe()}")
        return Row("database", "ok", f"{shown}: {state.describe()}; `chatloop run` upgrades it")
    if migrate and state.known:
        return Row("database", "ok", f"{shown}: {state.describe()}; --migrate upgrades it")
    return Row("database", "FAIL", f"{shown}: {why_not}")


def _missing_sqlite_file(url: str) -> Path | None:
    database = make_url(normalize_url(url)).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).expanduser()
    return None if path.exists() else path


def _new_sqlite_file(shown: str, path: Path) -> Row:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        detail = f"{shown}: cannot create the file ({parent} is not writable)"
        return Row("database", "FAIL", detail)
    return Row(
        "database",
        "ok",
        f"{shown}: does not exist yet; `chatloop run` creates it at revision {head_revision()}",
    )


# --------------------------------------------------------------------------- model
def check_model(settings: Settings) -> Row:
    from serving.errors import ModelLoadError
    from serving.fetch import (
        DEFAULT_MODEL,
        MANIFEST,
        WHEEL_GGUF,
        WHEEL_MODULE,
        WHEEL_PACKAGE,
        verify,
    )

    spec = settings.model
    if settings.engine == "remote":
        return Row("model", "ok", f"{spec}, served by {settings.remote_url} (not contacted)")
    cache = settings.model_cache_dir.expanduser()
    if spec == DEFAULT_MODEL:
        converted = cache / "smollm2-135m-instruct"  # serving.fetch.resolve_model's directory
        if (converted / MANIFEST).is_file():
            try:
                verify(converted)
            except ModelLoadError as exc:
                return Row("model", "FAIL", f"{exc}")
            return Row("model", "ok", f"{spec}: converted at {converted}")
        found = importlib.util.find_spec(WHEEL_MODULE)
        gguf = Path(found.origin).parent / WHEEL_GGUF if found and found.origin else None
        if (gguf and gguf.is_file()) or (cache / "downloads" / WHEEL_GGUF).is_file():
            detail = f"{spec}: the {WHEEL_PACKAGE} wheel is here; converted at first start"
            return Row("model", "ok", detail)
        return Row(
            "model",
            "FAIL",
            f"{spec}: not in {cache} and the {WHEEL_PACKAGE} wheel is not installed: "
            "run `chatloop model fetch` (or `make model`)",
        )
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if path.is_file():
            return Row("model", "ok", f"{path}: converted into {cache} at first start")
        return Row("model", "FAIL", f"GGUF file {path} does not exist")
    if path.is_dir():
        if (path / "config.json").is_file():
            return Row("model", "ok", f"model directory {path}")
        return Row("model", "FAIL", f"{path} is not a model directory (no config.json)")
    if spec.startswith((".", "/", "~")):
        return Row("model", "FAIL", f"model path {path} does not exist")
    return _hub_model(spec)


def _hub_model(spec: str) -> Row:
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(spec, "config.json"), str):
        return Row("model", "ok", f"{spec}: in the local Hugging Face cache")
    if os.environ.get("HF_HUB_OFFLINE", "1") in {"0", "false", "False"}:
        return Row("model", "warn", f"{spec}: not cached; downloaded from the hub at start")
    return Row(
        "model",
        "FAIL",
        f"{spec}: not in the local Hugging Face cache, and chatloop does not download at run "
        "time (set HF_HUB_OFFLINE=0 once, deliberately)",
    )


def _one_line(text: str) -> str:
    text = text.split("(Background on this error", 1)[0]
    return " ".join(text.split())
