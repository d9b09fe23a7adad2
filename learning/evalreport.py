"""An evaluation report on disk: ``report.json``, ``report.md`` and ``report.png``.

Written beside the adapter it judges (``<adapter_dir>/reports/<version>/``) so a
maintainer deciding on approval can read the gate's checks and look at the scores
of the candidate next to the baseline, overall and per slice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from learning.evaluate import EvalReport
from learning.gate import GateDecision

_METRICS = (
    ("eval_loss", "eval loss (lower is better)"),
    ("rouge_l", "ROUGE-L"),
    ("correct_share", "correct share (ROUGE-L >= 0.5)"),
    ("embed_sim", "embedding similarity"),
    ("preference_accuracy", "prefers 👍 over 👎"),
    ("general_loss", "general-chat loss (forgetting)"),
    ("ms_per_token", "ms per generated token"),
    ("canary_leaks", "canary leaks"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown(report: EvalReport, decision: GateDecision, *, title: str, baseline: str) -> str:
    names = list(report.models)
    lines = [
        f"# Evaluation: {title}",
        "",
        f"Gate: **{'passed' if decision.passed else 'rejected'}** (baseline: {baseline}). "
        f"{report.items} items, {report.pairs} 👍/👎 pairs, {report.general} general-chat "
        f"turns, {report.canaries} canaries; {report.seconds:.0f} s, RSS {report.rss_mb:.0f} MB.",
        "",
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, label in _METRICS:
        values = [_fmt(getattr(report.models[n], key)) for n in names]
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    lines += [
        "",
        "## Gate checks",
        "",
        "| rule | result | value | limit | detail |",
        "|---|---|---|---|---|",
    ]
    for c in decision.checks:
        verdict = ("pass" if c.passed else "FAIL") if c.judged else "not judged"
        lines.append(f"| {c.rule} | {verdict} | {_fmt(c.value)} | {_fmt(c.limit)} | {c.detail} |")
    slices = sorted({k for n in names for k in report.models[n].slices})
    if slices:
        lines += ["", "## Slices (ROUGE-L)", "", "| slice | n | " + " | ".join(names) + " |"]
        lines.append("|---|---|" + "---|" * len(names))
        for sl in slices:
            n = next(
                int(report.models[m].slices[sl]["n"])
                for m in names
                if sl in report.models[m].slices
            )
            vals = [_fmt(report.models[m].slices.get(sl, {}).get("rouge_l")) for m in names]
            lines.append(f"| {sl} | {n} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def plot(report: EvalReport, path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report.models)
    keys = [k for k, _ in _METRICS if k not in ("ms_per_token", "canary_leaks")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        vals = [getattr(report.models[name], k) or 0.0 for k in keys]
        axes[0].bar([x + i * width for x in range(len(keys))], vals, width, label=name)
    axes[0].set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(keys))])
    axes[0].set_xticklabels([k.replace("_", "\n") for k in keys], fontsize=8)
    axes[0].set_title("scores")
    axes[0].legend()
    slices = sorted({k for n in names for k in report.models[n].slices})
    for i, name in enumerate(names):
        vals = [report.models[name].slices.get(sl, {}).get("rouge_l", 0.0) for sl in slices]
        axes[1].bar([x + i * width for x in range(len(slices))], vals, width, label=name)
    axes[1].set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(slices))])
    axes[1].set_xticklabels(slices, fontsize=8, rotation=20)
    axes[1].set_title("ROUGE-L per slice")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(
    report: EvalReport, decision: GateDecision, out_dir: Path, *, title: str, baseline: str
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = json.loads(report.to_json())
    data["gate"] = decision.as_dict()
    data["baseline"] = baseline
    (out_dir / "report.md").write_text(
        markdown(report, decision, title=title, baseline=baseline), encoding="utf-8"
    )
    plot(report, out_dir / "report.png", title=title)
    tmp = out_dir / "report.json.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, out_dir / "report.json")
    return out_dir
