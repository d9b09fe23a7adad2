"""A snapshot's report: what went in, what was dropped and why, what was kept.

``chatloop data report`` prints the funnel (selected replies -> examples ->
dropped by reason -> train / eval), personal-data counts by type and a length
histogram of the training rows, and draws the same as a PNG (matplotlib, Agg
backend: no display needed). It reads only the snapshot directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learning.snapshot import read_manifest, read_rows

BINS = (0, 50, 100, 200, 400, 800, 1600, 3200, 10**9)


@dataclass(frozen=True)
class SnapshotReport:
    path: Path
    funnel: list[tuple[str, int]]
    dropped: dict[str, int]
    pii: dict[str, int]
    lengths: list[tuple[str, int]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "funnel": dict(self.funnel),
            "dropped": self.dropped,
            "pii": self.pii,
            "lengths": dict(self.lengths),
        }


def _bin_label(lo: int, hi: int) -> str:
    return f"{lo}+" if hi >= 10**9 else f"{lo}-{hi - 1}"


def build_report(path: Path) -> SnapshotReport:
    manifest = read_manifest(path)
    counts = manifest["counts"]
    cleaned = counts["clean"]
    funnel = [
        ("replies with feedback", counts["selected_replies"]),
        ("  of which judged late", counts.get("reselected_replies", 0)),
        ("eval-set questions excluded", counts["eval_set_questions_excluded"]),
        ("examples (one per vote)", counts["examples"]),
        ("kept after cleaning", cleaned["kept"]),
        ("  of which corrected by staff", cleaned["corrected"]),
        ("train", counts["train"]),
        ("eval", counts["eval"]),
    ]
    lengths = [0] * (len(BINS) - 1)
    for row in read_rows(path, "train"):
        n = len(row["prompt"]) + len(row["answer"])
        for i in range(len(BINS) - 1):
            if BINS[i] <= n < BINS[i + 1]:
                lengths[i] += 1
                break
    labels = [_bin_label(BINS[i], BINS[i + 1]) for i in range(len(BINS) - 1)]
    return SnapshotReport(
        path=path,
        funnel=funnel,
        dropped=dict(cleaned["dropped"]),
        pii=dict(counts["pii"]),
        lengths=list(zip(labels, lengths, strict=True)),
    )


def render_text(report: SnapshotReport) -> str:
    out = [f"snapshot {report.path.name}", "", "funnel"]
    out += [f"  {name:<32} {n:>7}" for name, n in report.funnel]
    out += ["", "dropped while cleaning"]
    out += [f"  {reason:<32} {n:>7}" for reason, n in sorted(report.dropped.items())] or [
        "  (nothing)"
    ]
    out += ["", "personal data replaced"]
    out += [f"  {kind:<32} {n:>7}" for kind, n in sorted(report.pii.items())] or ["  (none)"]
    out += ["", "training rows by length (characters of question + answer)"]
    peak = max((n for _, n in report.lengths), default=0) or 1
    out += [f"  {label:>10} {n:>6} {'█' * round(30 * n / peak)}" for label, n in report.lengths]
    return "\n".join(out)


def render_png(report: SnapshotReport, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    names = [n.strip() for n, _ in report.funnel] + [f"drop: {r}" for r in report.dropped]
    values = [v for _, v in report.funnel] + list(report.dropped.values())
    colors = ["#4C72B0"] * len(report.funnel) + ["#C44E52"] * len(report.dropped)
    axes[0].barh(names[::-1], values[::-1], color=colors[::-1])
    axes[0].set_title("Funnel and drops")
    pii_items = sorted(report.pii.items(), key=lambda kv: -kv[1]) or [("none", 0)]
    axes[1].bar([k for k, _ in pii_items], [v for _, v in pii_items], color="#55A868")
    axes[1].set_title("Personal data replaced, by type")
    axes[1].tick_params(axis="x", rotation=45)
    axes[2].bar([k for k, _ in report.lengths], [v for _, v in report.lengths], color="#8172B2")
    axes[2].set_title("Training rows by length (chars)")
    axes[2].tick_params(axis="x", rotation=45)
    fig.suptitle(f"chatloop snapshot {report.path.name}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
