"""The ``chatloop`` command line.

::

    chatloop run                 run every configured platform (terminal when none)
    chatloop chat                chat in the terminal (reads stdin when piped)
    chatloop db upgrade|downgrade|current
    chatloop model fetch [--verify]
    chatloop config              show the effective settings (secrets masked)

Global options: ``--verbose`` (debug logs), ``--config FILE`` (TOML settings).
Errors of configuration, database or model end the command with a one-line
message and exit code 2, never a traceback (``--verbose`` shows it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from chatloop.logs import setup_logging
from chatloop.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    name="chatloop",
    help="A Slack and Discord chat bot that learns from its own conversations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
model_app = typer.Typer(help="The base model.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(model_app, name="model")

log = logging.getLogger("chatloop")


class _State:
    verbose = False
    config: Path | None = None


def _settings() -> Settings:
    try:
        settings = load_settings(_State.config)
    except SettingsError as exc:
        typer.echo(f"chatloop: {exc}", err=True)
        raise typer.Exit(2) from None
    return settings


def _fail(message: str, exc: BaseException) -> typer.Exit:
    if _State.verbose:
        log.error(message, exc_info=exc)
    typer.echo(f"chatloop: {message}: {exc}", err=True)
    return typer.Exit(2)


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file.", exists=False)
    ] = None,
) -> None:
    _State.verbose = verbose
    _State.config = config


def _logging(settings: Settings, quiet: bool = False) -> None:
    level = "DEBUG" if _State.verbose else ("WARNING" if quiet else settings.log_level)
    setup_logging(level, settings.log_format)


def _progress(message: str) -> None:
    typer.echo(f"· {message}", err=True)


@app.command()
def chat() -> None:
    """Chat with the bot in the terminal (/help inside for commands)."""
    from chatloop.app import run_console
    from serving.errors import ServingError
    from storage.errors import StorageError

    settings = _settings()
    _logging(settings, quiet=True)
    try:
        asyncio.run(run_console(settings, progress=_progress))
    except (StorageError, ServingError) as exc:
        raise _fail("cannot start the chat", exc) from None
    except KeyboardInterrupt:
        typer.echo("", err=True)


@app.command()
def run() -> None:
    """Run the bot on every configured platform (the terminal when none is)."""
    from chatloop.app import run_platforms
    from serving.errors import ServingError
    from storage.errors import StorageError

    settings = _settings()
    _logging(settings, quiet=not (settings.slack_enabled or settings.discord_enabled))
    try:
        asyncio.run(run_platforms(settings))
    except (StorageError, ServingError) as exc:
        raise _fail("cannot start the bot", exc) from None
    except KeyboardInterrupt:
        typer.echo("", err=True)


@app.command("config")
def show_config() -> None:
    """Print the effective settings as JSON, secrets masked."""
    typer.echo(json.dumps(_settings().redacted(), indent=2, default=str))


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations (creates the database if needed)."""
    from storage.db import current_revision, make_engine, upgrade
    from storage.errors import StorageError

    settings = _settings()
    _logging(settings)
    try:
        upgrade(settings.database_url, revision)
        engine = make_engine(settings.database_url)
        typer.echo(f"database at revision {current_revision(engine)}")
        engine.dispose()
    except StorageError as exc:
        raise _fail("database upgrade failed", exc) from None


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision ('base' = empty).")],
) -> None:
    """Revert migrations down to REVISION."""
    from storage.db import downgrade
    from storage.errors import StorageError

    settings = _settings()
    _logging(settings)
    try:
        downgrade(settings.database_url, revision)
    except StorageError as exc:
        raise _fail("database downgrade failed", exc) from None
    typer.echo(f"database downgraded to {revision}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's schema revision and the newest one."""
    from storage.db import current_revision, head_revision, make_engine
    from storage.errors import StorageError

    settings = _settings()
    try:
        engine = make_engine(settings.database_url)
        typer.echo(f"current: {current_revision(engine) or 'empty'}  head: {head_revision()}")
        engine.dispose()
    except StorageError as exc:
        raise _fail("cannot read the database", exc) from None


@model_app.command("fetch")
def model_fetch(
    verify_all: Annotated[
        bool, typer.Option("--verify", help="Recompute every checksum of the cached model.")
    ] = False,
) -> None:
    """Obtain the configured model offline and cache it as safetensors."""
    from chatloop.app import offline_by_default
    from serving.errors import ServingError
    from serving.fetch import resolve_model, verify

    settings = _settings()
    _logging(settings)
    offline_by_default()
    try:
        resolved = resolve_model(settings.model, settings.model_cache_dir, progress=_progress)
        if verify_all and resolved.converted:
            _progress("verifying checksums")
            verify(Path(resolved.path), full=True)
    except ServingError as exc:
        raise _fail("model fetch failed", exc) from None
    typer.echo(f"model ready: {resolved.model_id} at {resolved.path}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
