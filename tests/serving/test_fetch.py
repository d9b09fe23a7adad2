"""Resolving the model setting, and the cache manifest check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.errors import ModelLoadError
from serving.fetch import MANIFEST, resolve_model, sha256_file, verify
from serving.model import load_model


def _fake_cache(tmp_path: Path) -> Path:
    d = tmp_path / "m"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"weights" * 100)
    (d / "config.json").write_text("{}")
    files = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in d.iterdir()}
    (d / MANIFEST).write_text(json.dumps({"files": files}))
    return d


def test_verify_detects_truncation_and_corruption(tmp_path: Path) -> None:
    d = _fake_cache(tmp_path)
    verify(d, full=True)
    (d / "model.safetensors").write_bytes(b"weightz" * 100)  # same size, other bytes
    verify(d)  # the fast check only looks at sizes
    with pytest.raises(ModelLoadError, match="checksum"):
        verify(d, full=True)
    (d / "model.safetensors").write_bytes(b"short")
    with pytest.raises(ModelLoadError, match="wrong size"):
        verify(d)
    (d / MANIFEST).unlink()
    with pytest.raises(ModelLoadError, match=MANIFEST):
        verify(d)


def test_resolve_directory_id_and_missing(tmp_path: Path, tiny_model_dir: Path) -> None:
    r = resolve_model(str(tiny_model_dir), tmp_path)
    assert r.path == str(tiny_model_dir) and not r.converted
    assert (
        resolve_model("HuggingFaceTB/SmolLM2-360M-Instruct", tmp_path).path
        == "HuggingFaceTB/SmolLM2-360M-Instruct"
    )
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model(str(tmp_path / "nope.gguf"), tmp_path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model("./no/such/dir", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        resolve_model(str(tmp_path / "empty"), tmp_path)


def test_load_errors_are_mapped(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_model(str(bad), cache_dir=tmp_path, device="cpu")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda_is_a_clear_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        load_model(str(tiny_model_dir), cache_dir=tmp_path, device="cuda")
