"""The canary monitor: stop a canary whose users dislike it, with a stated test.

A pending adapter can serve a share of conversations before approval (the canary,
``Adapters.set_canary``). :class:`CanaryMonitor` compares the thumbs-down rate of the
canary's replies with that of the active adapter (or the base model) over the same
period, and rolls the canary back when the canary is *significantly worse*:

- **Data.** Votes (``feedback`` rows with value +1 or -1; retracted votes do not
  count) on replies whose ``adapter_version`` is the canary, or the active version,
  created since the canary started: the newest ``adapter.canary`` audit row of that
  adapter that raised its share from 0. Each vote is one observation; a reply's
  thumbs-down rate is down-votes / votes.
- **Minimum sample.** Nothing is decided until each side has at least ``min_votes``
  votes (default 30): with fewer, neither test is trustworthy and one unlucky
  conversation could end a good candidate.
- **Test.** One-sided, H1: the canary's thumbs-down rate is higher than the active
  one's, at significance level ``alpha`` (default 0.05). ``test="z"`` (default): the
  pooled two-proportion z-test, z = (p_c - p_a) / sqrt(p (1 - p) (1/n_c + 1/n_a)) with
  p the pooled rate, p-value = P(Z >= z). ``test="fisher"``: Fisher's exact test, the
  hypergeometric upper tail P(X >= down_c) given the margins; exact for small
  samples, slower for very large ones.
- **Action** when p < alpha: in one transaction, the canary's share is set to 0 and
  the adapter is rejected, both audited with actor ``canary-monitor``; the reason
  states the rates, counts, test and p-value, and an ``adapter.canary_rollback``
  audit row holds the same figures as details. The active adapter keeps serving.

Limits, stated: votes within one conversation are not independent (the canary routes
whole conversations), so the test is optimistic where a few conversations carry many
votes; the monitor checks repeatedly, which inflates the false-alarm rate over a long
canary (a sequential test would not) — a false alarm costs a re-run, not an outage.
It never approves: a canary that does well still awaits a maintainer.

It knows nothing of platforms or of how replicas route; it reads and writes the
registry in the database.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from learning.errors import LearningError
from storage.db import transaction
from storage.models import Adapter, AdapterStatus, AuditEntry, Feedback, Reply
from storage.repositories import Adapters, Audit

log = logging.getLogger(__name__)

ACTOR = "canary-monitor"
BASE_VERSION = "base"


class CanaryPolicyError(LearningError):
    """The canary policy is invalid."""


@dataclass(frozen=True, kw_only=True)
class CanaryPolicy:
    """When the monitor rolls a canary back (see the module docstring)."""

    alpha: float = 0.05
    """Significance level of the one-sided test."""
    min_votes: int = 30
    """Votes each side needs before anything is decided."""
    test: Literal["z", "fisher"] = "z"
    """The two-proportion z-test or Fisher's exact test."""

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise CanaryPolicyError(f"alpha must be between 0 and 1, not {self.alpha}")
        if self.min_votes < 1:
            raise CanaryPolicyError(f"min_votes must be at least 1, not {self.min_votes}")
        if self.test not in ("z", "fisher"):
            raise CanaryPolicyError(f"test must be 'z' or 'fisher', not {self.test!r}")


def z_test_worse(down_c: int, n_c: int, down_a: int, n_a: int) -> tuple[float, float]:
    """One-sided pooled two-proportion z-test that rate c > rate a: (z, p-value)."""
    if n_c <= 0 or n_a <= 0:
        raise ValueError("both samples need at least one vote")
    pooled = (down_c + down_a) / (n_c + n_a)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_a))
    if se == 0:  # all votes agree on both sides: no evidence either way
        return 0.0, 1.0
    z = (down_c / n_c - down_a / n_a) / se
    return z, 0.5 * math.erfc(z / math.sqrt(2))


def fisher_worse(down_c: int, n_c: int, down_a: int, n_a: int) -> float:
    """One-sided Fisher's exact test that rate c > rate a: the p-value.

    With the margins fixed, the canary's down-votes X are hypergeometric
    (N = n_c + n_a votes, K = down_c + down_a down-votes, n_c drawn); p = P(X >= down_c).
    """
    total, downs = n_c + n_a, down_c + down_a
    denominator = math.comb(total, n_c)
    upper = min(downs, n_c)
    numerator = sum(
        math.comb(downs, k) * math.comb(total - downs, n_c - k) for k in range(down_c, upper + 1)
    )
    return numerator / denominator


