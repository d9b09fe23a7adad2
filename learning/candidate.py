"""From prepared examples to a registered candidate: train, evaluate, gate, register.

The second half of every learning cycle (:mod:`learning.cycle`) and of the cold start
(:mod:`learning.coldstart`): training in a child process, evaluation of the candidate
against the active adapter (or the base model) in a child process, the gate, the
report beside the adapter, the adapter into the store (manifest last), and, in one
transaction that first re-checks that none of its snapshots was tainted by an erasure
meanwhile, the registry: candidate, then pending (or active with ``auto_promote``) or
rejected, every step an audit row. It knows nothing of where the examples came from.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from learning.evalreport import write_report
from learning.evaluate import BASE, EvalSpec
from learning.examples import write_jsonl
from learning.finetune import TrainSpec
from learning.gate import decide
from learning.worker import evaluate_in_subprocess, train_in_subprocess
from serving.registry import write_adapter
from storage.db import transaction
from storage.models import AdapterStatus, DatasetSnapshot, RunStatus
from storage.repositories import Adapters, LearningRuns

log = logging.getLogger(__name__)

ACTOR = "learning"


@dataclass(frozen=True)
class CycleOutcome:
    run_id: int | None
    status: str
    version: str | None
    reason: str
    report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class CandidateJob:
    """What to train on and how to judge it (all prompts already built as served)."""

    version: str
    sft: list[dict[str, Any]]
    eval_sft: list[dict[str, Any]]
    items: list[dict[str, Any]]
    kto: list[dict[str, Any]] = field(default_factory=list)
    dpo: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    snapshot_id: int | None = None
    snapshot_ids: list[int] = field(default_factory=list)
    digest: str = ""


def train_evaluate_register(
    config: Any,
    *,
    sessions: sessionmaker[Session],
    run_id: int,
    work: Path,
    job: CandidateJob,
    active_ref: tuple[str, str | None] | None,
    progress: bool,
) -> CycleOutcome:
    echo = config.echo or (lambda _line: None)
    work.mkdir(parents=True, exist_ok=True)
    write_jsonl(work / "sft.jsonl", job.sft)
    write_jsonl(work / "eval.jsonl", job.eval_sft)
    write_jsonl(work / "kto.jsonl", job.kto)
    write_jsonl(work / "dpo.jsonl", job.dpo)
    result = train_in_subprocess(
        TrainSpec(
            model_path=config.model_path,
            out_dir=str(work / "train"),
            config=config.train,
            sft_path=str(work / "sft.jsonl"),
            eval_path=str(work / "eval.jsonl") if job.eval_sft else None,
            kto_path=str(work / "kto.jsonl"),
            dpo_path=str(work / "dpo.jsonl"),
            dtype_cache=str(config.work_dir / "dtype-cache.json"),
            show_progress=progress,
        ),
        timeout_s=config.train_timeout_s,
        echo=echo if progress else None,
    )
    baseline = "active" if active_ref is not None and active_ref[1] else BASE
    write_jsonl(work / "eval-items.jsonl", job.items)
    write_jsonl(work / "pairs.jsonl", job.pairs)
    write_jsonl(work / "general.jsonl", config.general_chat)
    adapters: dict[str, str | None] = {"candidate": result.adapter_dir}
    adapters[baseline] = active_ref[1] if baseline == "active" and active_ref else None
    echo(f"· evaluating the candidate against {baseline} on {len(job.items)} items")
    report = evaluate_in_subprocess(
        EvalSpec(
            model_path=config.model_path,
            adapters=adapters,
            items_path=str(work / "eval-items.jsonl"),
            pairs_path=str(work / "pairs.jsonl"),
            general_path=str(work / "general.jsonl") if config.general_chat else None,
            canaries=tuple((str(p), str(s)) for p, s in config.canaries),
            max_new_tokens=config.eval_max_new_tokens,
            max_items=config.max_eval_items,
            threads=config.train.threads,
            show_progress=progress,
        ),
        work / "eval",
        embedder=config.embedder,
        nice=config.train.nice,
        timeout_s=config.eval_timeout_s,
        echo=echo if progress else None,
    )
    decision = decide(
        report.summary("candidate"),
        report.summary(baseline),
        config.gate,
        baseline_is_adapter=baseline == "active",
    )
    version = job.version
    metrics: dict[str, Any] = {
        "snapshots": job.snapshot_ids,
        "baseline": (active_ref[0] if active_ref else None) or BASE,
        "candidate": report.summary("candidate"),
        "baseline_scores": report.summary(baseline),
        "gate": decision.as_dict(),
        "train": json.loads(result.to_json()),
    }
    report_dir = config.adapter_dir / "reports" / version
    write_report(report, decision, report_dir, title=f"adapter {version}", baseline=baseline)
    manifest = write_adapter(
        config.adapter_dir,
        version,
        Path(result.adapter_dir),
        base_model_id=config.base_model_id,
        dataset_sha256=job.digest or "0" * 64,
        metrics={k: metrics[k] for k in ("snapshots", "baseline", "candidate", "gate")},
    )
    with transaction(sessions) as s:
        tainted = list(
            s.scalars(
                select(DatasetSnapshot.id).where(
                    DatasetSnapshot.id.in_(job.snapshot_ids), DatasetSnapshot.tainted.is_(True)
                )
            )
        )
        repo = Adapters(s)
        row = repo.register(
            version=version,
            base_model=config.base_model_id,
            snapshot_id=job.snapshot_id,
            path=str(config.adapter_dir / version),
            weights_sha256=manifest.weights_sha256,
            actor=ACTOR,
        )
        repo.set_metrics(version, {**metrics, "report_dir": str(report_dir)})
        repo.transition(version, AdapterStatus.CANDIDATE, actor=ACTOR, reason="trained")
        if tainted:
            row.tainted = True
            repo.transition(
                version,
                AdapterStatus.REJECTED,
                actor=ACTOR,
                reason=f"trained on snapshots {tainted}, erased since",
            )
            status, reason = "rejected", f"trained on erased data (snapshots {tainted})"
        elif not decision.passed:
            repo.transition(version, AdapterStatus.REJECTED, actor="gate", reason=decision.reason())
            status, reason = "rejected", decision.reason()
        else:
            repo.transition(version, AdapterStatus.PENDING, actor="gate", reason=decision.reason())
            status, reason = "pending", decision.reason()
            if config.gate.auto_promote:
                repo.transition(version, AdapterStatus.ACTIVE, actor="gate", reason="auto-promote")
                status = "active"
        LearningRuns(s).finish(
            run_id,
            status=RunStatus.SUCCEEDED,
            report={"status": status, "reason": reason[:2000], **metrics},
            snapshot_id=job.snapshot_id,
            candidate_version=version,
        )
    log.info("candidate registered", extra={"run_id": run_id, "version": version, "status": status})
    return CycleOutcome(run_id, status, version, reason, metrics)
