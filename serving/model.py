"""Loading a base model and its tokenizer onto a device.

:func:`load_model` resolves the ``model`` setting (see :mod:`serving.fetch`), loads
the tokenizer and the causal LM with the chosen dtype on the chosen device, and
puts the model in eval mode, all on a scratch thread (see
:func:`serving.device.in_scratch_thread`: no idle OpenMP team is left behind to slow
the engine's worker). On a CPU, dtype ``auto`` is *measured* once per
machine and model (:mod:`serving.tuning`, cached under ``cache_dir/tuning``), not
guessed from the instruction set; the measured thread count comes with it. Errors
of transformers or torch become :class:`~serving.errors.ModelLoadError` with the
model named.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from serving.device import in_scratch_thread, parse_dtype, pick_device_dtype
from serving.errors import ModelLoadError
from serving.fetch import Progress, resolve_model
from serving.tuning import CpuChoice, tune_cpu

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    model_id: str
    device: torch.device
    dtype: torch.dtype
    threads: int | None = None
    """Torch threads for the serving worker (measured on a CPU with dtype auto)."""
    tuning: CpuChoice | None = None

    @property
    def eos_token_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for source in (
            self.tokenizer.eos_token_id,
            getattr(self.model.generation_config, "eos_token_id", None),
        ):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, list | tuple):
                ids.update(int(i) for i in source)
        return frozenset(ids)


def load_model(
    spec: str,
    *,
    cache_dir: Path,
    device: str = "auto",
    dtype: str = "auto",
    progress: Progress | None = None,
    remeasure: bool = False,
) -> LoadedModel:
    """Load the model named by ``spec`` ready for inference.

    ``remeasure``: on a CPU with dtype ``auto``, measure the dtype and thread
    choice again instead of reading it from the cache.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model(spec, cache_dir, progress=progress or (lambda _m: None))
    try:
        dev, dt = pick_device_dtype(device, dtype)
        measure = dev.type == "cpu" and parse_dtype(dtype) is None
    except ValueError as exc:
        raise ModelLoadError(f"cannot place model {spec!r}: {exc}") from exc
    if measure:
        dt = torch.float32  # measured below: fp32, or bf16 if that is faster here

    def load() -> tuple[Any, Any, torch.dtype, CpuChoice | None]:
        loaded_dt = dt
        try:
            tokenizer = AutoTokenizer.from_pretrained(resolved.path)
            model: Any = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=loaded_dt)
        except (OSError, ValueError, RuntimeError, ImportError) as exc:
            raise ModelLoadError(f"cannot load model {spec!r}: {exc}") from exc
        model.to(dev)
        model.eval()
        choice: CpuChoice | None = None
        if measure:
            if progress is not None:
                progress("choosing dtype and threads for this CPU (measured once, then cached)")
            choice = tune_cpu(
                model, model_id=resolved.model_id, cache_dir=cache_dir, remeasure=remeasure
            )
            if choice.dtype != "float32":
                loaded_dt = parse_dtype(choice.dtype) or loaded_dt
                model.to(loaded_dt)
        return tokenizer, model, loaded_dt, choice

    # loading and casting are the heaviest torch work of a serving process: off the
    # calling thread, so no idle OpenMP team is left to throttle the engine's worker
    tokenizer, model, dt, choice = in_scratch_thread(load)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    log.info(
        "model loaded", extra={"model_id": resolved.model_id, "device": str(dev), "dtype": str(dt)}
    )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=resolved.model_id,
        device=dev,
        dtype=dt,
        threads=choice.threads if choice is not None else None,
        tuning=choice,
    )
