"""``chatloop simulate``: the whole product driven by simulated people (see
:mod:`chatloop.simulate`).

::

    chatloop simulate --dataset faq.jsonl --cycles 1 --json --plot curve.png

It uses the operator's settings (model, engine, answer memory, training, gate) on a
fresh database and fresh stores in a work directory, so it never touches the
deployment's data. With ``--json`` the last line of output is one JSON object with
``cycles`` (cycle 0 = before any learning) and ``memory_only``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from chatloop.simulate import SimulationError, load_dataset, plot, run_simulation


def simulate(
    dataset: Annotated[
        str,
        typer.Option(help="A JSON-lines file of {question, answer, paraphrases?}, or 'qary'."),
    ],
    cycles: Annotated[int, typer.Option(min=1, max=20, help="Learning cycles to run.")] = 1,
    as_json: Annotated[
        bool, typer.Option("--json", help="End with one JSON object on the last line.")
    ] = False,
    plot_path: Annotated[
        Path | None, typer.Option("--plot", help="Write the before/after curve as a PNG.")
    ] = None,
    limit: Annotated[int, typer.Option(min=0, help="Use at most N questions (0: all).")] = 0,
    work_dir: Annotated[
        Path | None,
        typer.Option(help="Where the simulation's database and stores go (default: a temp dir)."),
    ] = None,
) -> None:
    """Simulated customers, staff and a maintainer drive the real loop; scores per cycle."""
    from chatloop.cli import _logging, _progress, _settings

    settings = _settings()
    _logging(settings, quiet=True)
    try:
        qas = load_dataset(dataset)
    except SimulationError as exc:
        typer.echo(f"chatloop: {exc}", err=True)
        raise typer.Exit(1) from None
    if limit:
        qas = qas[:limit]
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(
        run_simulation(
            settings,
            qas,
            cycles=cycles,
            echo=_progress,
            work_dir=work_dir,
            dataset_name=Path(dataset).name,
        )
    )
    if plot_path is not None:
        from learning.gate import GatePolicy

        plot(result, plot_path, max_forgetting=GatePolicy(**settings.learn_gate).max_forgetting)
        _progress(f"plot written to {plot_path}")
    for c in result.cycles:
        typer.echo(
            f"cycle {c.cycle}: correct {c.correct_share:.2f}  ROUGE-L {c.rouge_l:.3f}  "
            f"general loss {c.general_loss}  adapter {c.adapter}"
        )
    if result.memory_only:
        m = result.memory_only
        typer.echo(f"memory only: correct {m['correct_share']:.2f}  ROUGE-L {m['rouge_l']:.3f}")
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
