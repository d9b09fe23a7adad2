"""The canary monitor: a stated one-sided test on thumbs-down rates, with a minimum sample."""

from __future__ import annotations

from datetime import timedelta

import pytest
from scipy.stats import fisher_exact
from sqlalchemy.orm import Session, sessionmaker

from learning.canary_monitor import (
    CanaryMonitor,
    CanaryPolicy,
    CanaryPolicyError,
    fisher_worse,
    z_test_worse,
)
from storage.db import transaction
from storage.models import AdapterStatus, utcnow
from storage.repositories import Adapters, Audit
from tests.learning.seed import add_reply, add_votes


def _votes(s: Session, version: str, down: int, up: int, *, channel: str, **kw: object) -> None:
    """``down`` down-votes and ``up`` up-votes on replies of ``version``, 5 votes a reply."""
    values = [-1] * down + [1] * up
    for i in range(0, len(values), 5):
        reply = add_reply(s, adapter_version=version, channel=f"{channel}-{i}", **kw)  # type: ignore[arg-type]
        add_votes(s, reply, values[i : i + 5], voter_prefix=f"{channel}-{i}-")


def _registry(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        reg = Adapters(s)
        for v in ("v1", "cand"):
            reg.register(version=v, base_model="m", path=f"/a/{v}", weights_sha256="0" * 64)
            reg.transition(v, AdapterStatus.CANDIDATE, actor="learning")
            reg.transition(v, AdapterStatus.PENDING, actor="learning")
        reg.transition("v1", AdapterStatus.ACTIVE, actor="maintainer")
        # an earlier canary period of the same candidate, long before this one
        old = utcnow() - timedelta(days=2)
        _votes(s, "cand", 40, 0, channel="old", at=old)
        reg.set_canary("cand", 20, actor="maintainer")


def _state(sessions: sessionmaker[Session]) -> tuple[str, float]:
    with transaction(sessions) as s:
        row = Adapters(s).get("cand")
        return row.status.value, row.canary_percent


def test_a_significantly_worse_canary_is_rolled_back(sessions: sessionmaker[Session]) -> None:
    _registry(sessions)
    with transaction(sessions) as s:
        _votes(s, "cand", 20, 20, channel="c")  # 50 % thumbs-down
        _votes(s, "v1", 4, 36, channel="a")  # 10 %
        _votes(s, "v1", 0, 0, channel="none")
    result = CanaryMonitor(sessions=sessions, policy=CanaryPolicy(min_votes=30)).check()
    assert result is not None and result.decision == "rollback"
    assert (result.canary_votes, result.canary_down) == (40, 20)  # the old period is not counted
    assert (result.active_votes, result.active_down) == (40, 4)
    assert result.p_value is not None and result.p_value < 0.05
    assert _state(sessions) == ("rejected", 0.0)
    with transaction(sessions) as s:
        rows = [r for r in Audit(s).for_target("adapter", "cand") if r.actor == "canary-monitor"]
        assert [r.action for r in rows] == [
            "adapter.canary",
            "adapter.status",
            "adapter.canary_rollback",
        ]
        assert rows[1].details == {"from": "pending", "to": "rejected"}
        assert "z-test" in (rows[1].reason or "") and "20/40" in (rows[1].reason or "")
        assert rows[2].details["p_value"] == pytest.approx(result.p_value)
        assert rows[2].details["canary_rate"] == 0.5
        assert Adapters(s).active() is not None and Adapters(s).active().version == "v1"  # type: ignore[union-attr]
    # nothing left to watch
    assert CanaryMonitor(sessions=sessions).check() is None


def test_not_significant_or_too_few_votes_leave_the_canary_alone(
    sessions: sessionmaker[Session],
) -> None:
    _registry(sessions)
    with transaction(sessions) as s:
        _votes(s, "cand", 10, 0, channel="few")  # 100 % down, but only 10 votes
        _votes(s, "v1", 2, 38, channel="a")
    monitor = CanaryMonitor(sessions=sessions, policy=CanaryPolicy(min_votes=30))
    result = monitor.check()
    assert result is not None and result.decision == "insufficient" and result.p_value is None
    assert _state(sessions) == ("pending", 20.0)
    with transaction(sessions) as s:
        _votes(s, "cand", 0, 25, channel="more")  # now 10/35 down vs 2/40
        _votes(s, "v1", 6, 0, channel="b")  # 8/46
    result = monitor.check()
    assert result is not None and result.decision == "keep"
    assert result.p_value is not None and result.p_value >= 0.05
    assert _state(sessions) == ("pending", 20.0)


def test_fisher_policy_rolls_back_too(sessions: sessionmaker[Session]) -> None:
    _registry(sessions)
    with transaction(sessions) as s:
        _votes(s, "cand", 9, 6, channel="c")
        _votes(s, "v1", 1, 14, channel="a")
    result = CanaryMonitor(
        sessions=sessions, policy=CanaryPolicy(min_votes=15, test="fisher")
    ).check()
    assert result is not None and result.decision == "rollback" and result.z is None
    assert _state(sessions) == ("rejected", 0.0)


def test_the_statistics_match_references() -> None:
    z, p = z_test_worse(30, 100, 15, 100)
    assert z == pytest.approx(2.540, abs=1e-3) and p == pytest.approx(0.00554, abs=1e-4)
    assert z_test_worse(10, 100, 30, 100)[1] > 0.99  # better, not worse
    assert z_test_worse(0, 50, 0, 50) == (0.0, 1.0)
    for case in [(9, 15, 1, 15), (3, 10, 2, 12), (0, 5, 4, 5), (40, 90, 25, 95)]:
        down_c, n_c, down_a, n_a = case
        table = [[down_c, n_c - down_c], [down_a, n_a - down_a]]
        expected = fisher_exact(table, alternative="greater").pvalue
        assert fisher_worse(*case) == pytest.approx(expected, rel=1e-9)


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(CanaryPolicyError):
        CanaryPolicy(alpha=1.5)
    with pytest.raises(CanaryPolicyError):
        CanaryPolicy(min_votes=0)
