"""The engine's KV cache: preallocated per-layer buffers, one left-padded batch.

A running batch keeps one buffer per layer (``[batch, kv_heads, capacity,
head_dim]``). Each decode step writes one column in place (no ``torch.cat`` of the
whole cache per step as in transformers' ``DynamicCache``); the buffers are
rebuilt only when the batch composition changes (:func:`merge_rows`). Rows are
left-padded to the longest one; each carries its own attention mask (zeros over
its padding, :func:`decode_inputs`) and position ids (its own token count), so
batching does not change the math of a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer


class SlotLayer(DynamicLayer):
    """One layer's KV cache in a preallocated buffer, grown geometrically.

    ``update`` writes the new columns in place and returns views of the used
    prefix, so a decode step costs O(new tokens) instead of the O(cache) copy of
    ``DynamicLayer``'s ``torch.cat``. Unused columns are zero: padded rows never
    carry NaN/inf garbage into masked attention.
    """

    def __init__(self, capacity_hint: int = 0) -> None:
        super().__init__()
        self.capacity_hint = capacity_hint
        self.buf_k: torch.Tensor | None = None
        self.buf_v: torch.Tensor | None = None
        self.length = 0

    @classmethod
    def from_buffers(cls, buf_k: torch.Tensor, buf_v: torch.Tensor, length: int) -> SlotLayer:
        layer = cls()
        layer.dtype, layer.device = buf_k.dtype, buf_k.device
        layer.buf_k, layer.buf_v, layer.length = buf_k, buf_v, length
        layer.keys, layer.values = buf_k[:, :, :length], buf_v[:, :, :length]
        layer.is_initialized = True
        return layer

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        b, h, n, d = key_states.shape
        cap = max(self.capacity_hint, n)
        self.buf_k = key_states.new_zeros((b, h, cap, d))
        self.buf_v = value_states.new_zeros((b, h, cap, value_states.shape[-1]))
        self.length = 0
        self.is_initialized = True

    def _grow(self, needed: int) -> None:
        assert self.buf_k is not None and self.buf_v is not None
        cap = max(needed, self.buf_k.shape[2] + max(64, self.buf_k.shape[2] // 2))
        new_k = self.buf_k.new_zeros((*self.buf_k.shape[:2], cap, self.buf_k.shape[3]))
        new_v = self.buf_v.new_zeros((*self.buf_v.shape[:2], cap, self.buf_v.shape[3]))
        new_k[:, :, : self.length] = self.buf_k[:, :, : self.length]
        new_v[:, :, : self.length] = self.buf_v[:, :, : self.length]
        self.buf_k, self.buf_v = new_k, new_v

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        assert self.buf_k is not None and self.buf_v is not None
        end = self.length + key_states.shape[-2]
        if end > self.buf_k.shape[2]:
            self._grow(end)
        self.buf_k[:, :, self.length : end] = key_states
        self.buf_v[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self.buf_k[:, :, :end], self.buf_v[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def reset(self) -> None:
        self.buf_k = self.buf_v = None
        self.keys = self.values = None
        self.length = 0
        self.is_initialized = False

    def crop(self, tokens_to_remove: int) -> None:  # pragma: no cover - not used by the engine
        raise NotImplementedError("the engine's KV cache is not croppable")

    def batch_repeat_interleave(self, repeats: int) -> None:  # pragma: no cover
        raise NotImplementedError("the engine's KV cache does not support beam search")

    def batch_select_indices(self, indices: torch.Tensor) -> None:  # pragma: no cover
        raise NotImplementedError("the engine's KV cache does not support beam search")


class SlotCache(Cache):
    """A transformers ``Cache`` made of :class:`SlotLayer` s (full attention only)."""

    def __init__(self, layers: list[SlotLayer]) -> None:
        super().__init__(layers=list(layers))

    @classmethod
    def empty(cls, num_layers: int, capacity_hint: int) -> SlotCache:
        return cls([SlotLayer(capacity_hint) for _ in range(num_layers)])

    def slot_layers(self) -> list[SlotLayer]:
        return [layer for layer in self.layers if isinstance(layer, SlotLayer)]


def merge_rows(
    old: SlotCache | None,
    old_len: int,
    keep: Sequence[int],
    joiners: Sequence[tuple[SlotCache, int]],
    num_layers: int,
) -> tuple[SlotCache, int]:
    """A new batch cache: rows ``keep`` of ``old`` (used length ``old_len``), then
    each joiner's single-row cache (``(cache, tokens cached)``), all left-padded to
    the longest row. Returns the cache and its used length."""
    lengths = [old_len] * bool(keep) + [n for _, n in joiners]
    new_len = max(lengths)
    capacity = new_len + max(64, new_len // 2)
    rows = len(keep) + len(joiners)
    old_layers = old.slot_layers() if old is not None else []
    idx = torch.tensor(list(keep), dtype=torch.long)
    shift = new_len - old_len
    new_layers: list[SlotLayer] = []
    for layer_no in range(num_layers):
        template = old_layers[layer_no] if old_layers else joiners[0][0].slot_layers()[layer_no]
        assert template.buf_k is not None and template.buf_v is not None
        _, heads, _, k_dim = template.buf_k.shape
        v_dim = template.buf_v.shape[3]
        buf_k = template.buf_k.new_zeros((rows, heads, capacity, k_dim))
        buf_v = template.buf_v.new_zeros((rows, heads, capacity, v_dim))
        if keep:
            src = old_layers[layer_no]
            assert src.buf_k is not None and src.buf_v is not None
            src_from, dst_from = max(0, -shift), max(0, shift)
            index = idx.to(src.buf_k.device)
            old_k, old_v = src.buf_k[:, :, src_from:old_len], src.buf_v[:, :, src_from:old_len]
            buf_k[: len(keep), :, dst_from:new_len] = old_k.index_select(0, index)
            buf_v[: len(keep), :, dst_from:new_len] = old_v.index_select(0, index)
        for j, (cache, n) in enumerate(joiners):
            layer = cache.slot_layers()[layer_no]
            assert layer.buf_k is not None and layer.buf_v is not None
            buf_k[len(keep) + j, :, new_len - n : new_len] = layer.buf_k[0, :, :n]
            buf_v[len(keep) + j, :, new_len - n : new_len] = layer.buf_v[0, :, :n]
        new_layers.append(SlotLayer.from_buffers(buf_k, buf_v, new_len))
    return SlotCache(new_layers), new_len


def decode_inputs(
    counts: Sequence[int], width: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Position ids (``[rows, 1]``) and the attention mask for one decode step.

    ``counts`` are the tokens each row holds in a cache of ``width`` columns; the
    mask is None when no row is padded (the model's plain causal path).
    """
    positions = torch.tensor(counts, dtype=torch.long).unsqueeze(1)
    mask: torch.Tensor | None = None
    if any(n != width for n in counts):
        columns = torch.arange(width + 1)
        mask = (columns.unsqueeze(0) >= (width - positions)).long()
    if device.type != "cpu":
        positions = positions.to(device)
        mask = mask.to(device) if mask is not None else None
    return positions, mask
