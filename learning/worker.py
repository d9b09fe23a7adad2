"""Run training or evaluation in a process of its own, with a thread budget.

The learning loop never trains in the process that serves or schedules: a child
``python -m learning.worker train|evaluate <spec.json>`` runs with ``nice`` (lower CPU
priority; training also in Linux's SCHED_IDLE class, see :func:`lower_priority`),
``OMP_NUM_THREADS``/``torch.set_num_threads`` set to the budget, and its
own memory, so the bot keeps answering and a crash or a kill (OOM, SIGKILL) takes
only the child down. The parent reads the result file the child writes last; a
child that died leaves none, and :class:`~learning.errors.WorkerError` carries the
tail of its stderr.

Run by hand: ``python -m learning.worker train spec.json`` (prints the result JSON).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from learning.errors import WorkerError
from learning.evaluate import EvalReport, EvalSpec
from learning.finetune import RESULT, TrainResult, TrainSpec

log = logging.getLogger(__name__)

Echo = Callable[[str], None]


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    n = str(max(1, threads))
    env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, TOKENIZERS_PARALLELISM="false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def lower_priority(nice: int, *, idle: bool) -> Callable[[], None]:
    """What a child runs before exec: ``nice``, and with ``idle`` the SCHED_IDLE class.

    Under SCHED_IDLE (Linux) the kernel runs the child only on CPU time no normal
    thread wants: a bot thread that wakes up preempts it at once, where niceness
    alone still lets it finish its time slice (measured: the bot's time to first
    token p95 3.2x idle at nice 19 on a 2-core CPU). Where the class does not exist
    (macOS) or is refused, niceness is all there is.
    """

    def apply() -> None:
        if nice:
            os.nice(nice)
        if idle and hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
            with contextlib.suppress(OSError):
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

    return apply


def _run(
    command: str,
    spec_path: Path,
    out_path: Path,
    *,
    threads: int,
    nice: int,
    idle: bool = False,
    timeout_s: float | None,
    echo: Echo | None,
) -> None:
    out_path.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "learning.worker", command, str(spec_path), str(out_path)]
    proc = subprocess.Popen(  # noqa: S603 - our own module, argv built above
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(threads),
        preexec_fn=lower_priority(nice, idle=idle),
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    tail: collections.deque[str] = collections.deque(maxlen=30)

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.rstrip())
            if echo is not None:
                echo(line.rstrip("\n"))

    reader = threading.Thread(target=pump, name=f"worker-{command}-stderr", daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise WorkerError(
            f"{command} ran past its {timeout_s:.0f} s limit and was stopped"
        ) from exc
    finally:
        reader.join(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()
    if rc != 0 or not out_path.exists():
        detail = "\n".join(tail)
        raise WorkerError(f"{command} process exited with {rc}:\n{detail}")


def train_in_subprocess(
    spec: TrainSpec, *, timeout_s: float | None = None, echo: Echo | None = None
) -> TrainResult:
    """Run :func:`learning.finetune.train_adapter` in a child process."""
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / "train-spec.json"
    spec_path.write_text(spec.to_json(), encoding="utf-8")
    threads = spec.config.threads or max(1, (os.cpu_count() or 2) - 1)
    _run(
        "train",
        spec_path,
        out / RESULT,
        threads=threads,
        nice=spec.config.nice,
        idle=spec.config.idle_priority,
        timeout_s=timeout_s,
        echo=echo,
    )
    return TrainResult.from_json((out / RESULT).read_text(encoding="utf-8"))


def evaluate_in_subprocess(
    spec: EvalSpec,
    out_dir: Path,
    *,
    embedder: str | None = None,
    nice: int = 10,
    timeout_s: float | None = None,
    echo: Echo | None = None,
) -> EvalReport:
    """Run :func:`learning.evaluate.evaluate` in a child process."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_path = out_dir / "eval-spec.json"
    text = spec.to_json()
    if embedder:
        import json

        data = json.loads(text)
        data["_embedder"] = embedder
        text = json.dumps(data)
    spec_path.write_text(text, encoding="utf-8")
    out = out_dir / "eval-report.json"
    threads = spec.threads or max(1, (os.cpu_count() or 2) - 1)
    _run("evaluate", spec_path, out, threads=threads, nice=nice, timeout_s=timeout_s, echo=echo)
    return EvalReport.from_json(out.read_text(encoding="utf-8"))


def _write_last(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    import json

    if len(argv) != 3 or argv[0] not in ("train", "evaluate"):
        sys.stderr.write("usage: python -m learning.worker train|evaluate SPEC.json OUT.json\n")
        return 2
    command, spec_file, out_file = argv
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    text = Path(spec_file).read_text(encoding="utf-8")
    if command == "train":
        result = __import__("learning.finetune", fromlist=["train_adapter"]).train_adapter(
            TrainSpec.from_json(text)
        )
        # train_adapter writes result.json itself, last; OUT must be that file
        if Path(out_file).resolve() != (Path(result.adapter_dir).parent / RESULT).resolve():
            _write_last(Path(out_file), result.to_json())
        return 0
    data = json.loads(text)
    embedder_name = data.pop("_embedder", None)
    embed = None
    if embedder_name:
        from serving.embed import load_embedder

        model = load_embedder(embedder_name)
        embed = model.embed
    from learning.evaluate import evaluate

    report = evaluate(EvalSpec.from_json(json.dumps(data)), embedder=embed)
    _write_last(Path(out_file), report.to_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
