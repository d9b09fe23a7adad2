"""``chatloop bench serve`` end to end on the tiny model, and its reply classification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.serve import main
from bench.serve.common import classify_reply, percentile
from serving.types import GenerationResult

SIDE_KEYS = {"ttft_p50_ms", "ttft_p95_ms", "decode_tok_s", "aggregate_tok_s_1", "aggregate_tok_s_8"}
SWAP_KEYS = {
    "swaps",
    "pause_p50_ms",
    "pause_p99_ms",
    "failed_replies",
    "mixed_replies",
    "rss_before_mb",
    "rss_after_mb",
    "rss_growth_pct",
}


def test_runs_end_to_end_and_last_line_is_the_json_report(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--model", str(tiny_model_dir), "--cache-dir", str(tmp_path / "cache"),
        "--quick", "--rounds", "2", "--single-requests", "2", "--max-new-tokens", "4",
        "--swaps", "6", "--reload-every", "3", "--swap-interval-ms", "5",
        "--swap-max-new-tokens", "4", "--train-steps", "2", "--no-marker-check", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0

    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert any(line.startswith("ratios engine/naive") for line in lines[:-1])
    for side in ("naive", "engine"):
        assert set(report[side]) >= SIDE_KEYS
        assert all(isinstance(report[side][k], int | float) for k in SIDE_KEYS)
        assert report[side]["requests"] == 2 * (2 + 8)
        assert report[side]["tokens"] == 2 * (2 + 8) * 4  # eos ignored: fixed-length replies
    assert {"aggregate_8", "decode", "ttft_p50"} <= set(report["ratios"])
    swap = report["swap"]
    assert set(swap) >= SWAP_KEYS
    assert swap["swaps"] == 6 and swap["reloads"] == 2
    assert swap["marker_check"] is False  # a random tiny model cannot learn the markers
    # every reply was pinned to the version active at its submission and streamed intact
    assert swap["failed_replies"] == 0 and swap["mixed_replies"] == 0, swap["problems"]
    assert swap["replies"] > 0 and set(swap["replies_by_version"]) <= {"bench-alpha", "bench-bravo"}
    assert swap["rss_before_mb"] > 0 and swap["rss_after_mb"] > 0
    assert {"cpus", "torch_threads", "dtype", "model_id"} <= set(report["machine"])
    # batching's gain in one dtype, and the dtype's own gain, reported apart
    assert set(report["naive_same_dtype"]) >= SIDE_KEYS
    assert {"aggregate_8", "decode", "ttft_p50"} <= set(report["ratios_same_dtype"])
    assert {"aggregate_8", "decode"} <= set(report["dtype_gain"])
    if report["machine"]["dtype"] == "float32":
        assert report["dtype_gain"]["decode"] == 1.0
    cpu = report["machine"]["cpu"]
    assert isinstance(cpu["flags"], list) and isinstance(cpu["native_bf16"], bool)
    assert report["machine"]["tuning"]["dtype"] == report["machine"]["dtype"]
    # decode steps kept coming while adapters were unloaded and loaded again
    assert swap["load_step_gaps"] > 0 and swap["load_step_gap_p99_ms"] > 0
    assert "load_step_gap_p99_ms" in report["targets"]
    assert set(report["targets"]) >= {"aggregate_8_ratio", "pause_p99_ms", "rss_growth_pct"}


def _result(text: str, version: str) -> GenerationResult:
    return GenerationResult(
        text=text,
        finish_reason="length",
        prompt_tokens=3,
        completion_tokens=4,
        latency_ms=1.0,
        ttft_ms=0.5,
        adapter_version=version,
        model_id="m",
        replica_id="r",
    )


def test_classify_reply() -> None:
    markers = {"a": "ALPHA", "b": "BRAVO"}
    ok = _result(" ALPHA: hello", "a")
    assert classify_reply(ok, ok.text, expected_version="a", markers=markers) is None
    wrong_pin = classify_reply(ok, ok.text, expected_version="b", markers=markers)
    assert wrong_pin is not None and "pinned" in wrong_pin
    assert classify_reply(ok, " ALPHA", expected_version="a", markers=markers) is not None
    no_marker = _result("hello ALPHA", "a")
    assert classify_reply(no_marker, no_marker.text, expected_version="a", markers=markers)
    assert classify_reply(no_marker, no_marker.text, expected_version="a", markers=None) is None
    both = _result("ALPHA BRAVO", "a")
    assert classify_reply(both, both.text, expected_version="a", markers=markers)


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 100) == 5.0
