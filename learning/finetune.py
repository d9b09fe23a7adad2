"""The trainer: LoRA fine-tuning of the base model on prepared examples (TRL + PEFT).

Stage 1 is supervised fine-tuning (trl's ``SFTTrainer``) on 👍 answers and staff
corrections, with the loss on the answer only. Stage 2, where the data allows it, is
a preference stage on the thumbs: DPO when enough questions have both a 👍 and a 👎
answer, otherwise KTO when there are enough of both kinds (``TrainConfig.preference``).

What makes it cheaper than the plain recipe (``transformers.Trainer`` + a padding
collator, fp32), measured by ``chatloop bench train``:

- **padding-free batches**: a batch's examples are concatenated into one row with
  per-example position ids (transformers builds a block-diagonal causal mask from
  them), so no FLOP goes to padding; the batch still holds exactly ``batch_size``
  examples, so the optimisation is the same as with padding;
- **bf16 autocast where it is faster on this machine**: measured once (a few
  forward/backward passes in each dtype) and cached per CPU/GPU, torch and model,
  never assumed from the instruction set;
- examples are tokenized once, by us, cut from the prompt side when too long (the
  answer is what is learned).

Also: early stopping on eval loss (best checkpoint restored), resumable checkpoints
(a killed run resumes from its last checkpoint), seeds, a budget of steps and
minutes, a progress bar and one JSON line of metrics per step (``metrics.jsonl``).

:func:`train_adapter` runs in the calling process; the learning loop calls it through
:mod:`learning.worker` in a process of its own, with a thread budget and a lower CPU
priority, so the bot keeps answering. Output: ``<out_dir>/adapter`` (peft's
``adapter_model.safetensors`` + ``adapter_config.json``) and ``<out_dir>/result.json``,
written last. Putting the adapter into the store (manifest last) is the caller's job.

It knows nothing of the database, the bot or platforms.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from learning.errors import TrainingError
from learning.examples import read_jsonl
from learning.trainconfig import TrainConfig

log = logging.getLogger(__name__)

ADAPTER = "adapter"
RESULT = "result.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"


@contextlib.contextmanager
def library_warnings_quiet() -> Iterator[None]:
    """Silence deprecation chatter between transformers, peft, trl and accelerate.

    Their versions deprecate each other's arguments (``gradient_checkpointing`` ->
    ``activation_checkpointing`` ...); that is not ours to fix and must not fail a run.
    Only those libraries' FutureWarning/DeprecationWarning/UserWarning are hidden.
    """
    libs = r"(transformers|peft|trl|accelerate|torch|datasets)(\.|$)"
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.filterwarnings("ignore", category=category, module=libs)
        yield


# --------------------------------------------------------------------------- spec/result
@dataclass(frozen=True, kw_only=True)
class TrainSpec:
    """What to train: a base model directory, example files, an output directory."""

    model_path: str
    out_dir: str
    config: TrainConfig
    sft_path: str
    eval_path: str | None = None
    kto_path: str | None = None
    dpo_path: str | None = None
    dtype_cache: str | None = None
    show_progress: bool = False

    def to_json(self) -> str:
        data = asdict(self)
        data["config"] = self.config.to_dict()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainSpec:
        data = json.loads(text)
        data["config"] = TrainConfig.from_dict(data["config"])
        return cls(**data)


@dataclass(kw_only=True)
class TrainResult:
    adapter_dir: str
    steps: int
    epochs: float
    train_loss: float | None
    eval_loss: float | None
    examples: int
    useful_tokens: int
    train_seconds: float
    useful_tok_s: float
    dtype: str
    stopped: str
    preference: dict[str, Any] = field(default_factory=dict)
    resumed_from: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainResult:
        return cls(**json.loads(text))


# --------------------------------------------------------------------------- tokenizing
def tokenize_example(
    tokenizer: Any, example: dict[str, Any], max_length: int
) -> dict[str, list[int]] | None:
    """``input_ids`` and ``labels`` (-100 on the prompt) of a prompt-completion example.

    Too long: the prompt is cut from its start (the answer is kept); None when even the
    answer does not fit.
    """
    prompt_text = tokenizer.apply_chat_template(
        example["prompt"], add_generation_prompt=True, tokenize=False
    )
    full_text = tokenizer.apply_chat_template(
        [*example["prompt"], *example["completion"]], tokenize=False
    )
    if not full_text.startswith(prompt_text):
        raise TrainingError("the chat template renders the prompt differently inside the chat")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    if len(answer_ids) >= max_length:
        return None
    keep = max_length - len(answer_ids)
    prompt_ids = prompt_ids[-keep:]
    return {
        "input_ids": [*prompt_ids, *answer_ids],
        "labels": [-100] * len(prompt_ids) + list(answer_ids),
    }


def tokenize_all(
    tokenizer: Any, examples: Sequence[dict[str, Any]], max_length: int
) -> list[dict[str, list[int]]]:
    out = [tokenize_example(tokenizer, ex, max_length) for ex in examples]
    return [o for o in out if o is not None]


# --------------------------------------------------------------------------- dtype choice
def machine_key(model_path: str) -> str:
    import torch

    if torch.cuda.is_available():
        where = f"cuda:{torch.cuda.get_device_name(0)}"
    else:
        flags = ""
        with contextlib.suppress(OSError):
            text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
            line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
            wanted = ("avx512_bf16", "amx_bf16", "avx512f", "avx2")
            flags = ",".join(f for f in wanted if f" {f}" in line)
        where = f"cpu:{platform.machine()}:{flags}:{os.cpu_count()}"
    return f"{where}|torch {torch.__version__}|{Path(model_path).name}"


def measure_train_dtype(model: Any, batch: dict[str, Any], *, repeats: int = 3) -> dict[str, float]:
    """Seconds per forward+backward pass in fp32 and under bf16 autocast."""
    import torch

    device = next(model.parameters()).device
    timings: dict[str, float] = {}
    for name in ("float32", "bfloat16"):
        ctx = (
            torch.autocast(device_type=device.type, dtype=torch.bfloat16)
            if name == "bfloat16"
            else contextlib.nullcontext()
        )
        runs: list[float] = []
        for i in range(repeats + 1):
            start = time.perf_counter()
            with ctx:
                out = model(**batch)
            out.loss.backward()
            model.zero_grad(set_to_none=True)
            if i:  # the first pass warms caches and kernels
                runs.append(time.perf_counter() - start)
        timings[name] = min(runs)
    return timings


def choose_train_dtype(
    config: TrainConfig, model: Any, batch: dict[str, Any], cache: Path | None, key: str
) -> tuple[str, dict[str, float] | None]:
    """The compute dtype: the configured one, or for ``auto`` the faster measured one."""
    import torch

    if config.dtype != "auto":
        return config.dtype, None
    if torch.cuda.is_available():
        return ("bfloat16" if torch.cuda.is_bf16_supported() else "float32"), None
    cached: dict[str, Any] = {}
    if cache is not None and cache.exists():
        with contextlib.suppress(OSError, json.JSONDecodeError):
            cached = json.loads(cache.read_text(encoding="utf-8"))
        if key in cached:
            entry = cached[key]
            return str(entry["dtype"]), dict(entry["seconds"])
    seconds = measure_train_dtype(model, batch)
    # bf16 must win clearly: autocast adds casts, and a tie is not worth the precision
    dtype = "bfloat16" if seconds["bfloat16"] < 0.9 * seconds["float32"] else "float32"
    if cache is not None:
        cached[key] = {"dtype": dtype, "seconds": seconds, "at": time.time()}
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(cached, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, cache)
    log.info("training dtype measured", extra={"dtype": dtype, "seconds": seconds})
    return dtype, seconds


# --------------------------------------------------------------------------- training
def _threads(config: TrainConfig) -> int:
    return config.threads or max(1, (os.cpu_count() or 2) - 1)


def train_adapter(spec: TrainSpec) -> TrainResult:
    """Run the SFT stage (and the preference stage where the data allows); see module doc."""
    from learning.hf_train import run_preference_stage, run_sft

    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT).unlink(missing_ok=True)
    sft = read_jsonl(Path(spec.sft_path))
    if not sft:
        raise TrainingError("no 👍 examples to fine-tune on")
    evals = read_jsonl(Path(spec.eval_path)) if spec.eval_path else []
    with library_warnings_quiet():
        stage = run_sft(spec, sft, evals)
        preference = run_preference_stage(spec, stage)
        adapter_dir = out / ADAPTER
        stage.model.save_pretrained(str(adapter_dir), safe_serialization=True)
    result = TrainResult(
        adapter_dir=str(adapter_dir),
        steps=stage.steps,
        epochs=stage.epochs,
        train_loss=stage.train_loss,
        eval_loss=stage.eval_loss,
        examples=len(sft),
        useful_tokens=stage.useful_tokens,
        train_seconds=round(stage.seconds, 3),
        useful_tok_s=round(stage.useful_tokens / stage.seconds, 2) if stage.seconds else 0.0,
        dtype=stage.dtype,
        stopped=stage.stopped,
        preference=preference,
        resumed_from=stage.resumed_from,
    )
    tmp = out / (RESULT + ".tmp")
    tmp.write_text(result.to_json(), encoding="utf-8")
    os.replace(tmp, out / RESULT)  # written last: a directory without it is unfinished
    return result


def finite_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
