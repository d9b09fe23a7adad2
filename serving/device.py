"""Device and dtype choice, with GPU-only paths behind capability checks.

``auto`` picks CUDA when a GPU is present, else Apple MPS, else the CPU. The
dtype ``auto`` picks bf16 on CUDA devices that support it and on CPUs with native
bf16 matrix instructions (AVX512-BF16 / AMX), fp16 on MPS, and fp32 otherwise.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when this CPU has native bf16 matmul instructions."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available")
    return torch.device(device)


def pick_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype:
    if dtype != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            dtype
        ]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def pick_device_dtype(
    device: str = "auto", dtype: str = "auto"
) -> tuple[torch.device, torch.dtype]:
    dev = pick_device(device)
    return dev, pick_dtype(dev, dtype)
