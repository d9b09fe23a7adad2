"""``chatloop simulate``: drive the whole product with simulated people and measure learning.

No platform and no code path of its own: simulated customers ask through the same
:class:`~bot.core.handler.Core` the platforms use (built by :mod:`chatloop.app`, on a
fresh database, with the configured engine, answer memory and registry follower);
they vote 👍 when the answer is close to the reference (ROUGE-L >= 0.5) and 👎
otherwise, and a simulated staff member flags each 👎 with the reference as the
correction (so it enters the answer memory at once). Then the learning loop's cycle
runs exactly as the scheduler's job runs it (snapshot with anonymization and cleaning,
training, evaluation, gate); a simulated maintainer approves a pending candidate with
the chat command, and the registry follower hot-swaps it into the engine.

Scores, measured through the core on the paraphrases when the data set has them
(else on chat-style variants of the questions, which is weaker and said so):
``correct_share`` (ROUGE-L >= 0.5), mean ``rouge_l``, ``embed_sim`` (cosine of
MiniLM embeddings when the memory's embedder is loaded), and ``general_loss`` (the
served model's loss on the held-out general-chat set: forgetting). Measured before any
learning (cycle 0), right after the corrections (``memory_only``: memory, no
training), and after each cycle.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bot.core.events import (
    CommandEvent,
    FlagEvent,
    MessageEvent,
    Person,
    Place,
    ReplyRef,
    VoteEvent,
)
from chatloop.settings import Settings

Echo = Callable[[str], None]


class SimulationError(Exception):
    """The simulation cannot run (bad data set, no model); the message says why."""


@dataclass(frozen=True, slots=True)
class QA:
    question: str
    answer: str
    paraphrases: tuple[str, ...] = ()


def load_dataset(spec: str) -> list[QA]:
    """A JSON-lines file of ``{"question", "answer", "paraphrases"?}``, or a named set.

    Names: ``qary`` (the FAQ pairs shipped in the ``qary`` wheel; no paraphrases).
    Questions are deduplicated (case- and space-insensitive) before anything else.
    """
    rows: list[QA] = []
    path = Path(spec).expanduser()
    if path.suffix == ".jsonl" or path.exists():
        if not path.is_file():
            raise SimulationError(f"no such data set file: {path}")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                rows.append(
                    QA(
                        question=str(data["question"]).strip(),
                        answer=str(data["answer"]).strip(),
                        paraphrases=tuple(str(p).strip() for p in data.get("paraphrases") or ()),
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise SimulationError(f"{path}:{n}: not a question/answer object ({exc})") from exc
    elif spec == "qary":
        from learning.coldstart import qary_pairs

        rows = [QA(q, a) for q, a in qary_pairs()]
    else:
        raise SimulationError(f"unknown data set {spec!r}: give a .jsonl path or 'qary'")
    seen: set[str] = set()
    unique: list[QA] = []
    for qa in rows:
        key = re.sub(r"\s+", " ", qa.question.casefold())
        if qa.question and qa.answer and key not in seen:
            seen.add(key)
            unique.append(qa)
    if not unique:
        raise SimulationError(f"data set {spec!r} has no question/answer pairs")
    return unique


@dataclass
class Scores:
    correct_share: float
    rouge_l: float
    embed_sim: float | None
    general_loss: float | None
    n: int


@dataclass
class CycleRecord:
    cycle: int
    correct_share: float
    rouge_l: float
    embed_sim: float | None
    general_loss: float | None
    adapter: str
    promoted: bool
    status: str = ""
    seconds: float = 0.0


@dataclass
class SimulationResult:
    dataset: str
    questions: int
    probes: int
    probe_kind: str
    cycles: list[CycleRecord] = field(default_factory=list)
    memory_only: dict[str, Any] = field(default_factory=dict)
    feedback: list[dict[str, int]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Collect:
    """A reply sink that keeps the final text (the simulated customer reads it)."""

    def __init__(self) -> None:
        self.text = ""
        self.notices: list[str] = []

    async def delta(self, text: str) -> None:
        return None

    async def done(self, text: str, *, reply_id: int, note: str = "") -> str:
        self.text = text
        return f"sim-{reply_id}"

    async def notice(self, text: str) -> None:
        self.notices.append(text)


PLATFORM = "sim"
CUSTOMER = Person("customer")
STAFF = Person("staff")
MAINTAINER = Person("maintainer")


def simulation_settings(base: Settings, work: Path) -> Settings:
    """The operator's settings on a fresh database and stores under ``work``."""
    return base.model_copy(
        update={
            "database_url": f"sqlite:///{work / 'sim.db'}",
            "adapter_dir": work / "adapters",
            "snapshot_dir": work / "snapshots",
            "learn_work_dir": work / "learning",
            "staff": [f"{PLATFORM}:{STAFF.user_id}"],
            "maintainers": [f"{PLATFORM}:{MAINTAINER.user_id}"],
            "user_messages_per_minute": 0,
            "slack_bot_token": None,
            "discord_token": None,
        }
    )


