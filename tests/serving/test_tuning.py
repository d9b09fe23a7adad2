"""The CPU serving choice: measured once per machine and model, cached, honoured by load_model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from serving.device import cpu_has_fast_bf16
from serving.errors import ModelLoadError
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


def test_load_model_loads_and_casts_off_the_calling_thread(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The calling thread outlives the load: a team it created would throttle the engine."""
    import threading

    import serving.model as model_module

    seen: list[int] = []
    real = model_module.tune_cpu

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(model_module, "tune_cpu", spy)
    loaded = load_model(str(tiny_model_dir), cache_dir=tmp_path, device="cpu", dtype="auto")
    assert seen and threading.get_ident() not in seen
    assert next(loaded.model.parameters()).dtype == loaded.dtype
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot load model"):  # raised in the caller
        load_model(str(broken), cache_dir=tmp_path, device="cpu")


_TEAM_PROBE = r"""
import os, threading, torch
from serving.device import in_scratch_thread
torch.set_num_threads(2)
def tasks():
    return len(os.listdir("/proc/self/task"))
def work():
    x = torch.ones(1 << 23)
    for _ in range(3):
        x.mul_(1.0001)
    return threading.get_ident()
before = tasks()
ident = in_scratch_thread(work)
import time
for _ in range(400):  # the team's threads exit after their owner, not with it
    if tasks() <= before:
        break
    time.sleep(0.05)
after_scratch = tasks()
work()  # the same work on the main thread, as the control
print(before, after_scratch, tasks(), ident != threading.get_ident())
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_work_on_a_scratch_thread_leaves_no_openmp_team_behind() -> None:
    """Run in a fresh process: the control is the same op on the main thread."""
    import subprocess
    import sys

    if "OpenMP" not in torch.__config__.parallel_info() or (os.cpu_count() or 1) < 2:
        pytest.skip("needs torch's OpenMP backend and 2 CPUs")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _TEAM_PROBE],
        capture_output=True, text=True, check=True, cwd=root, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    ).stdout.split()  # fmt: skip
    before, after_scratch, after_main, other_thread = int(out[0]), int(out[1]), int(out[2]), out[3]
    assert other_thread == "True"
    assert after_main > before, "control: an op on a live thread leaves its team's threads"
    assert after_scratch == before
