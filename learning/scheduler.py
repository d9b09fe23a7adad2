"""The learning scheduler: when to run a learning cycle, and the canary monitor's tick.

Built on APScheduler 3 (``BackgroundScheduler``) with a persistent
``SQLAlchemyJobStore`` in the project's database (table ``chatloop_scheduler_jobs``,
created by APScheduler on first start; it holds APScheduler's pickled job state, not
our data). Jobs, each with ``max_instances=1``, ``coalesce=True`` (runs missed while
the process was down collapse into one) and ``misfire_grace_time`` (a run missed by
less than this still happens after a restart):

- ``learning-cycle-interval``: a cycle every ``interval_minutes`` (trigger "interval");
- ``learning-cycle-cron``: a cycle on a crontab expression in UTC (trigger "cron");
- ``learning-feedback-watch``: every ``feedback_check_s`` seconds one cheap count
  (:func:`count_new_feedback`: votes cast, changed or retracted after the latest
  snapshot's ``feedback_until`` plus flags after its ``flag_until_id``); at
  ``feedback_threshold`` or more a cycle starts (trigger "feedback"). If that cycle
  writes no new snapshot (it was skipped or failed), the watch waits for another
  ``feedback_threshold`` items before it tries again, so a cycle that cannot use the
  data is not retried every few seconds;
- ``learning-canary-monitor``: every ``canary_check_s`` seconds, the injected canary
  check (:class:`learning.canary_monitor.CanaryMonitor`).

The cycle itself is injected: ``cycle(trigger) -> Any`` (the composition root binds
``learning.cycle.run_cycle`` to its configuration). APScheduler 3 does not coordinate
several schedulers on one job store, so safety does not rest on it: the cycle takes
the learner lock (:mod:`learning.lock`) and returns "busy" where another replica
learns; within one process a second cycle never starts while one runs. The job store
tolerates another scheduler having updated or removed a job first (the stock store
raises and stops the scheduler's loop). Stored jobs whose schedule is unchanged are
kept across restarts (their next run time survives); changed ones are replaced and
disabled ones removed. The job table is shared, so every replica that runs the
scheduler must have the same schedule settings: the last one to start wins.

It knows nothing of how a cycle trains or what a canary is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from learning.errors import LearningError
from storage.models import DatasetSnapshot, Feedback, Flag

log = logging.getLogger(__name__)

JOB_TABLE = "chatloop_scheduler_jobs"
CYCLE_INTERVAL = "learning-cycle-interval"
CYCLE_CRON = "learning-cycle-cron"
FEEDBACK_WATCH = "learning-feedback-watch"
CANARY_MONITOR = "learning-canary-monitor"
_OURS = (CYCLE_INTERVAL, CYCLE_CRON, FEEDBACK_WATCH, CANARY_MONITOR)


class SchedulerError(LearningError):
    """The schedule is invalid or the scheduler cannot start."""


def cron_trigger(expression: str, timezone: str = "UTC") -> CronTrigger:
    """A trigger from a five-field crontab expression; :class:`SchedulerError` if invalid."""
    try:
        return CronTrigger.from_crontab(expression, timezone=timezone)
    except ValueError as exc:
        raise SchedulerError(f"invalid cron expression {expression!r}: {exc}") from exc


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """When the learner runs. Zero or empty switches a trigger off."""

    interval_minutes: float = 0.0
    """A cycle every this many minutes (0 = off)."""
    cron: str = ""
    """A cycle on this crontab expression, e.g. "0 3 * * *" ("" = off)."""
    feedback_threshold: int = 0
    """A cycle once this many feedback items arrived since the last snapshot (0 = off)."""
    feedback_check_s: float = 60.0
    """How often the feedback count is taken."""
    canary_check_s: float = 0.0
    """How often the canary monitor runs (0 = off; it also needs a canary check)."""
    misfire_grace_s: int = 3600
    """A run missed by less than this (process down, busy) still happens once."""
    timezone: str = "UTC"
    """Time zone of the cron expression."""

    def __post_init__(self) -> None:
        if self.interval_minutes < 0 or self.feedback_threshold < 0 or self.canary_check_s < 0:
            raise SchedulerError("interval, feedback threshold and canary period must be >= 0")
        if self.feedback_check_s <= 0:
            raise SchedulerError("feedback_check_s must be positive")
        if self.misfire_grace_s < 1:
            raise SchedulerError("misfire_grace_s must be at least 1 second")
        if self.cron:
            cron_trigger(self.cron, self.timezone)


def count_new_feedback(session: Session) -> int:
    """Feedback items since the latest snapshot: vote changes plus new flags.

    The same watermarks :mod:`learning.snapshot` selects by: votes whose
    ``updated_at`` is after the snapshot's ``feedback_until`` (cast, changed or
    retracted since) and flags with an id above its ``flag_until_id``. Without any
    snapshot, every vote row and flag counts. Two indexed counts, cheap to poll.
    """
    last = session.scalar(select(DatasetSnapshot).order_by(DatasetSnapshot.id.desc()).limit(1))
    votes = select(func.count()).select_from(Feedback)
    flags = select(func.count()).select_from(Flag)
    if last is not None:
        votes = votes.where(Feedback.updated_at > (last.feedback_until or last.created_at))
        if last.flag_until_id is not None:
            flags = flags.where(Flag.id > last.flag_until_id)
        else:  # a snapshot from before the flag watermark existed
            flags = flags.where(Flag.created_at > last.created_at)
    return int(session.scalar(votes) or 0) + int(session.scalar(flags) or 0)


def _latest_snapshot_id(session: Session) -> int | None:
    return session.scalar(select(func.max(DatasetSnapshot.id)))


class _TolerantJobStore(SQLAlchemyJobStore):
    """The SQLAlchemy job store, when another scheduler on the same table got there first.

    Stock APScheduler 3 raises :class:`JobLookupError` from ``update_job`` and
    ``remove_job`` when the row is gone, which ends a scheduler's processing loop;
    here that means another replica changed the job, and it is not an error. The
    engine belongs to the caller: shutting the store down does not dispose it (stock
    APScheduler does, while its loop thread may still hold a connection).
    """

    def shutdown(self) -> None:
        pass

    def update_job(self, job: Any) -> None:
        try:
            super().update_job(job)
        except JobLookupError:
            log.debug("scheduler job changed by another scheduler", extra={"job": job.id})

    def remove_job(self, job_id: str) -> None:
        try:
            super().remove_job(job_id)
        except JobLookupError:
            log.debug("scheduler job removed by another scheduler", extra={"job": job_id})


_owner = threading.local()


def _bind_owner(scheduler: LearnerScheduler) -> None:
    """Thread-pool initializer: a worker thread knows which scheduler it works for."""
    _owner.scheduler = scheduler


def run_scheduled_job(kind: str) -> Any:
    """The function every stored job names (jobs are pickled, so only a reference and
    the job's kind are stored); it runs in the worker thread of the owning scheduler."""
    scheduler: LearnerScheduler | None = getattr(_owner, "scheduler", None)
    if scheduler is None:
        raise SchedulerError("a learning job ran outside a LearnerScheduler's executor")
    return scheduler.run_job(kind)


@dataclass(frozen=True, slots=True)
class JobInfo:
    id: str
    name: str
    next_run_time: datetime | None


class LearnerScheduler:
    """Runs the learning cycle on schedule in a background thread (see module docstring).

    ``cycle(trigger)`` is called with "interval", "cron" or "feedback";
    ``canary_check()`` every ``canary_check_s``. ``start()`` returns at once;
    ``shutdown(wait=True)`` waits for a running cycle.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        config: ScheduleConfig,
        cycle: Callable[[str], Any],
        canary_check: Callable[[], Any] | None = None,
        sessions: sessionmaker[Session] | None = None,
        tablename: str = JOB_TABLE,
        max_workers: int = 3,
    ) -> None:
        self.engine = engine
        self.config = config
        self.cycle = cycle
        self.canary_check = canary_check
        self.sessions = sessions or sessionmaker(engine, expire_on_commit=False)
        self.tablename = tablename
        self.max_workers = max_workers
        self._scheduler: BackgroundScheduler | None = None
        self._cycle_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._fired: tuple[int | None, int] | None = None  # (latest snapshot id, count)
        self.feedback_checks = 0
        """How many feedback counts were taken (tests and status wait on it)."""
        self.last_feedback_count: int | None = None
        self.cycles_started = 0

    # lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self._scheduler is not None:
            raise SchedulerError("the scheduler is already running")
        scheduler = BackgroundScheduler(
            jobstores={"default": _TolerantJobStore(engine=self.engine, tablename=self.tablename)},
            executors={
                "default": ThreadPoolExecutor(
                    self.max_workers,
                    pool_kwargs={"initializer": _bind_owner, "initargs": (self,)},
                )
            },
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": self.config.misfire_grace_s,
            },
            timezone=self.config.timezone,
        )
        try:
            scheduler.start(paused=True)
            self._reconcile(scheduler)
        except Exception as exc:
            if scheduler.running:
                scheduler.shutdown(wait=False)
            raise SchedulerError(f"the learning scheduler cannot start: {exc}") from exc
        scheduler.resume()
        self._scheduler = scheduler
        log.info("learning scheduler started", extra={"jobs": [j.name for j in self.jobs()]})

    def pause(self) -> None:
        """Start no more jobs; running ones go on (a graceful stop's first step)."""
        if self._scheduler is not None:
            self._scheduler.pause()

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop scheduling; with ``wait``, also wait for running jobs and cycles."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=wait)
        if wait:
            for thread in list(self._threads):
                thread.join()

    @property
    def running(self) -> bool:
        return self._scheduler is not None

    @property
    def cycle_running(self) -> bool:
        return self._cycle_lock.locked()

    def jobs(self) -> list[JobInfo]:
        if self._scheduler is None:
            return []
        return [
            JobInfo(id=j.id, name=j.name, next_run_time=j.next_run_time)
            for j in self._scheduler.get_jobs()
        ]

    def _wanted(self) -> dict[str, tuple[Any, str]]:
        """Job id -> (trigger, kind) for the configured schedule."""
        cfg = self.config
        wanted: dict[str, tuple[Any, str]] = {}
        if cfg.interval_minutes > 0:
            trigger = IntervalTrigger(minutes=cfg.interval_minutes, timezone=cfg.timezone)
            wanted[CYCLE_INTERVAL] = (trigger, "interval")
        if cfg.cron:
            wanted[CYCLE_CRON] = (cron_trigger(cfg.cron, cfg.timezone), "cron")
        if cfg.feedback_threshold > 0:
            trigger = IntervalTrigger(seconds=cfg.feedback_check_s, timezone=cfg.timezone)
            wanted[FEEDBACK_WATCH] = (trigger, "feedback")
        if cfg.canary_check_s > 0 and self.canary_check is not None:
            trigger = IntervalTrigger(seconds=cfg.canary_check_s, timezone=cfg.timezone)
            wanted[CANARY_MONITOR] = (trigger, "canary")
        return wanted

    def _reconcile(self, scheduler: BackgroundScheduler) -> None:
        """Keep stored jobs whose schedule is unchanged, replace changed ones, drop others."""
        stored = {job.id: job for job in scheduler.get_jobs()}
        wanted = self._wanted()
        for job_id in set(stored) - set(wanted):
            if job_id in _OURS:
                scheduler.remove_job(job_id)
        for job_id, (trigger, kind) in wanted.items():
            name = f"{kind}: {trigger} (grace {self.config.misfire_grace_s}s)"
            old = stored.get(job_id)
            if old is not None and old.name == name and old.args == (kind,):
                continue  # unchanged: its stored next run time survives the restart
            try:
                scheduler.add_job(
                    run_scheduled_job,
                    trigger,
                    args=(kind,),
                    id=job_id,
                    name=name,
                    replace_existing=True,
                )
            except ConflictingIdError:  # another replica added it a moment ago
                log.debug("scheduler job added by another scheduler", extra={"job": job_id})

    # jobs ---------------------------------------------------------------------------
    def run_job(self, kind: str) -> Any:
        if kind in ("interval", "cron"):
            return self.run_cycle(kind)
        if kind == "feedback":
            return self.check_feedback()
        if kind == "canary":
            return self.canary_check() if self.canary_check is not None else None
        raise SchedulerError(f"unknown learning job {kind!r}")

    def run_cycle(self, trigger: str) -> Any:
        """Run one cycle in this thread unless one already runs in this process."""
        if not self._cycle_lock.acquire(blocking=False):
            log.info("a learning cycle is already running here", extra={"trigger": trigger})
            return None
        try:
            self.cycles_started += 1
            log.info("learning cycle starting", extra={"trigger": trigger})
            outcome = self.cycle(trigger)
            log.info(
                "learning cycle ended",
                extra={"trigger": trigger, "status": getattr(outcome, "status", outcome)},
            )
            return outcome
        except Exception:
            log.exception("learning cycle failed", extra={"trigger": trigger})
            return None
        finally:
            self._cycle_lock.release()

    def check_feedback(self) -> bool:
        """Count new feedback; start a cycle (in its own thread) when enough arrived."""
        with self.sessions() as session:
            count = count_new_feedback(session)
            snapshot_id = _latest_snapshot_id(session)
        self.last_feedback_count = count
        self.feedback_checks += 1
        threshold = self.config.feedback_threshold
        if count < threshold or self.cycle_running:
            return False
        fired = self._fired
        if fired is not None and fired[0] == snapshot_id and count < fired[1] + threshold:
            return False  # the last such cycle wrote no snapshot: wait for more data
        self._fired = (snapshot_id, count)
        log.info("feedback threshold reached", extra={"count": count, "threshold": threshold})
        self._threads = [t for t in self._threads if t.is_alive()]
        thread = threading.Thread(
            target=self.run_cycle, args=("feedback",), name="learning-cycle-feedback"
        )
        self._threads.append(thread)
        thread.start()
        return True


__all__ = [
    "JOB_TABLE",
    "JobInfo",
    "LearnerScheduler",
    "ScheduleConfig",
    "SchedulerError",
    "count_new_feedback",
    "cron_trigger",
    "run_scheduled_job",
]