class Simulation:
    def __init__(self, settings: Settings, qas: Sequence[QA], *, echo: Echo, seed: int = 0) -> None:
        from learning.evaluate import rouge_l

        self.settings = settings
        self.qas = list(qas)
        self.echo = echo
        self.rouge = rouge_l
        self.rng = random.Random(seed)
        self.asked = 0
        self.probes: list[tuple[str, str]] = []
        for qa in self.qas:
            if qa.paraphrases:
                self.probes += [(p, qa.answer) for p in qa.paraphrases]
        self.probe_kind = "paraphrases"
        if not self.probes:
            from learning.ragdata import chat_variants

            self.probe_kind = "chat-style variants of the questions (no paraphrases given)"
            rng = random.Random(seed + 1)
            self.probes = [
                (v, qa.answer) for qa in self.qas for v in chat_variants(qa.question, rng, 1)
            ]

    def _place(self, tag: str) -> Place:
        self.asked += 1
        return Place(
            PLATFORM, f"C-{tag}", "thread", thread_id=f"{tag}-{self.asked}", workspace_id="W1"
        )

    async def ask(self, core: Any, text: str, tag: str) -> tuple[str, int | None, Place]:
        place = self._place(tag)
        sink = _Collect()
        event = MessageEvent(place=place, author=CUSTOMER, text=text, event_id=f"m{self.asked}")
        outcome = await core.on_message(event, sink)
        return sink.text, outcome.reply_id, place

    async def score(self, core: Any, embedder: Any) -> Scores:
        sem = asyncio.Semaphore(max(1, self.settings.max_batch_size))

        async def one(question: str) -> str:
            async with sem:
                return (await self.ask(core, question, "probe"))[0]

        answers = await asyncio.gather(*(one(q) for q, _ in self.probes))
        refs = [ref for _, ref in self.probes]
        rl = [self.rouge(a, r) for a, r in zip(answers, refs, strict=True)]
        sim = None
        if embedder is not None:
            a_emb, r_emb = embedder.embed(answers), embedder.embed(refs)
            sim = float(
                statistics.fmean(float((x * y).sum()) for x, y in zip(a_emb, r_emb, strict=True))
            )
        return Scores(
            correct_share=round(sum(v >= 0.5 for v in rl) / len(rl), 4),
            rouge_l=round(statistics.fmean(rl), 4),
            embed_sim=round(sim, 4) if sim is not None else None,
            general_loss=None,
            n=len(rl),
        )

    async def customers(self, core: Any) -> dict[str, int]:
        """Every question asked once; 👍 close answers, 👎 + a staff correction otherwise."""
        sem = asyncio.Semaphore(max(1, self.settings.max_batch_size))
        counts = {"up": 0, "down": 0, "corrected": 0}

        async def one(i: int, qa: QA) -> None:
            async with sem:
                text, reply_id, place = await self.ask(core, qa.question, "customer")
            if reply_id is None:
                return
            ref = ReplyRef(place=place, reply_id=reply_id)
            good = self.rouge(text, qa.answer) >= 0.5
            await core.on_vote(
                VoteEvent(ref=ref, voter=CUSTOMER, value=1 if good else -1, source="button")
            )
            counts["up" if good else "down"] += 1
            if not good:
                outcome = await core.on_flag(
                    FlagEvent(ref=ref, flagger=STAFF, reason="wrong answer", correction=qa.answer)
                )
                counts["corrected"] += int(outcome.ok)

        await asyncio.gather(*(one(i, qa) for i, qa in enumerate(self.qas)))
        return counts


