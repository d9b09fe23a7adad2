"""The CPU serving choice: measured once per machine and model, cached, honoured by load_model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from serving.device import cpu_has_fast_bf16
from serving.model import load_model
from serving.tuning import cache_path, cpu_info, machine_key, tune_cpu


@pytest.fixture
def fp32_model(tiny_model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def test_measures_once_then_reads_the_cache(fp32_model: Any, tmp_path: Path) -> None:
    first = tune_cpu(fp32_model, model_id="tiny", cache_dir=tmp_path)
    assert not first.cached
    dtypes = {"float32", "bfloat16"} if cpu_has_fast_bf16() else {"float32"}
    assert first.dtype in dtypes and first.threads >= 1
    assert {key.split("/")[0] for key in first.step_ms} == dtypes  # bf16 only where native
    assert all(ms > 0 for ms in first.step_ms.values())
    assert next(fp32_model.parameters()).dtype == torch.float32  # measured on a copy

    path = cache_path(tmp_path, machine_key("tiny"))
    assert json.loads(path.read_text())["dtype"] == first.dtype
    again = tune_cpu(fp32_model, model_id="tiny", cache_dir=tmp_path)
    assert again.cached and (again.dtype, again.threads) == (first.dtype, first.threads)

    other = cache_path(tmp_path, machine_key("another-model"))
    assert other != path  # keyed by model id (and CPU, flags, torch version)


def test_an_unreadable_cache_is_measured_again(fp32_model: Any, tmp_path: Path) -> None:
    path = cache_path(tmp_path, machine_key("tiny"))
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    choice = tune_cpu(fp32_model, model_id="tiny", cache_dir=tmp_path)
    assert not choice.cached
    assert json.loads(path.read_text())["dtype"] == choice.dtype


def test_load_model_auto_uses_the_measured_choice(tiny_model_dir: Path, tmp_path: Path) -> None:
    auto = load_model(str(tiny_model_dir), cache_dir=tmp_path, device="cpu", dtype="auto")
    assert auto.tuning is not None
    assert str(auto.dtype) == f"torch.{auto.tuning.dtype}" and auto.threads == auto.tuning.threads
    assert next(auto.model.parameters()).dtype == auto.dtype
    explicit = load_model(str(tiny_model_dir), cache_dir=tmp_path, device="cpu", dtype="float32")
    assert explicit.tuning is None and explicit.threads is None
    assert explicit.dtype == torch.float32


def test_cpu_info_names_the_flags_that_matter() -> None:
    info = cpu_info()
    assert info["cpus"] >= 1 and isinstance(info["model"], str)
    assert set(info["flags"]) <= {
        "avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8"
    }  # fmt: skip
    assert info["native_bf16"] == cpu_has_fast_bf16()
