"""Measured dtype and thread count for serving on a CPU, chosen once per machine.

On a CPU ``auto`` used to mean bf16 wherever the instruction set has native bf16
(AVX512-BF16 / AMX). That is not always the faster choice: on a 2-core
AVX512-BF16 machine fp32 ``generate`` decoded SmolLM2-135M at ~31 tok/s and bf16
at ~27. So :func:`tune_cpu` *measures*: decode steps of the loaded model (batch 1
and batch 8, in a fresh thread as the engine's worker runs them) in fp32 and, where
the CPU has native bf16, in bf16, for each candidate thread count, and picks the
fastest (sum of the two step times). The result is cached as a small JSON file
keyed by CPU model and flags, core count, torch version and model id, so the
measurement (a few seconds) runs once per machine and model.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import logging
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from serving.device import cpu_has_fast_bf16, in_scratch_thread
from serving.kvcache import SlotCache

log = logging.getLogger(__name__)

TUNING_FORMAT = 1
_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")


@dataclass(frozen=True, slots=True)
class CpuChoice:
    """What serving uses on this machine, and the measurement behind it."""

    dtype: str
    threads: int
    step_ms: dict[str, float]  # "<dtype>/<threads>/b<batch>" -> median decode step time
    key: dict[str, Any]
    cached: bool = False


def cpu_info() -> dict[str, Any]:
    """CPU model name, the flags that matter for serving, core count, torch's view."""
    model, flags = "", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    model = model or platform.processor()
    get_capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return {
        "model": model,
        "flags": [f for f in _FLAGS if f in flags],
        "cpus": os.cpu_count(),
        "torch_capability": get_capability() if get_capability is not None else None,
        "native_bf16": cpu_has_fast_bf16(),
    }


def machine_key(model_id: str) -> dict[str, Any]:
    info = cpu_info()
    return {
        "cpu": info["model"],
        "flags": info["flags"],
        "cpus": info["cpus"],
        "native_bf16": info["native_bf16"],
        "torch": torch.__version__,
        "model_id": model_id,
        "format": TUNING_FORMAT,
    }


def cache_path(cache_dir: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / "tuning" / f"cpu-{digest}.json"


def _decode_step_ms(model: Any, batch: int, threads: int, steps: int = 12) -> float:
    """Median time of one decode step at ``batch`` rows over a 64-token cache,
    measured in a fresh thread (as the engine's worker runs)."""
    out: list[float] = []
    error: list[BaseException] = []

    def measure() -> None:
        try:
            torch.set_num_threads(threads)
            config = model.config.get_text_config(decoder=True)
            params = inspect.signature(model.forward).parameters
            kwarg = "cache" if "cache" in params else "past_key_values"  # renamed in 5.2x
            with torch.inference_mode():
                cache = SlotCache.empty(int(config.num_hidden_layers), 64 + steps + 4)
                ids = torch.full((batch, 64), 100, dtype=torch.long)
                model(input_ids=ids, **{kwarg: cache}, use_cache=True, logits_to_keep=1)
                token = torch.full((batch, 1), 100, dtype=torch.long)
                for i in range(steps + 2):
                    start = time.perf_counter()
                    model(
                        input_ids=token,
                        position_ids=torch.full((batch, 1), 64 + i, dtype=torch.long),
                        **{kwarg: cache},
                        use_cache=True,
                        logits_to_keep=1,
                    )
                    if i >= 2:  # the first steps warm oneDNN up
                        out.append((time.perf_counter() - start) * 1000)
        except BaseException as exc:  # reported in the caller's thread
            error.append(exc)

    worker = threading.Thread(target=measure, name="tune-cpu")
    worker.start()
    worker.join()
    if error:
        raise error[0]
    out.sort()
    return out[len(out) // 2]


def tune_cpu(
    model: Any, *, model_id: str, cache_dir: Path | None, remeasure: bool = False, rounds: int = 3
) -> CpuChoice:
    """The dtype and thread count to serve ``model`` (fp32, on the CPU) with.

    Reads the cached choice for this machine and model if there is one (unless
    ``remeasure``); else measures and caches it. ``model`` is not changed (bf16 is
    measured on a copy).
    """
    key = machine_key(model_id)
    path = cache_path(cache_dir, key) if cache_dir is not None else None
    if path is not None and path.is_file() and not remeasure:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("key") == key:
                return CpuChoice(**{**data, "cached": True})
        except (OSError, ValueError, TypeError) as exc:
            log.warning(
                "ignoring unreadable tuning cache", extra={"path": str(path), "error": str(exc)}
            )
    cpus = os.cpu_count() or 1
    thread_options = sorted({cpus, max(1, cpus - 1)})
    candidates: dict[str, Any] = {"float32": model}
    if key["native_bf16"]:
        # a whole-model cast: on a scratch thread (see serving.device.in_scratch_thread)
        candidates["bfloat16"] = in_scratch_thread(lambda: copy.deepcopy(model).to(torch.bfloat16))
    # Rounds interleave the candidates and each keeps its best round: other load on
    # the machine slows a round down, never speeds it up.
    step_ms: dict[str, float] = {}
    for _ in range(rounds):
        for dtype, candidate in candidates.items():
            for threads in thread_options:
                for batch in (1, 8):
                    name = f"{dtype}/{threads}/b{batch}"
                    ms = round(_decode_step_ms(candidate, batch, threads), 2)
                    step_ms[name] = min(ms, step_ms.get(name, ms))
    _score, dtype, threads = min(
        (step_ms[f"{d}/{t}/b1"] + step_ms[f"{d}/{t}/b8"], d, t)
        for d in candidates
        for t in thread_options
    )
    choice = CpuChoice(dtype=dtype, threads=threads, step_ms=step_ms, key=key)
    log.info(
        "cpu serving choice measured",
        extra={"dtype": choice.dtype, "threads": choice.threads, "step_ms": step_ms},
    )
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(
                json.dumps({k: v for k, v in asdict(choice).items() if k != "cached"}, indent=2),
                encoding="utf-8",
            )
            os.replace(tmp, path)
        except OSError as exc:
            log.warning(
                "could not cache the tuning result", extra={"path": str(path), "error": str(exc)}
            )
    return choice
