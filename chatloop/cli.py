"""The ``chatloop`` command line.

::

    chatloop run [--migrate]     run every configured platform (terminal when none)
    chatloop run --check         would it start? settings, database, model, tokens
    chatloop chat                chat in the terminal (reads stdin when piped)
    chatloop db upgrade|downgrade|current
    chatloop model fetch [--verify]
    chatloop privacy erase|export --platform P --user ID;  chatloop privacy retention
    chatloop evalset add|list|import
    chatloop anonymize           JSON lines {"text"} on stdin -> anonymized text + entities
    chatloop data snapshot|report
    chatloop bench anonymize|serve
    chatloop config              show the effective settings (secrets masked)
    chatloop memory list|add|import|search|retire   the answer memory
    chatloop discord sync        register the Discord application commands (once per release)

Global options: ``--verbose`` (debug logs), ``--config FILE`` (TOML settings),
``--version``. Errors of configuration, database or model end the command with a
one-line message and exit code 1, never a traceback (``--verbose`` shows it); exit
code 2 means a usage error (an unknown option, a missing argument).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from chatloop import __version__
from chatloop.cli_learn import adapters_app, learn_app
from chatloop.cli_memory import memory_app
from chatloop.cli_simulate import simulate
from chatloop.logs import setup_logging
from chatloop.settings import Settings, SettingsError, env_name, load_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

app = typer.Typer(
    name="chatloop",
    help="A Slack and Discord chat bot that learns from its own conversations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
model_app = typer.Typer(help="The base model.", no_args_is_help=True)
privacy_app = typer.Typer(
    help="Erasure, access and retention of personal data.", no_args_is_help=True
)
evalset_app = typer.Typer(help="The frozen evaluation set.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(model_app, name="model")
data_app = typer.Typer(help="Training data: snapshots and their reports.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmark programs (print JSON).", no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
app.add_typer(evalset_app, name="evalset")
app.add_typer(memory_app, name="memory")
app.add_typer(learn_app, name="learn")
app.add_typer(adapters_app, name="adapters")
discord_app = typer.Typer(help="The Discord application.", no_args_is_help=True)
app.add_typer(discord_app, name="discord")
app.command()(simulate)

log = logging.getLogger("chatloop")


class _State:
    verbose = False
    config: Path | None = None


FAILED = 1
"""Exit code of a command that could not do its work (configuration, database, model)."""


def _settings() -> Settings:
    try:
        settings = load_settings(_State.config)
    except SettingsError as exc:
        typer.echo(f"chatloop: {exc}", err=True)
        raise typer.Exit(FAILED) from None
    return settings


def _fail(message: str, exc: BaseException) -> typer.Exit:
    if _State.verbose:
        log.error(message, exc_info=exc)
    typer.echo(f"chatloop: {message}: {exc}", err=True)
    return typer.Exit(FAILED)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"chatloop {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file.", exists=False)
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
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
def run(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Check settings, database, model and platform tokens, print a table and "
            "exit (0: ready, 1: not); starts nothing, changes nothing.",
        ),
    ] = False,
    migrate: Annotated[
        bool,
        typer.Option(
            "--migrate",
            help="Upgrade an outdated PostgreSQL schema first (one replica at a time, under a "
            "lock). SQLite is always created or upgraded at start.",
        ),
    ] = False,
) -> None:
    """Run the bot on every configured platform (the terminal when none is).

    An empty or older SQLite database is created or upgraded first (logged); a
    PostgreSQL one only with --migrate. A half-configured platform, or no platform
    without a terminal, stops it with the variable to set.
    """
    from chatloop.app import run_platforms
    from chatloop.check import no_platform_message, passed, render, run_check
    from serving.errors import ServingError
    from storage.errors import StorageError

    interactive = sys.stdin.isatty()
    if check:
        rows = run_check(_State.config, migrate=migrate, interactive=interactive)
        typer.echo(render(rows))
        raise typer.Exit(0 if passed(rows) else FAILED)
    settings = _settings()
    problems = settings.platform_problems()
    for problem in problems:
        typer.echo(f"chatloop: {problem}", err=True)
    platforms = settings.slack_enabled or settings.discord_enabled
    if not platforms and not problems and not interactive:
        typer.echo(f"chatloop: {no_platform_message()}", err=True)
        raise typer.Exit(FAILED)
    if problems:
        raise typer.Exit(FAILED)
    _logging(settings, quiet=not platforms)
    try:
        asyncio.run(
            run_platforms(settings, migrate=migrate, progress=None if platforms else _progress)
        )
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
    print_path: Annotated[
        bool, typer.Option("--print-path", help="Print only the model directory (for scripts).")
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
            verify(Path(resolved.path), full=True, show_progress=True)
    except ServingError as exc:
        raise _fail("model fetch failed", exc) from None
    if print_path:
        typer.echo(str(resolved.path))
        return
    typer.echo(f"model ready: {resolved.model_id} at {resolved.path}")


@contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    """One transaction on the configured database; storage errors end the command."""
    from chatloop.app import open_database
    from storage.db import transaction
    from storage.errors import StorageError

    try:
        db = open_database(settings)
    except StorageError as exc:
        raise _fail("cannot open the database", exc) from None
    try:
        with transaction(db.sessions) as session:
            yield session
    except StorageError as exc:
        raise _fail("database operation failed", exc) from None
    finally:
        db.close()


PlatformOpt = Annotated[str, typer.Option("--platform", help="slack, discord or console.")]
UserOpt = Annotated[str, typer.Option("--user", help="The platform's user id.")]


@privacy_app.command("erase")
def privacy_erase(
    platform: PlatformOpt,
    user: UserOpt,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase a person's text, votes and flags; taint snapshots and adapters that held them."""
    from learning.privacy import erase_user
    from storage.errors import NotFound

    settings = _settings()
    _logging(settings)
    if not yes and not typer.confirm(f"Erase everything stored about {platform}:{user}?"):
        raise typer.Exit(1)
    with _session(settings) as session:
        try:
            report = erase_user(session, platform=platform, external_id=user, actor="cli")
        except NotFound as exc:
            raise _fail("nothing to erase", exc) from None
    typer.echo(json.dumps(report.as_dict(), indent=2))
    if report.active_adapter_tainted:
        typer.echo(
            f"the active adapter {report.active_adapter_tainted} was trained on erased data: "
            f"it is retired and {report.now_active} serves now; the learning loop retrains "
            "without the erased data.",
            err=True,
        )
    for version in report.canaries_stopped:
        typer.echo(f"the canary {version} was trained on erased data: stopped.", err=True)


