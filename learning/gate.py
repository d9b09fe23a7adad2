"""The gate: may a candidate adapter go before a maintainer, or is it rejected?

Rules, each configurable in :class:`GatePolicy` and each reported as a
:class:`Check` with its value and limit, so a maintainer sees why:

1. **primary**: the candidate beats the baseline (the active adapter, or the base
   model) on the primary metric by at least ``min_gain`` (``eval_loss``: relative
   decrease; score metrics such as ``rouge_l``/``correct_share``: absolute increase);
2. **slices**: no slice's ROUGE-L is worse than the baseline's by more than
   ``slice_tolerance`` (slices smaller than ``min_slice_items`` are reported, not judged);
3. **canaries**: at most ``max_canary_leaks`` seeded secrets reproduced (default 0);
4. **forgetting**: general-chat loss at most ``max_forgetting`` (relative) above the
   baseline's;
5. **latency**: ms per generated token at most ``max_latency_increase`` above the
   baseline's, when the baseline is an adapter too (against the base model a LoRA
   adapter's extra matmuls are expected and this rule is reported only).

A candidate that passes every rule becomes *pending* (or active, where
``auto_promote`` says so). It knows nothing of the database or models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

LOWER_IS_BETTER = frozenset({"eval_loss", "general_loss"})
Primary = Literal["eval_loss", "rouge_l", "correct_share", "embed_sim", "preference_accuracy"]


@dataclass(frozen=True, kw_only=True)
class GatePolicy:
    primary: Primary = field(
        default="eval_loss",
        metadata={"help": "Metric a candidate must beat the baseline on."},
    )
    min_gain: float = field(
        default=0.01,
        metadata={
            "help": "Margin on the primary metric: relative for losses (0.01 = 1% lower), "
            "absolute for scores."
        },
    )
    slice_tolerance: float = field(
        default=0.05, metadata={"help": "Largest ROUGE-L drop allowed on any slice."}
    )
    min_slice_items: int = field(
        default=5, metadata={"help": "Slices with fewer eval items are reported, not judged."}
    )
    max_canary_leaks: int = field(
        default=0, metadata={"help": "Seeded secrets a candidate may reproduce."}
    )
    max_forgetting: float = field(
        default=0.05,
        metadata={"help": "Largest relative rise of the general-chat loss (forgetting)."},
    )
    max_latency_increase: float = field(
        default=0.10, metadata={"help": "Largest relative rise of ms per generated token."}
    )
    auto_promote: bool = field(
        default=False,
        metadata={"help": "Activate a passing candidate without waiting for a maintainer."},
    )

    def __post_init__(self) -> None:
        if self.primary not in (
            "eval_loss",
            "rouge_l",
            "correct_share",
            "embed_sim",
            "preference_accuracy",
        ):
            raise ValueError(f"unknown primary metric {self.primary!r}")
        for name in ("slice_tolerance", "max_forgetting", "max_latency_increase"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_canary_leaks < 0 or self.min_slice_items < 0:
            raise ValueError("max_canary_leaks and min_slice_items must be >= 0")


@dataclass(frozen=True, slots=True)
class Check:
    rule: str
    passed: bool
    value: float | None
    limit: float | None
    detail: str
    judged: bool = True


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    checks: tuple[Check, ...]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.judged and not c.passed]

    def reason(self) -> str:
        if self.passed:
            return "passed: " + "; ".join(c.detail for c in self.checks if c.judged)
        return "rejected: " + "; ".join(c.detail for c in self.failures)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}


def _num(scores: dict[str, Any], key: str) -> float | None:
    value = scores.get(key)
    return float(value) if isinstance(value, int | float) else None


def decide(
    candidate: dict[str, Any],
    baseline: dict[str, Any],
    policy: GatePolicy,
    *,
    baseline_is_adapter: bool,
) -> GateDecision:
    """Apply the policy's rules to two models' scores (``EvalReport.summary`` dicts)."""
    checks: list[Check] = []
    key = policy.primary
    cand, base = _num(candidate, key), _num(baseline, key)
    if cand is None or base is None:
        checks.append(Check("primary", False, cand, base, f"{key} is missing"))
    elif key in LOWER_IS_BETTER:
        limit = base * (1 - policy.min_gain)
        checks.append(
            Check(
                "primary",
                cand <= limit,
                cand,
                limit,
                f"{key} {cand:.4f} vs baseline {base:.4f} (must be <= {limit:.4f})",
            )
        )
    else:
        limit = base + policy.min_gain
        checks.append(
            Check(
                "primary",
                cand >= limit,
                cand,
                limit,
                f"{key} {cand:.4f} vs baseline {base:.4f} (must be >= {limit:.4f})",
            )
        )

    cand_slices: dict[str, dict[str, float]] = candidate.get("slices") or {}
    base_slices: dict[str, dict[str, float]] = baseline.get("slices") or {}
    for name in sorted(set(cand_slices) & set(base_slices)):
        c, b = cand_slices[name], base_slices[name]
        floor = b["rouge_l"] - policy.slice_tolerance
        judged = c.get("n", 0) >= policy.min_slice_items
        checks.append(
            Check(
                f"slice:{name}",
                c["rouge_l"] >= floor,
                c["rouge_l"],
                floor,
                f"slice {name} ROUGE-L {c['rouge_l']:.3f} (floor {floor:.3f}, n={int(c['n'])})",
                judged=judged,
            )
        )

    leaks = int(candidate.get("canary_leaks") or 0)
    checks.append(
        Check(
            "canaries",
            leaks <= policy.max_canary_leaks,
            leaks,
            policy.max_canary_leaks,
            f"{leaks} canary leak(s) (at most {policy.max_canary_leaks})",
        )
    )

    cg, bg = _num(candidate, "general_loss"), _num(baseline, "general_loss")
    if cg is not None and bg is not None:
        limit = bg * (1 + policy.max_forgetting)
        checks.append(
            Check(
                "forgetting",
                cg <= limit,
                cg,
                limit,
                f"general-chat loss {cg:.4f} (at most {limit:.4f})",
            )
        )

    cl, bl = _num(candidate, "ms_per_token"), _num(baseline, "ms_per_token")
    if cl is not None and bl is not None:
        limit = bl * (1 + policy.max_latency_increase)
        checks.append(
            Check(
                "latency",
                cl <= limit,
                cl,
                limit,
                f"{cl:.1f} ms/token (at most {limit:.1f})"
                + ("" if baseline_is_adapter else "; baseline is the base model, not judged"),
                judged=baseline_is_adapter,
            )
        )
    passed = all(c.passed for c in checks if c.judged)
    return GateDecision(passed=passed, checks=tuple(checks))
