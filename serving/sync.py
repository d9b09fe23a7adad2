"""Replica sync: every serving replica follows the adapter registry in the database.

The registry (``storage``) says which adapter is active and which, if any, is a
canary with what share. :class:`RegistryFollower` reads that desired state and
brings its :class:`AdapterHost` (the local engine or the remote backend) to it:
load (verified by the host), then activate, atomically; a load that fails leaves
the host exactly as it was and is retried later with backoff. It polls every
``interval_s`` seconds, and on PostgreSQL also listens on the ``chatloop_adapters``
channel (the registry NOTIFYs on every change) so replicas swap within a second
of an approval. The previous active adapter stays loaded for instant rollback;
older ones are unloaded so memory stays flat.

It knows nothing of how adapters are trained or approved, or of platforms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from serving.errors import AdapterError
from serving.types import BASE_VERSION
from storage.models import Adapter, AdapterStatus
from storage.repositories import ADAPTER_CHANNEL

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AdapterRef:
    version: str
    path: str
    sha256: str


@dataclass(frozen=True, slots=True)
class DesiredState:
    active: AdapterRef | None
    canary: AdapterRef | None = None
    canary_percent: float = 0.0


class AdapterHost(Protocol):
    """What a serving backend offers the follower."""

    @property
    def active_version(self) -> str: ...

    @property
    def loaded_versions(self) -> list[str]: ...

    async def load_adapter(self, version: str, path: str, *, sha256: str) -> None: ...

    async def unload_adapter(self, version: str) -> None: ...

    def activate(self, version: str) -> None: ...

    def set_canary(self, version: str | None, percent: float) -> None: ...


def _ref(row: Adapter | None) -> AdapterRef | None:
    if row is None or not row.path or not row.weights_sha256:
        return None
    return AdapterRef(version=row.version, path=row.path, sha256=row.weights_sha256)


def read_desired(session: Session) -> DesiredState:
    """The registry's wish: the active adapter and the canary (tainted ones never)."""
    active = session.scalar(
        select(Adapter).where(Adapter.status == AdapterStatus.ACTIVE, Adapter.tainted.is_(False))
    )
    canary = session.scalar(
        select(Adapter).where(
            Adapter.status == AdapterStatus.PENDING,
            Adapter.canary_percent > 0,
            Adapter.tainted.is_(False),
        )
    )
    return DesiredState(
        active=_ref(active),
        canary=_ref(canary),
        canary_percent=canary.canary_percent if canary else 0.0,
    )


class RegistryFollower:
    """Keeps one host in step with the registry (see module docstring)."""

    def __init__(
        self,
        *,
        host: AdapterHost,
        sessions: sessionmaker[Session],
        interval_s: float = 2.0,
        listen_dsn: str | None = None,
        failure_backoff_s: float = 30.0,
    ) -> None:
        self.host = host
        self.sessions = sessions
        self.interval_s = interval_s
        self.listen_dsn = listen_dsn
        self.failure_backoff_s = failure_backoff_s
        self._failed: dict[tuple[str, str], float] = {}
        self._previous_active: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()

    # one step -------------------------------------------------------------------
    async def sync_once(self) -> bool:
        """Apply the registry's desired state; True when something changed."""
        desired = await asyncio.to_thread(self._read)
        changed = False
        if desired.active is None:
            if self.host.active_version != BASE_VERSION:
                self._remember_previous()
                self.host.activate(BASE_VERSION)
                changed = True
        elif self.host.active_version != desired.active.version and await self._ensure(
            desired.active
        ):
            self._remember_previous()
            self.host.activate(desired.active.version)
            changed = True
        canary_ok = desired.canary is not None and await self._ensure(desired.canary)
        if canary_ok and desired.canary is not None:
            self.host.set_canary(desired.canary.version, desired.canary_percent)
        else:
            self.host.set_canary(None, 0.0)
        await self._unload_unused(desired)
        if changed:
            log.info("adapter swapped", extra={"active": self.host.active_version})
        return changed

    def _read(self) -> DesiredState:
        with self.sessions() as session:
            return read_desired(session)

    def _remember_previous(self) -> None:
        current = self.host.active_version
        self._previous_active = current if current != BASE_VERSION else None

    async def _ensure(self, ref: AdapterRef) -> bool:
        if ref.version in self.host.loaded_versions:
            return True
        key = (ref.version, ref.sha256)
        failed_at = self._failed.get(key)
        if failed_at is not None and time.monotonic() - failed_at < self.failure_backoff_s:
            return False
        try:
            await self.host.load_adapter(ref.version, ref.path, sha256=ref.sha256)
        except AdapterError as exc:
            self._failed[key] = time.monotonic()
            log.error(
                "adapter load failed; serving unchanged",
                extra={"version": ref.version, "error": str(exc)},
            )
            return False
        self._failed.pop(key, None)
        return True

    async def _unload_unused(self, desired: DesiredState) -> None:
        keep = {self.host.active_version, self._previous_active}
        keep |= {r.version for r in (desired.active, desired.canary) if r is not None}
        for version in list(self.host.loaded_versions):
            if version not in keep:
                try:
                    await self.host.unload_adapter(version)
                except AdapterError as exc:
                    log.warning(
                        "adapter unload failed", extra={"version": version, "error": str(exc)}
                    )

    # running --------------------------------------------------------------------
    async def run(self) -> None:
        """Sync forever: on every tick and whenever PostgreSQL notifies a change."""
        loop = asyncio.get_running_loop()
        if self.listen_dsn:
            self._listener = threading.Thread(
                target=self._listen, args=(loop,), name="registry-listener", daemon=True
            )
            self._listener.start()
        while not self._stop.is_set():
            try:
                await self.sync_once()
            except Exception:
                log.exception("registry sync failed; will retry")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self.run())
        return self._task

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 5)

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        import psycopg

        assert self.listen_dsn is not None
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.listen_dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {ADAPTER_CHANNEL}")
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            loop.call_soon_threadsafe(self._wake.set)
            except Exception as exc:
                log.warning("registry listener reconnecting", extra={"error": str(exc)})
                self._stop.wait(2.0)