@privacy_app.command("export")
def privacy_export(
    platform: PlatformOpt,
    user: UserOpt,
    out: Annotated[Path | None, typer.Option("--out", help="Write to a file instead.")] = None,
) -> None:
    """Everything stored about a person, as JSON (GDPR access request)."""
    from learning.privacy import export_user
    from storage.errors import NotFound

    settings = _settings()
    with _session(settings) as session:
        try:
            data = export_user(session, platform=platform, external_id=user)
        except NotFound as exc:
            raise _fail("nothing to export", exc) from None
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if out:
        out.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"wrote {out}", err=True)
    else:
        typer.echo(text)


@privacy_app.command("retention")
def privacy_retention(
    days: Annotated[
        int | None, typer.Option("--days", help="Override CHATLOOP_RAW_TEXT_RETENTION_DAYS.")
    ] = None,
    anonymize: Annotated[
        bool,
        typer.Option(
            "--anonymize/--no-anonymize",
            help="Anonymize old raw text that has no anonymized form yet, then delete it "
            "(--no-anonymize keeps such text until a snapshot anonymizes it).",
        ),
    ] = True,
) -> None:
    """Delete raw text older than the retention period, anonymizing it first if needed.

    Free-text vote and flag reasons past the period are cleared.
    """
    from dataclasses import asdict

    from learning.anonymize import AnonymizeError
    from learning.privacy import apply_retention, waiting_for_anonymization

    settings = _settings()
    _logging(settings)
    keep = settings.raw_text_retention_days if days is None else days
    if keep <= 0:
        typer.echo("retention is off (0 days): nothing deleted")
        return
    with _session(settings) as session:
        anonymizer = None
        if anonymize and waiting_for_anonymization(session, days=keep):
            try:
                anonymizer = _anonymizer(settings)  # loaded only when there is work for it
            except AnonymizeError as exc:
                raise _fail("cannot start the anonymizer", exc) from None
        report = apply_retention(session, days=keep, anonymizer=anonymizer)
    typer.echo(json.dumps(asdict(report), indent=2))


