"""The evaluator: a candidate adapter against the one in service (or the base model).

Every model under test (``base``, ``active``, ``candidate``...) is scored on the same
items, prompts and token budget, in one process with the base weights loaded once
and the adapters switched with peft:

- ``eval_loss``: mean answer-token loss on the items' reference answers (the
  snapshot's eval split and the frozen curated eval set);
- ``rouge_l`` and ``correct_share`` (ROUGE-L F1 >= 0.5) of greedy answers against the
  references, and ``embed_sim`` (cosine of sentence embeddings) when an embedder is
  given; per slice (channel, topic tag, ``curated``/``snapshot``) too;
- ``preference_accuracy``: share of (👍, 👎) pairs where the model gives the 👍 answer
  the higher mean log-probability per token;
- ``canary_leaks``: seeded secrets the model reproduces when prompted with their prefix;
- ``general_loss``: loss on a held-out general-chat set (forgetting);
- ``ms_per_token`` (generation latency, interleaved across models so load hits all
  alike) and ``rss_mb``.

:func:`evaluate` returns an :class:`EvalReport`; :func:`learning.evalreport.write_report`
writes it as JSON, Markdown and PNG plots. It knows nothing of the database or the bot.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from learning.errors import EvaluationError
from learning.examples import read_jsonl
from learning.finetune import library_warnings_quiet

log = logging.getLogger(__name__)

BASE = "base"
Embedder = Callable[[Sequence[str]], Any]
"""Maps texts to an (n, d) array of L2-normalized embeddings."""


# --------------------------------------------------------------------------- ROUGE-L
def _tokens(text: str) -> list[str]:
    import re

    return re.findall(r"\w+", text.casefold())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 on word tokens (longest common subsequence)."""
    a, b = _tokens(prediction), _tokens(reference)
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


CORRECT_AT = 0.5
"""ROUGE-L F1 from which an answer counts as correct."""


# --------------------------------------------------------------------------- spec/report
@dataclass(frozen=True, kw_only=True)
class EvalSpec:
    """What to evaluate. Item files are JSON lines:

    - ``items_path``: ``{"prompt": [messages], "reference": str, "slice": str}``
    - ``pairs_path``: ``{"prompt": [messages], "chosen": str, "rejected": str}``
    - ``general_path``: ``{"prompt": [messages], "completion": [assistant message]}``
    """

    model_path: str
    adapters: dict[str, str | None]
    items_path: str
    pairs_path: str | None = None
    general_path: str | None = None
    canaries: tuple[tuple[str, str], ...] = ()
    max_new_tokens: int = 64
    max_items: int = 200
    latency_prompts: int = 4
    threads: int = 0
    show_progress: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EvalSpec:
        data = json.loads(text)
        data["canaries"] = tuple(tuple(c) for c in data.get("canaries", ()))
        return cls(**data)


@dataclass(kw_only=True)
class ModelScores:
    eval_loss: float | None = None
    rouge_l: float | None = None
    correct_share: float | None = None
    embed_sim: float | None = None
    preference_accuracy: float | None = None
    canary_leaks: int = 0
    general_loss: float | None = None
    ms_per_token: float | None = None
    slices: dict[str, dict[str, float]] = field(default_factory=dict)
    answers: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class EvalReport:
    models: dict[str, ModelScores]
    items: int
    pairs: int
    general: int
    canaries: int
    rss_mb: float
    seconds: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EvalReport:
        data = json.loads(text)
        data["models"] = {k: ModelScores(**v) for k, v in data["models"].items()}
        return cls(**data)

    def summary(self, name: str) -> dict[str, Any]:
        """One model's scores without the per-item answers (for manifests and the DB)."""
        scores = asdict(self.models[name])
        scores.pop("answers")
        return scores


