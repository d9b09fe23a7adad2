"""The naive baseline's own process: ``generate`` workloads and adapter training."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

from bench.serve.common import (
    QUESTIONS,
    TRAIN_EXTRA,
    VERSIONS,
    Options,
    Workload,
    _messages,
    _Progress,
    _quiet_peft,
    run_workload,
)
from serving.errors import ServingError
from serving.model import LoadedModel, load_model
from serving.naive import NaiveEngine
from serving.prompt import build_prompt_ids
from serving.registry import write_adapter
from serving.types import GenerationRequest

log = logging.getLogger(__name__)


class NaiveProcess:
    """The naive baseline in a child process (spawned), driven over a pipe.

    The child loads the model in fp32 and in every other dtype of ``dtypes`` (the
    engine's, for a same-dtype comparison), serves workloads with
    :class:`NaiveEngine` and trains the marker adapters (fp32); the parent only
    waits for its answers.
    """

    def __init__(self, opts: Options, dtypes: Sequence[str] = ("float32",)) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_naive_main,
            args=(child, dataclasses.asdict(opts), sorted({"float32", *dtypes})),
            name="bench-naive",
        )
        self._closed = False
        self._proc.start()
        child.close()
        self.model_id: str = self._call("ready")

    def _call(self, *message: Any) -> Any:
        if message[0] != "ready":
            self._conn.send(message)
        try:
            status, payload = self._conn.recv()
        except EOFError as exc:
            raise ServingError(
                f"the naive benchmark process died (exit code {self._proc.exitcode})"
            ) from exc
        if status == "error":
            raise ServingError(f"naive benchmark process: {payload}")
        return payload

    def run(
        self, requests: Sequence[GenerationRequest], *, concurrent: bool, dtype: str = "float32"
    ) -> Workload:
        data = self._call("run", list(requests), concurrent, dtype)
        return Workload(**data)

    def train(self, store: Path, base_model_id: str) -> dict[str, float]:
        losses: dict[str, float] = self._call("train", str(store), base_model_id)
        return losses

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError, EOFError, ServingError):
            self._call("stop")
        self._proc.join(timeout=60)
        if self._proc.is_alive():  # pragma: no cover - a wedged child
            self._proc.kill()
            self._proc.join()


def _naive_main(conn: Connection, opts_data: dict[str, Any], dtypes: list[str]) -> None:
    """Child process: the model per dtype, NaiveEngine workloads, adapter training."""
    try:
        opts = Options(**{**opts_data, "cache_dir": Path(opts_data["cache_dir"])})
        if opts.threads:
            torch.set_num_threads(opts.threads)
        torch.manual_seed(opts.seed)
        models = {
            dtype: load_model(opts.model, cache_dir=opts.cache_dir, device=opts.device, dtype=dtype)
            for dtype in dtypes
        }
        loaded = models["float32"]
        naives = {
            dtype: NaiveEngine(loaded=_no_eos(m), replica_id=f"bench-naive-{dtype}")
            for dtype, m in models.items()
        }
        conn.send(("ok", loaded.model_id))
    except Exception as exc:  # reported to the parent, which fails the benchmark
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        while True:
            message = conn.recv()
            try:
                if message[0] == "stop":
                    conn.send(("ok", None))
                    return
                if message[0] == "run":
                    _, requests, concurrent, dtype = message
                    run = asyncio.run(run_workload(naives[dtype], requests, concurrent=concurrent))
                    conn.send(("ok", dataclasses.asdict(run)))
                elif message[0] == "train":
                    _, store, base_model_id = message
                    losses = train_marker_adapters(
                        loaded.model,
                        loaded.tokenizer,
                        Path(store),
                        base_model_id=base_model_id,
                        opts=opts,
                    )
                    conn.send(("ok", losses))
                else:
                    conn.send(("error", f"unknown request {message[0]!r}"))
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        for naive in naives.values():
            asyncio.run(naive.aclose())


@dataclass(frozen=True, slots=True)
class _NoEosModel(LoadedModel):
    """The naive side's model with end-of-sequence ignored (fixed-length replies)."""

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return frozenset()


def _no_eos(loaded: LoadedModel) -> LoadedModel:
    loaded.model.generation_config.eos_token_id = None
    return _NoEosModel(**{f.name: getattr(loaded, f.name) for f in dataclasses.fields(loaded)})


# --------------------------------------------------------------------------- adapters
def train_marker_adapters(
    base: Any, tokenizer: Any, store: Path, *, base_model_id: str, opts: Options
) -> dict[str, float]:
    """Train one LoRA adapter per marker on ``base`` (fp32) and write it into ``store``.

    The loss is on the marker tokens only, after the chat prompt. ``base`` is left as
    it was (the LoRA layers are removed again). Returns the final loss per version.
    """
    from peft import LoraConfig, get_peft_model

    questions = [*QUESTIONS, *TRAIN_EXTRA]
    prompts = [
        build_prompt_ids(tokenizer, _messages(q), max_prompt_tokens=1024)[0] for q in questions
    ]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    losses: dict[str, float] = {}
    bar = _Progress(opts.progress, opts.train_steps * len(VERSIONS), "train adapters")
    for version, marker in VERSIONS.items():
        marker_ids = list(tokenizer.encode(marker + ": ", add_special_tokens=False))
        rows = [p + marker_ids for p in prompts]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (prompt, row) in enumerate(zip(prompts, rows, strict=True)):
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
            labels[i, len(prompt) : len(row)] = torch.tensor(marker_ids)
        torch.manual_seed(opts.seed)
        config = LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "o_proj"]
        )
        with _quiet_peft():
            peft_model = get_peft_model(base, config)
        peft_model.train()
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=opts.train_lr)
        loss = float("nan")
        for _ in range(opts.train_steps):
            out = peft_model(input_ids=input_ids, attention_mask=mask, labels=labels)
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss = float(out.loss.detach())
            bar.update(desc=f"train {version}", loss=f"{loss:.4f}")
        peft_model.eval()
        dataset = json.dumps({"marker": marker, "questions": questions}, sort_keys=True)
        write_adapter(
            store,
            version,
            peft_model,
            base_model_id=base_model_id,
            dataset_sha256=hashlib.sha256(dataset.encode()).hexdigest(),
            metrics={"train_loss": loss, "train_steps": opts.train_steps},
        )
        losses[version] = loss
        base = peft_model.unload()  # the bare model again for the next adapter
        del optimizer, params, peft_model
    bar.close()
    gc.collect()
    return losses
