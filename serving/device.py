"""Device and dtype choice, with GPU-only paths behind capability checks.

``auto`` picks CUDA when a GPU is present, else Apple MPS, else the CPU. The
dtype ``auto`` picks bf16 on CUDA devices that support it (fp16 otherwise) and on
CPUs with native bf16 instructions (AVX512-BF16 / AMX), and fp32 elsewhere.
``CHATLOOP_CPU_BF16=0/1`` overrides the CPU detection.

**Side threads of a serving process run torch single-threaded.** With PyTorch's
OpenMP backend every OS thread that runs a parallel torch op gets an OpenMP team of
its own, and the team's pool threads live as long as that OS thread. Once libgomp
manages more threads than there are CPUs it throttles the spin-waits of *all*
teams, and the engine's many small decode-step ops then wait on sleeping threads.
One 1000x1000 matmul or dtype cast on a side thread while the engine serves slowed
its decode for good (2-core CPU: ~52 -> ~34 tok/s). So torch work on a side thread
(adapter checks in the registry) first calls :func:`single_threaded_torch`, a
per-thread setting under OpenMP.

**Heavy set-up work runs on a scratch thread.** The main thread lives as long as the
process, so a team it creates (a dtype cast of the whole model, the tuner's bf16
copy) throttles the engine's worker for the rest of the process: on a 2-core
AVX512-BF16 CPU a decode step at 2 threads took ~53 ms instead of ~33 ms, and the
tuner, measuring under that handicap, chose 1 thread. :func:`in_scratch_thread`
runs such work on a short-lived thread with the caller's thread count; the team
goes with the thread.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

import torch

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


# --------------------------------------------------------------------------- device / dtype
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16).

    Without it bf16 matmuls are emulated and usually slower than fp32.
    ``CHATLOOP_CPU_BF16=0/1`` overrides the detection.
    """
    override = os.environ.get("CHATLOOP_CPU_BF16")
    if override is not None:
        return override.strip().lower() in {"1", "true", "yes", "on"}
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in checks:
        fn = getattr(torch.cpu, name, None)
        if fn is not None:
            try:
                if fn():
                    return True
            except Exception as exc:  # pragma: no cover - private API drift
                log.debug("torch.cpu.%s failed: %s", name, exc)
    get_caps = getattr(getattr(torch._C, "_cpu", None), "_get_cpu_capability", None)
    if get_caps is not None:
        try:
            caps = get_caps()
            return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
        except Exception:  # pragma: no cover - private API drift
            return False
    return False


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype | None:
    if isinstance(dtype, torch.dtype):
        return dtype
    name = dtype.strip().lower().removeprefix("torch.")
    if name == "auto":
        return None
    if name not in _DTYPE_NAMES:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    return _DTYPE_NAMES[name]


def parse_device(device: str | torch.device) -> torch.device | None:
    if isinstance(device, torch.device):
        return device
    if device.strip().lower() == "auto":
        return None
    try:
        return torch.device(device.strip())
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}") from exc


def _auto_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _auto_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    return torch.float32  # mps and others: the safe choice


def pick_device_dtype(
    device: str | torch.device = "auto", dtype: str | torch.dtype = "auto"
) -> tuple[torch.device, torch.dtype]:
    """Resolve ``"auto"`` device/dtype settings to what this machine runs best.

    device ``"auto"``: CUDA if available, else MPS, else CPU. dtype ``"auto"``:
    bf16 on CUDA when supported (fp16 otherwise), bf16 on CPUs with native bf16
    (AVX512-BF16/AMX), fp32 elsewhere. Explicit names (``"cuda:1"``,
    ``"bfloat16"``, ``"fp32"``...) are honoured; a CUDA device without CUDA is an
    error rather than a silent fallback.
    """
    dev = parse_device(device) or _auto_device()
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {dev} requested but CUDA is not available")
    dt = parse_dtype(dtype) or _auto_dtype(dev)
    return dev, dt


# --------------------------------------------------------------------------- side threads
@functools.cache
def _openmp_backend() -> bool:
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def single_threaded_torch() -> None:
    """Run torch ops of the *calling* thread on one thread (OpenMP backend only)."""
    if _openmp_backend():
        torch.set_num_threads(1)


def in_scratch_thread(fn: Callable[[], _T]) -> _T:
    """Run ``fn`` on a new thread (the caller's torch thread count) and return its result.

    Its OpenMP team ends with the thread, so heavy set-up work (loading, casting a
    model) leaves no idle team behind to throttle the serving worker's (see the
    module doc). Exceptions are raised in the caller.
    """
    threads = torch.get_num_threads()
    result: list[_T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            torch.set_num_threads(threads)
            result.append(fn())
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    worker = threading.Thread(target=run, name="torch-scratch", daemon=True)
    worker.start()
    worker.join()
    if error:
        raise error[0]
    return result[0]
