"""``chatloop bench train`` runs end to end on the tiny model and prints its JSON line.

A smoke test of the program (speed is measured by running it, never asserted here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.train import main


def test_bench_train_prints_both_sides_and_the_bot_ttft(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--model-dir", str(tiny_model_dir), "--train", "16", "--eval", "8", "--epochs", "1",
            "--batch-size", "4", "--threads", "1", "--requests", "3"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for side in ("plain", "ours"):
        assert out[side]["useful_tok_s"] > 0 and out[side]["eval_loss"] > 0
    # both sides saw the same examples: the same non-padding tokens
    assert out["config"]["useful_tokens_plain"] == out["config"]["useful_tokens_ours"]
    assert 0 <= out["plain"]["padding_share"] < 1
    assert out["ttft_p95_ms"]["idle"] > 0 and out["ttft_p95_ms"]["training"] > 0
