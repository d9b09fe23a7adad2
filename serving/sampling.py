"""Choosing the next token of every row of a batch.

Per row: greedy when ``temperature == 0``, else temperature + top-p (nucleus)
sampling; an optional repetition penalty over prompt and reply, with the rule of
transformers' ``RepetitionPenaltyLogitsProcessor``. Greedy rows never touch the
random generator, so a greedy reply is the same whatever else is in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from serving.types import GenerationParams


def sample_next(
    logits: torch.Tensor,
    params: Sequence[GenerationParams],
    seen: Sequence[Sequence[int] | None],
    rng: torch.Generator,
) -> list[int]:
    """Next token per row of ``logits`` (``[rows, vocab]``).

    ``params[i]`` are row ``i``'s settings; ``seen[i]`` its prompt + reply ids,
    needed only when its repetition penalty is not 1 (else None).
    """
    scores = logits.float()
    for i, p in enumerate(params):
        penalty = p.repetition_penalty
        ids = seen[i]
        if penalty != 1.0 and ids:
            index = torch.tensor(list(ids), dtype=torch.long, device=scores.device)
            row = scores[i]
            picked = row.gather(0, index)
            row.scatter_(0, index, torch.where(picked < 0, picked * penalty, picked / penalty))
    tokens = scores.argmax(dim=-1)
    sampled = [i for i, p in enumerate(params) if p.temperature > 0]
    if sampled:
        index = torch.tensor(sampled, dtype=torch.long, device=scores.device)
        temps = torch.tensor(
            [params[i].temperature for i in sampled], device=scores.device
        ).unsqueeze(1)
        sub = scores.index_select(0, index) / temps
        top_ps = [params[i].top_p for i in sampled]
        if any(p < 1.0 for p in top_ps):
            limit = torch.tensor([p if p < 1.0 else math.inf for p in top_ps], device=scores.device)
            ordered, order = sub.sort(dim=-1, descending=True)
            probs = ordered.softmax(dim=-1)
            before = probs.cumsum(dim=-1) - probs  # mass of the better tokens
            ordered = ordered.masked_fill(before >= limit.unsqueeze(1), -math.inf)
            sub = torch.full_like(sub, -math.inf).scatter(1, order, ordered)
        probs = sub.softmax(dim=-1)
        if probs.device != rng.device:
            probs = probs.to(rng.device)
        picks = torch.multinomial(probs, 1, generator=rng).squeeze(1)
        tokens[index] = picks.to(tokens.device)
    return [int(t) for t in tokens.tolist()]