def general_loss(loop: Any, adapter_path: str | None, work: Path) -> float | None:
    """The served model's loss on the held-out general-chat set (forgetting)."""
    from learning.evaluate import EvalSpec
    from learning.examples import write_jsonl
    from learning.worker import evaluate_in_subprocess

    if not loop.general_chat:
        return None
    items = [
        {"prompt": g["prompt"], "reference": g["completion"][0]["content"], "slice": "general"}
        for g in loop.general_chat
    ]
    work.mkdir(parents=True, exist_ok=True)
    write_jsonl(work / "general-items.jsonl", items)
    report = evaluate_in_subprocess(
        EvalSpec(
            model_path=loop.model_path,
            adapters={"served": adapter_path},
            items_path=str(work / "general-items.jsonl"),
            max_new_tokens=1,
            latency_prompts=0,
        ),
        work,
        nice=0,
    )
    value = report.models["served"].eval_loss
    return round(value, 4) if value is not None else None


async def run_simulation(
    base_settings: Settings,
    qas: Sequence[QA],
    *,
    cycles: int,
    echo: Echo,
    work_dir: Path | None = None,
    dataset_name: str = "",
) -> SimulationResult:
    from chatloop.app import build_core, build_serving, start_database
    from chatloop.learnwire import build_loop_config
    from learning.cycle import run_cycle

    start = time.perf_counter()
    work = work_dir or Path(tempfile.mkdtemp(prefix="chatloop-sim-"))
    settings = simulation_settings(base_settings, work)
    db = await start_database(settings, progress=echo)
    serving = await build_serving(settings, db, echo)
    sim = Simulation(settings, qas, echo=echo)
    result = SimulationResult(
        dataset=dataset_name,
        questions=len(sim.qas),
        probes=len(sim.probes),
        probe_kind=sim.probe_kind,
    )
    try:
        if serving.follower is not None:
            await serving.follower.sync_once()
        core = build_core(settings, serving.generator, db)
        memory = getattr(core, "memory", None)
        embedder = memory.embedder if memory is not None else None
        loop = await asyncio.to_thread(build_loop_config, settings, echo=echo)
        echo(f"· cycle 0: scoring {len(sim.probes)} {sim.probe_kind} before any learning")
        before = await sim.score(core, embedder)
        before.general_loss = await asyncio.to_thread(general_loss, loop, None, work / "general-0")
        result.cycles.append(CycleRecord(0, before.correct_share, before.rouge_l, before.embed_sim,
                                         before.general_loss, "base", False))  # fmt: skip
        active_path: str | None = None
        adapter = "base"
        for c in range(1, cycles + 1):
            echo(f"· cycle {c}: {len(sim.qas)} customers ask, vote, staff correct")
            result.feedback.append(await sim.customers(core))
            if c == 1:
                mem = await sim.score(core, embedder)
                mem.general_loss = before.general_loss  # same served model
                result.memory_only = asdict(mem)
                echo(f"  memory only: correct {mem.correct_share:.2f}, ROUGE-L {mem.rouge_l:.3f}")
            t0 = time.perf_counter()
            outcome = await asyncio.to_thread(
                run_cycle, loop, sessions=db.sessions, trigger="simulation"
            )
            label = f"{outcome.status} {outcome.version or ''}".strip()
            echo(f"  learning cycle: {label}: {outcome.reason[:150]}")
            promoted = False
            if outcome.status == "pending" and outcome.version:
                approval = await core.on_command(
                    CommandEvent(place=sim._place("ops"), author=MAINTAINER, name="approve",
                                 args=(outcome.version,), event_id=f"approve-{c}")
                )  # fmt: skip
                promoted = approval.ok
            elif outcome.status == "active":
                promoted = True
            if promoted and outcome.version:
                adapter = outcome.version
                active_path = str(settings.adapter_dir / outcome.version)
                if serving.follower is not None:
                    await serving.follower.sync_once()  # the hot-swap every replica does
            after = await sim.score(core, embedder)
            after.general_loss = await asyncio.to_thread(
                general_loss, loop, active_path, work / f"general-{c}"
            )
            result.cycles.append(
                CycleRecord(
                    cycle=c,
                    correct_share=after.correct_share,
                    rouge_l=after.rouge_l,
                    embed_sim=after.embed_sim,
                    general_loss=after.general_loss,
                    adapter=adapter,
                    promoted=promoted,
                    status=outcome.status,
                    seconds=round(time.perf_counter() - t0, 1),
                )
            )
            echo(
                f"  after cycle {c}: correct {after.correct_share:.2f}, ROUGE-L {after.rouge_l:.3f}"
            )
    finally:
        await serving.aclose()
        db.close()
    result.seconds = round(time.perf_counter() - start, 1)
    return result