@dataclass(frozen=True, slots=True)
class CanaryComparison:
    """The figures of one check."""

    canary: str
    active: str
    since: str
    canary_down: int
    canary_votes: int
    active_down: int
    active_votes: int
    test: str
    alpha: float
    min_votes: int
    z: float | None
    p_value: float | None
    decision: Literal["insufficient", "keep", "rollback"]

    @property
    def canary_rate(self) -> float:
        return self.canary_down / self.canary_votes if self.canary_votes else 0.0

    @property
    def active_rate(self) -> float:
        return self.active_down / self.active_votes if self.active_votes else 0.0

    def summary(self) -> str:
        figures = (
            f"canary {self.canary} thumbs-down {self.canary_rate:.1%} "
            f"({self.canary_down}/{self.canary_votes}) vs active {self.active} "
            f"{self.active_rate:.1%} ({self.active_down}/{self.active_votes}) since {self.since}"
        )
        if self.p_value is None:
            return f"{figures}: fewer than {self.min_votes} votes on a side, no decision"
        name = "one-sided two-proportion z-test" if self.test == "z" else "one-sided Fisher exact"
        z = f" z={self.z:.2f}" if self.z is not None else ""
        relation = "<" if self.p_value < self.alpha else ">="
        return f"{figures}: {name}{z} p={self.p_value:.4g} {relation} alpha {self.alpha}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "canary_rate": self.canary_rate, "active_rate": self.active_rate}


def canary_started_at(session: Session, version: str) -> datetime | None:
    """When the canary's share last rose from 0 (its newest start), from the audit log."""
    rows = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.target_type == "adapter", AuditEntry.target_id == version)
        .where(AuditEntry.action == "adapter.canary")
        .order_by(AuditEntry.id.desc())
    )
    for row in rows:
        if float(row.details.get("from") or 0) <= 0 < float(row.details.get("to") or 0):
            return row.at
    return None


def _votes(session: Session, version: str, since: datetime) -> tuple[int, int]:
    """(down-votes, votes) on replies of ``version`` created since ``since``."""
    down, total = session.execute(
        select(
            func.coalesce(func.sum(case((Feedback.value < 0, 1), else_=0)), 0),
            func.count(Feedback.id),
        )
        .join(Reply, Reply.id == Feedback.reply_id)
        .where(Reply.adapter_version == version, Reply.created_at >= since)
        .where(Feedback.value != 0)
    ).one()
    return int(down), int(total)


def compare(session: Session, canary: Adapter, policy: CanaryPolicy) -> CanaryComparison:
    """The canary's thumbs-down rate against the active adapter's, with the test's verdict."""
    active = Adapters(session).active()
    active_version = active.version if active is not None else BASE_VERSION
    since = canary_started_at(session, canary.version) or canary.updated_at
    down_c, n_c = _votes(session, canary.version, since)
    down_a, n_a = _votes(session, active_version, since)
    z: float | None = None
    p: float | None = None
    decision: Literal["insufficient", "keep", "rollback"] = "insufficient"
    if n_c >= policy.min_votes and n_a >= policy.min_votes:
        if policy.test == "z":
            z, p = z_test_worse(down_c, n_c, down_a, n_a)
        else:
            p = fisher_worse(down_c, n_c, down_a, n_a)
        decision = "rollback" if p < policy.alpha else "keep"
    at = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    return CanaryComparison(
        canary=canary.version,
        active=active_version,
        since=at.isoformat(timespec="seconds"),
        canary_down=down_c,
        canary_votes=n_c,
        active_down=down_a,
        active_votes=n_a,
        test=policy.test,
        alpha=policy.alpha,
        min_votes=policy.min_votes,
        z=z,
        p_value=p,
        decision=decision,
    )


class CanaryMonitor:
    """Checks the running canary and rolls it back when it is significantly worse."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        policy: CanaryPolicy | None = None,
        actor: str = ACTOR,
    ) -> None:
        self.sessions = sessions
        self.policy = policy or CanaryPolicy()
        self.actor = actor

    def check(self) -> CanaryComparison | None:
        """One check; None when no canary runs. Rolls back in the same transaction."""
        with transaction(self.sessions) as s:
            canary = Adapters(s).canary()
            if canary is None:
                return None
            # lock the row (PostgreSQL) so two monitors never both act on one canary
            s.execute(select(Adapter.id).where(Adapter.id == canary.id).with_for_update())
            s.refresh(canary)
            if canary.status is not AdapterStatus.PENDING or canary.canary_percent <= 0:
                return None
            result = compare(s, canary, self.policy)
            if result.decision != "rollback":
                log.info("canary checked", extra={"summary": result.summary()})
                return result
            reason = f"canary rolled back: {result.summary()}"
            registry = Adapters(s)
            registry.set_canary(canary.version, 0, actor=self.actor)
            registry.transition(
                canary.version, AdapterStatus.REJECTED, actor=self.actor, reason=reason
            )
            Audit(s).record(
                actor=self.actor,
                action="adapter.canary_rollback",
                target_type="adapter",
                target_id=canary.version,
                reason=reason,
                details=result.as_dict(),
            )
        log.warning("canary rolled back", extra={"version": result.canary, "reason": reason})
        return result


__all__ = [
    "CanaryComparison",
    "CanaryMonitor",
    "CanaryPolicy",
    "CanaryPolicyError",
    "canary_started_at",
    "compare",
    "fisher_worse",
    "z_test_worse",
]