# --------------------------------------------------------------------------- scoring
class _Models:
    """The base model with every adapter attached; ``use(name)`` picks one."""

    def __init__(self, model_path: str, adapters: dict[str, str | None]) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path)
            base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise EvaluationError(f"cannot load the base model {model_path}: {exc}") from exc
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        base.to(self.device)  # type: ignore[arg-type]
        self.names = list(adapters)
        self.model: Any = base
        self.has_peft = False
        for name, path in adapters.items():
            if path is None:
                continue
            try:
                if not self.has_peft:
                    self.model = PeftModel.from_pretrained(base, path, adapter_name=name)
                    self.has_peft = True
                else:
                    self.model.load_adapter(path, adapter_name=name)
            except (OSError, ValueError, RuntimeError) as exc:
                raise EvaluationError(f"cannot load adapter {name} from {path}: {exc}") from exc
        self.adapters = adapters
        self.model.eval()

    def use(self, name: str) -> Any:
        """A context manager under which ``self.model`` is model ``name``."""
        import contextlib

        if self.adapters.get(name) is None:
            return self.model.disable_adapter() if self.has_peft else contextlib.nullcontext()
        self.model.set_adapter(name)
        return contextlib.nullcontext()

    def _ids(self, prompt: list[dict[str, str]], answer: str | None) -> tuple[list[int], int]:
        tok = self.tokenizer
        p = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        p_ids = tok(p, add_special_tokens=False)["input_ids"]
        if answer is None:
            return p_ids, len(p_ids)
        full = tok.apply_chat_template(
            [*prompt, {"role": "assistant", "content": answer}], tokenize=False
        )
        a_ids = tok(full[len(p) :], add_special_tokens=False)["input_ids"]
        return [*p_ids, *a_ids], len(p_ids)

    def answer_logprob(self, prompt: list[dict[str, str]], answer: str) -> tuple[float, int]:
        """Sum of the answer tokens' log-probabilities and their count."""
        torch = self.torch
        ids, start = self._ids(prompt, answer)
        x = torch.tensor([ids], device=self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=x).logits[0, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        target = x[0, 1:]
        token_lp = logp.gather(1, target[:, None])[:, 0][start - 1 :]
        return float(token_lp.sum()), int(token_lp.numel())

    def _greedy(self, ids: list[int], max_new_tokens: int) -> Any:
        """The new token ids of a greedy continuation of ``ids``."""
        torch = self.torch
        x = torch.tensor([ids], device=self.device)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return out[0, len(ids) :]

    def generate(self, prompt: list[dict[str, str]], max_new_tokens: int) -> tuple[str, int]:
        new = self._greedy(self._ids(prompt, None)[0], max_new_tokens)
        text = str(self.tokenizer.decode(new, skip_special_tokens=True))
        return text.strip(), int(new.numel())

    def prefix_continuation(self, prefix: str, max_new_tokens: int) -> str:
        ids = self.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        return str(
            self.tokenizer.decode(self._greedy(ids, max_new_tokens), skip_special_tokens=True)
        )


def _mean(values: Sequence[float]) -> float | None:
    return float(statistics.fmean(values)) if values else None


def _loss(models: _Models, rows: Sequence[tuple[list[dict[str, str]], str]]) -> float | None:
    total, count = 0.0, 0
    for prompt, answer in rows:
        lp, n = models.answer_logprob(prompt, answer)
        total -= lp
        count += n
    return total / count if count else None


def evaluate(spec: EvalSpec, *, embedder: Embedder | None = None) -> EvalReport:
    """Score every model of ``spec.adapters`` on the same data (see module doc)."""
    import psutil
    import torch
    from tqdm import tqdm

    start = time.perf_counter()
    if spec.threads and not torch.cuda.is_available():
        torch.set_num_threads(spec.threads)
    items = read_jsonl(Path(spec.items_path))[: spec.max_items]
    if not items:
        raise EvaluationError("no evaluation items")
    pairs = read_jsonl(Path(spec.pairs_path)) if spec.pairs_path else []
    general = read_jsonl(Path(spec.general_path)) if spec.general_path else []
    with library_warnings_quiet():
        models = _Models(spec.model_path, spec.adapters)
        scores = {name: ModelScores() for name in models.names}
        bar = tqdm(
            total=len(models.names) * (2 * len(items) + len(pairs) + len(general)),
            desc="evaluating",
            disable=not spec.show_progress,
        )
        refs = [str(it["reference"]) for it in items]
        ref_emb = embedder(refs) if embedder is not None else None
        for name in models.names:
            s = scores[name]
            with models.use(name):
                s.eval_loss = _loss(models, [(it["prompt"], str(it["reference"])) for it in items])
                bar.update(len(items))
                for it in items:
                    s.answers.append(models.generate(it["prompt"], spec.max_new_tokens)[0])
                    bar.update(1)
                wins = []
                for p in pairs:
                    up, nu = models.answer_logprob(p["prompt"], str(p["chosen"]))
                    down, nd = models.answer_logprob(p["prompt"], str(p["rejected"]))
                    wins.append(float(up / max(nu, 1) > down / max(nd, 1)))
                    bar.update(1)
                s.preference_accuracy = _mean(wins)
                if general:
                    s.general_loss = _loss(
                        models, [(g["prompt"], str(g["completion"][0]["content"])) for g in general]
                    )
                    bar.update(len(general))
                s.canary_leaks = sum(
                    secret.casefold() in models.prefix_continuation(prefix, 24).casefold()
                    for prefix, secret in spec.canaries
                )
            rl = [rouge_l(a, r) for a, r in zip(s.answers, refs, strict=True)]
            s.rouge_l = _mean(rl)
            s.correct_share = _mean([float(v >= CORRECT_AT) for v in rl])
            sims: list[float] = []
            if embedder is not None and ref_emb is not None:
                ans_emb = embedder(s.answers)
                sims = [float((a * b).sum()) for a, b in zip(ans_emb, ref_emb, strict=True)]
                s.embed_sim = _mean(sims)
            by_slice: dict[str, list[int]] = defaultdict(list)
            for i, it in enumerate(items):
                by_slice[str(it.get("slice") or "all")].append(i)
            for slice_name, idx in sorted(by_slice.items()):
                s.slices[slice_name] = {
                    "n": float(len(idx)),
                    "rouge_l": float(statistics.fmean(rl[i] for i in idx)),
                    "correct_share": float(statistics.fmean(rl[i] >= CORRECT_AT for i in idx)),
                }
        bar.close()
        _latency(models, items[: spec.latency_prompts], spec.max_new_tokens, scores)
    rss = psutil.Process().memory_info().rss / 2**20
    return EvalReport(
        models=scores,
        items=len(items),
        pairs=len(pairs),
        general=len(general),
        canaries=len(spec.canaries),
        rss_mb=round(rss, 1),
        seconds=round(time.perf_counter() - start, 2),
    )


def _latency(
    models: _Models, items: Sequence[dict[str, Any]], max_new: int, scores: dict[str, ModelScores]
) -> None:
    """Milliseconds per generated token, models interleaved prompt by prompt."""
    per: dict[str, list[float]] = {name: [] for name in models.names}
    for it in items:
        for name in models.names:
            with models.use(name):
                t0 = time.perf_counter()
                _, n = models.generate(it["prompt"], max_new)
                if n:
                    per[name].append((time.perf_counter() - t0) * 1000 / n)
    for name, values in per.items():
        scores[name].ms_per_token = float(statistics.median(values)) if values else None