@evalset_app.command("add")
def evalset_add(
    question: Annotated[str, typer.Option("--question", "-q")],
    answer: Annotated[str, typer.Option("--answer", "-a")],
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="Slice name (repeat).")
    ] = None,
) -> None:
    """Add one question with its expected answer to the frozen evaluation set."""
    from learning.evalset import EvalSetError, add_item

    settings = _settings()
    with _session(settings) as session:
        try:
            item = add_item(session, question=question, answer=answer, tags=tag or [], actor="cli")
        except EvalSetError as exc:
            raise _fail("invalid eval item", exc) from None
        typer.echo("already in the eval set" if item is None else f"added eval item {item.id}")


@evalset_app.command("list")
def evalset_list(
    tag: Annotated[str | None, typer.Option("--tag", "-t", help="Only this slice.")] = None,
) -> None:
    """List the evaluation set as JSON lines."""
    from learning.evalset import list_items

    settings = _settings()
    with _session(settings) as session:
        for item in list_items(session, tag=tag):
            row = {"id": item.id, "question": item.question, "answer": item.expected_answer}
            typer.echo(json.dumps({**row, "tags": item.tags}, ensure_ascii=False))


@evalset_app.command("import")
def evalset_import(
    source: Annotated[str, typer.Argument(help="JSONL file, or - for stdin.")],
) -> None:
    """Import {"question", "answer", "tags"} lines; bad lines are listed, not fatal."""
    from learning.evalset import import_jsonl

    settings = _settings()
    try:
        lines = (
            sys.stdin.readlines() if source == "-" else Path(source).read_text("utf-8").splitlines()
        )
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"cannot read {source}", exc) from None
    with _session(settings) as session:
        report = import_jsonl(session, lines, actor="cli")
    typer.echo(
        f"added {report.added}, already present {report.duplicates}, errors {len(report.errors)}"
    )
    for err in report.errors:
        typer.echo(f"  {err}", err=True)
    if report.errors:
        raise typer.Exit(1)


def _anonymizer(settings: Settings) -> Any:
    from chatloop.learnwire import anonymizer_from

    return anonymizer_from(settings)


def _clean_config(settings: Settings, seed: int) -> Any:
    from chatloop.learnwire import clean_config_from

    return clean_config_from(settings, seed)


@app.command()
def anonymize() -> None:
    """Anonymize JSON lines from stdin: {"text", "conversation"?, "participants"?}."""
    from learning.anonymize import AnonymizeError, anonymize_jsonl

    settings = _settings()
    _logging(settings, quiet=True)
    try:
        anonymizer = _anonymizer(settings)
    except AnonymizeError as exc:
        raise _fail("cannot start the anonymizer", exc) from None
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    anonymize_jsonl(stdin, sys.stdout, anonymizer=anonymizer)