def plot(result: SimulationResult, path: Path, *, max_forgetting: float | None = None) -> None:
    """The curve: scores per cycle (memory only between 0 and 1), forgetting in % of cycle 0.

    ``max_forgetting``: the gate's bound on general-chat loss (relative), drawn as a line;
    default: the gate's default policy.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from learning.gate import GatePolicy

    bound = GatePolicy().max_forgetting if max_forgetting is None else max_forgetting
    xs = [c.cycle for c in result.cycles]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(xs, [c.correct_share for c in result.cycles], marker="o", label="correct share")
    axes[0].plot(xs, [c.rouge_l for c in result.cycles], marker="s", label="ROUGE-L")
    if result.memory_only:
        axes[0].scatter([0.5], [result.memory_only["correct_share"]], marker="*", s=160,
                        color="tab:red", label="memory only (correct share)", zorder=3)  # fmt: skip
    axes[0].set_xlabel("learning cycle (0 = before any learning)")
    axes[0].set_xticks(xs)
    axes[0].set_ylim(0, 1)
    axes[0].grid(alpha=0.3)
    axes[0].set_title(f"{result.dataset}: {result.probes} {result.probe_kind.split(' (')[0]}")
    axes[0].legend(loc="upper left", fontsize="small")
    base = result.cycles[0].general_loss if result.cycles else None
    rel = [
        100.0 * (c.general_loss / base - 1.0)
        if c.general_loss is not None and base
        else float("nan")
        for c in result.cycles
    ]
    axes[1].plot(xs, rel, marker="o", color="tab:gray", label="general-chat loss vs cycle 0")
    axes[1].axhline(
        100.0 * bound, linestyle="--", color="tab:red", label=f"gate bound +{bound:.0%}"
    )
    axes[1].axhline(0.0, color="black", linewidth=0.5)
    axes[1].set_xticks(xs)
    axes[1].set_ylim(
        min(-1.0, *[r for r in rel if r == r]) - 1.0,
        max(100.0 * bound, *[r for r in rel if r == r]) + 2.0,
    )
    axes[1].set_xlabel("learning cycle")
    axes[1].set_ylabel("% change")
    axes[1].set_title("forgetting: general-chat loss")
    axes[1].legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
