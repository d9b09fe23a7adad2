"""Approval requests are posted once per platform and adapter, and retried on failure."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.core.approvals import ApprovalAnnouncer
from storage.db import transaction
from storage.models import AdapterStatus, AuditEntry
from storage.repositories import Adapters
from tests.conftest import run


def _pending(sessions: sessionmaker[Session], version: str) -> None:
    with transaction(sessions) as s:
        reg = Adapters(s)
        reg.register(version=version, base_model="smol", parent_version="v0")
        reg.transition(version, AdapterStatus.CANDIDATE, actor="learning")
        reg.set_metrics(version, {"win_rate": 0.625, "eval_items": 40})
        reg.transition(version, AdapterStatus.PENDING, actor="learning")


def test_each_pending_adapter_is_announced_once_per_platform(
    sessions: sessionmaker[Session],
) -> None:
    posted: list[tuple[str, str, str]] = []
    failures = {"discord": 1}

    def poster(platform: str):  # type: ignore[no-untyped-def]
        async def post(version: str, summary: str) -> str:
            if failures.get(platform):
                failures[platform] -= 1
                raise RuntimeError("platform down")
            posted.append((platform, version, summary))
            return f"{platform}-msg-{len(posted)}"

        return post

    async def go() -> None:
        _pending(sessions, "v1")
        replicas = [
            ApprovalAnnouncer(
                sessions=sessions, posters={"slack": poster("slack"), "discord": poster("discord")}
            )
            for _ in range(2)
        ]
        first = await replicas[0].announce_once()
        assert first == [("slack", "v1")]  # discord failed and was released
        assert await replicas[1].announce_once() == [
            ("discord", "v1")
        ]  # retried by another replica
        assert await replicas[0].announce_once() == []
        assert await replicas[1].announce_once() == []
        _pending(sessions, "v2")
        assert sorted(await replicas[1].announce_once()) == [("discord", "v2"), ("slack", "v2")]

    run(go())
    assert sorted((p, v) for p, v, _ in posted) == [
        ("discord", "v1"), ("discord", "v2"), ("slack", "v1"), ("slack", "v2"),
    ]  # fmt: skip
    summary = posted[0][2]
    assert (
        "replaces: v0" in summary and "win_rate: 0.625" in summary and "eval_items: 40" in summary
    )
    with sessions() as s:
        rows = s.scalars(select(AuditEntry).filter_by(action="adapter.announced")).all()
        assert {(r.target_id, r.details["platform"]) for r in rows} == {
            ("v1", "slack"), ("v1", "discord"), ("v2", "slack"), ("v2", "discord"),
        }  # fmt: skip