@data_app.command("snapshot")
def data_snapshot(
    eval_fraction: Annotated[float, typer.Option(help="Share of conversations held out.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the split and of sampling.")] = 0,
) -> None:
    """Select new or newly judged feedback, anonymize, clean, write an immutable snapshot."""
    from tqdm import tqdm

    from chatloop.app import open_database
    from learning.anonymize import AnonymizeError
    from learning.snapshot import build_snapshot
    from storage.errors import StorageError

    settings = _settings()
    _logging(settings)
    try:
        db = open_database(settings)
        anonymizer = _anonymizer(settings)
    except (StorageError, AnonymizeError) as exc:
        raise _fail("cannot build a snapshot", exc) from None
    bar = tqdm(desc="anonymizing", unit="text", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        result = build_snapshot(
            db.sessions,
            anonymizer=anonymizer,
            out_dir=settings.snapshot_dir,
            clean_config=_clean_config(settings, seed),
            eval_fraction=eval_fraction,
            seed=seed,
            progress=progress,
        )
    finally:
        bar.close()
        db.close()
    if result is None:
        typer.echo("no new feedback since the last snapshot: nothing written")
        return
    typer.echo(
        json.dumps(
            {"snapshot": result.snapshot_id, "path": str(result.path), **result.counts}, indent=2
        )
    )


@data_app.command("report")
def data_report(
    path: Annotated[
        Path | None, typer.Argument(help="Snapshot directory (default: latest).")
    ] = None,
    png: Annotated[
        Path | None, typer.Option("--png", help="Also draw the report to this PNG.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """A snapshot's funnel, drops by reason, personal data by type and lengths."""
    from learning.report import build_report, render_png, render_text
    from learning.snapshot import SnapshotError
    from storage.repositories import Snapshots

    settings = _settings()
    if path is None:
        with _session(settings) as session:
            latest = Snapshots(session).latest()
            if latest is None:
                raise _fail("no snapshot yet", Exception("run `chatloop data snapshot` first"))
            path = Path(latest.path)
    try:
        report = build_report(path)
    except SnapshotError as exc:
        raise _fail("cannot read the snapshot", exc) from None
    typer.echo(json.dumps(report.as_dict(), indent=2) if as_json else render_text(report))
    if png is not None:
        typer.echo(f"wrote {render_png(report, png)}", err=True)


_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _with_defaults(args: list[str], defaults: dict[str, str]) -> list[str]:
    """``args`` with ``flag value`` put first for every flag it does not give itself."""
    out = list(args)
    for flag, value in defaults.items():
        if not any(a == flag or a.startswith(flag + "=") for a in args):
            out = [flag, value, *out]
    return out


@bench_app.command("anonymize", context_settings={**_PASSTHROUGH, "help_option_names": []})
def bench_anonymize(ctx: typer.Context) -> None:
    """Recall, precision and speed of our anonymizer vs Presidio's default (JSON last line).

    The anonymizer's languages and spaCy packages come from the settings
    (anonymizer_languages, anonymizer_models) unless given as --languages / --models;
    --help lists the rest.
    """
    from bench.anonymize.run import main as bench_main

    settings = _settings()
    defaults = {"--languages": ",".join(settings.anonymizer_languages)}
    if settings.anonymizer_models:
        defaults["--models"] = ",".join(settings.anonymizer_models)
    raise typer.Exit(bench_main(_with_defaults(ctx.args, defaults)))


@bench_app.command("serve", context_settings={**_PASSTHROUGH, "help_option_names": []})
def bench_serve(ctx: typer.Context) -> None:
    """Batching engine vs naive generate, and adapter hot-swap (JSON last line).

    Model, cache directory and device come from the settings unless given as
    ``--model``, ``--cache-dir`` or ``--device``; ``--help`` lists the rest.
    """
    from bench.serve import main as bench_main
    from chatloop.app import offline_by_default

    settings = _settings()
    offline_by_default()
    _logging(settings, quiet=True)
    defaults = {
        "--model": settings.model,
        "--cache-dir": str(settings.model_cache_dir),
        "--device": settings.device,
    }
    raise typer.Exit(bench_main(_with_defaults(ctx.args, defaults)))


@bench_app.command("train", context_settings={**_PASSTHROUGH, "help_option_names": []})
def bench_train(ctx: typer.Context) -> None:
    """Our trainer vs the plain recipe, and the bot's TTFT while training (JSON last line).

    The base model comes from the settings (resolved and converted once) unless given
    as ``--model-dir``; ``--help`` lists the rest.
    """
    from bench.train import main as bench_main
    from chatloop.app import offline_by_default
    from serving.fetch import resolve_model

    settings = _settings()
    offline_by_default()
    _logging(settings, quiet=True)
    defaults: dict[str, str] = {}
    if "--help" not in ctx.args and "-h" not in ctx.args:
        resolved = resolve_model(settings.model, settings.model_cache_dir, progress=_progress)
        defaults["--model-dir"] = str(resolved.path)
    raise typer.Exit(bench_main(_with_defaults(ctx.args, defaults)))


@discord_app.command("sync")
def discord_sync() -> None:
    """Register chatloop's slash commands and "Flag and correct" with Discord.

    Run it once per release (and after changing CHATLOOP_DISCORD_GUILD_IDS), not on
    every start: per server when guild ids are set (visible at once), else globally.
    """
    settings = _settings()
    _logging(settings, quiet=True)
    token = settings.discord_token.get_secret_value() if settings.discord_token else ""
    if not token:
        typer.echo(
            f"chatloop: no Discord bot token: set {env_name('discord_token')} (or DISCORD_TOKEN)",
            err=True,
        )
        raise typer.Exit(FAILED)
    from bot.platforms.discord.commands import sync_commands
    from bot.platforms.discord.errors import CommandSyncError

    guilds = settings.discord_guild_ids
    try:
        names = asyncio.run(sync_commands(token=token, guild_ids=guilds))
    except CommandSyncError as exc:
        raise _fail("Discord commands not synced", exc) from None
    where = f"to {len(guilds)} server(s)" if guilds else "globally"
    typer.echo(f"synced {len(names)} Discord commands {where}: {', '.join(names)}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
