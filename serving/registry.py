"""Adapter store and hot-swap of LoRA adapters on the local batching engine.

**Store layout.** The adapter store (setting ``adapter_dir``) holds one directory
per adapter version::

    <adapter_dir>/<version>/adapter_model.safetensors   peft LoRA weights
    <adapter_dir>/<version>/adapter_config.json         peft config
    <adapter_dir>/<version>/manifest.json               written last

``manifest.json`` (see :class:`AdapterManifest`) names the base model, the dataset
snapshot hash, the evaluation metrics and the sha256 of the weights (and of the
config). :func:`write_adapter` writes a version into a temporary directory and
renames it into place, so a reader never sees a half-written version; a directory
without a manifest is not a version.

**Loading** (:meth:`AdapterRegistry.load_adapter`) reads the weights' bytes once,
checks them against the manifest and the expected sha256, refuses adapters made
for another base model or that do not fit it (peft type, DoRA, target modules
missing from the model, shapes, non-finite weights), all on a side thread running
torch single-threaded (:func:`serving.device.single_threaded_torch`). It then
puts the weights into a LoRA *slot* of the engine's ``PeftModel`` and warms the
version with a short generation pinned to it. Any failure removes whatever was
added and raises :class:`~serving.errors.AdapterError`
(:class:`~serving.errors.AdapterRejected` for verification failures): serving is
exactly as it was.

**Slots keep loads off the decode path.** A slot is a peft adapter (LoRA A/B
matrices in every target layer) that serves one version at a time. Creating one
runs peft's module injection (100-250 ms of Python on a 2-core CPU), which must
happen on the engine's worker between two decode steps and so stalls every
stream. An unloaded version's slot is kept as a *spare* (at most
:data:`SPARE_SLOTS`): the next adapter of the same shape (rank, alpha, target
layers) is copied into the spare's tensors on the side thread, in place, while the
worker keeps decoding (no request can use a spare), and attaching it is the
engine's pointer swap in :meth:`BatchingEngine.register_adapter`. Only a new
shape, or more adapters than ever before, pays for injection. No ``gc.collect()``
runs while serving: a full collection holds the GIL for hundreds of milliseconds,
and the worker needs the GIL between its kernels.

**Activation** is an atomic pointer swap in the engine: requests pin the version
active (or canary) when they are submitted and finish on it. **Unloading** first
stops new requests from pinning the version, waits for the requests pinned to it
to finish, then deletes its weights on the worker thread, so memory stays flat
over many swaps. :class:`AdapterRegistry` implements
:class:`serving.sync.AdapterHost`; the :class:`~serving.sync.RegistryFollower`
decides what stays loaded (the active version, the previous one for instant
rollback, the canary).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from serving.device import single_threaded_torch
from serving.engine import BatchingEngine
from serving.errors import AdapterError, AdapterRejected, ServingError
from serving.types import BASE_VERSION, ChatMessage, GenerationParams, GenerationRequest

log = logging.getLogger(__name__)

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1

_WARNINGS_LOCK = threading.Lock()
"""Serialises ``warnings.catch_warnings`` blocks of worker threads (global state)."""

SPARE_SLOTS = 1
"""Unused LoRA slots kept for the next load (beyond them, unloading deletes)."""

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_LORA_KEY_RE = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")


# --------------------------------------------------------------------------- manifest
@dataclass(frozen=True, slots=True)
class AdapterManifest:
    """What ``manifest.json`` says about one adapter version."""

    version: str
    base_model_id: str
    dataset_sha256: str
    weights_sha256: str
    config_sha256: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    format: int = MANIFEST_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AdapterManifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AdapterRejected(f"manifest is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise AdapterRejected("manifest must be a JSON object")
        if data.get("format") != MANIFEST_FORMAT:
            raise AdapterRejected(f"unsupported manifest format {data.get('format')!r}")
        for key in ("version", "base_model_id", "dataset_sha256", "weights_sha256"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise AdapterRejected(f"manifest lacks {key!r}")
        if not isinstance(data.get("metrics", {}), dict):
            raise AdapterRejected("manifest 'metrics' must be an object")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_version_name(version: str) -> str:
    if version == BASE_VERSION or not _VERSION_RE.match(version):
        raise AdapterRejected(
            f"invalid adapter version {version!r}: use letters, digits, '.', '_' or '-' "
            f"(not {BASE_VERSION!r})"
        )
    return version


def write_adapter(
    store_dir: Path,
    version: str,
    source: Path | Any,
    *,
    base_model_id: str,
    dataset_sha256: str,
    metrics: Mapping[str, Any] | None = None,
) -> AdapterManifest:
    """Put adapter ``version`` into the store, atomically, with its manifest.

    ``source`` is a directory written by peft's ``save_pretrained`` (holding
    ``adapter_model.safetensors`` and ``adapter_config.json``) or a ``PeftModel``
    to save. The version is assembled in a temporary directory inside the store,
    the manifest is written last, and the directory is renamed into place.
    """
    check_version_name(version)
    store_dir.mkdir(parents=True, exist_ok=True)
    final = store_dir / version
    if final.exists():
        raise AdapterError(f"adapter version {version} already exists in {store_dir}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=store_dir))
    try:
        if isinstance(source, str | os.PathLike):
            for name in (WEIGHTS, CONFIG):
                shutil.copyfile(Path(source) / name, tmp / name)
        else:
            source.save_pretrained(str(tmp), safe_serialization=True)
            nested = [p for p in tmp.iterdir() if p.is_dir() and (p / WEIGHTS).exists()]
            if not (tmp / WEIGHTS).exists() and len(nested) == 1:  # saved a non-default name
                for name in (WEIGHTS, CONFIG):
                    shutil.move(str(nested[0] / name), tmp / name)
        manifest = AdapterManifest(
            version=version,
            base_model_id=base_model_id,
            dataset_sha256=dataset_sha256,
            weights_sha256=sha256_file(tmp / WEIGHTS),
            config_sha256=sha256_file(tmp / CONFIG),
            metrics=dict(metrics or {}),
            created_at=time.time(),
        )
        (tmp / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def list_versions(store_dir: Path) -> list[str]:
    """Versions in the store: directories with a manifest (sorted by name)."""
    if not store_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in store_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()
    )


# --------------------------------------------------------------------------- verification
@dataclass(frozen=True, slots=True)
class VerifiedAdapter:
    """An adapter read from disk and checked: ready to be added to the model."""

    manifest: AdapterManifest
    config: Any  # peft.LoraConfig
    state_dict: dict[str, torch.Tensor]
    path: Path

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.state_dict.values())


def read_adapter(
    path: Path, *, base_model_id: str, expected_sha256: str | None = None
) -> VerifiedAdapter:
    """Read and verify one adapter directory (manifest, checksums, peft config).

    The weights are read once and the very bytes hashed are the ones loaded.
    Raises :class:`AdapterRejected` on any mismatch.
    """
    from peft import LoraConfig, PeftType
    from safetensors.torch import load as load_safetensors

    path = Path(path)
    for name in (MANIFEST, WEIGHTS, CONFIG):
        if not (path / name).is_file():
            raise AdapterRejected(f"{path} has no {name}")
    manifest = AdapterManifest.from_json((path / MANIFEST).read_text(encoding="utf-8"))
    if manifest.base_model_id != base_model_id:
        raise AdapterRejected(
            f"adapter {manifest.version} was trained on {manifest.base_model_id!r}, "
            f"this replica serves {base_model_id!r}"
        )
    data = (path / WEIGHTS).read_bytes()
    digest = sha256_bytes(data)
    if digest != manifest.weights_sha256:
        raise AdapterRejected(
            f"adapter {manifest.version}: weights sha256 {digest[:12]}... does not match "
            f"the manifest ({manifest.weights_sha256[:12]}...)"
        )
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise AdapterRejected(
            f"adapter {manifest.version}: weights sha256 {digest[:12]}... is not the "
            f"registered {expected_sha256[:12]}..."
        )
    config_bytes = (path / CONFIG).read_bytes()
    if manifest.config_sha256 is not None and sha256_bytes(config_bytes) != manifest.config_sha256:
        raise AdapterRejected(f"adapter {manifest.version}: config does not match the manifest")
    try:
        raw_config = json.loads(config_bytes)
        if raw_config.get("peft_type") != PeftType.LORA.value:
            raise AdapterRejected(
                f"adapter {manifest.version} is {raw_config.get('peft_type')!r}, not a LoRA adapter"
            )
        config = LoraConfig.from_pretrained(str(path))
    except AdapterRejected:
        raise
    except Exception as exc:
        raise AdapterRejected(f"adapter {manifest.version}: unreadable config: {exc}") from exc
    if getattr(config, "use_dora", False):
        raise AdapterRejected(f"adapter {manifest.version} uses DoRA (no mixed-batch serving)")
    if getattr(config, "modules_to_save", None):
        raise AdapterRejected(f"adapter {manifest.version} saves whole modules; LoRA only")
    try:
        state_dict = load_safetensors(data)
    except Exception as exc:
        raise AdapterRejected(f"adapter {manifest.version}: unreadable weights: {exc}") from exc
    for key, tensor in state_dict.items():
        if not torch.isfinite(tensor).all():
            raise AdapterRejected(f"adapter {manifest.version}: non-finite values in {key}")
    return VerifiedAdapter(manifest=manifest, config=config, state_dict=state_dict, path=path)


def check_fits(adapter: VerifiedAdapter, base_model: torch.nn.Module) -> None:
    """Every LoRA pair targets a linear layer of ``base_model`` with matching shapes."""
    version = adapter.manifest.version
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in adapter.state_dict.items():
        match = _LORA_KEY_RE.match(key)
        if match is None:
            raise AdapterRejected(f"adapter {version}: unexpected tensor {key!r} (LoRA A/B only)")
        pairs.setdefault(match["module"], {})[match["ab"]] = tensor
    if not pairs:
        raise AdapterRejected(f"adapter {version} holds no LoRA weights")
    for module_path, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise AdapterRejected(f"adapter {version}: {module_path} lacks lora_A or lora_B")
        try:
            module = base_model.get_submodule(module_path)
        except AttributeError:
            raise AdapterRejected(
                f"adapter {version} targets {module_path}, which this base model does not have"
            ) from None
        module = getattr(module, "base_layer", module)  # a layer peft already wrapped
        if not isinstance(module, torch.nn.Linear):
            raise AdapterRejected(f"adapter {version}: {module_path} is not a linear layer")
        lora_a, lora_b = pair["A"], pair["B"]
        if (
            lora_a.dim() != 2
            or lora_b.dim() != 2
            or lora_a.shape[1] != module.in_features
            or lora_b.shape[0] != module.out_features
            or lora_a.shape[0] != lora_b.shape[1]
        ):
            raise AdapterRejected(
                f"adapter {version}: {module_path} LoRA shapes {tuple(lora_a.shape)} x "
                f"{tuple(lora_b.shape)} do not fit a {module.in_features}->"
                f"{module.out_features} layer"
            )


# --------------------------------------------------------------------------- registry
def _peft_name(version: str, sha256: str, serial: int) -> str:
    # peft adapter names become ModuleDict keys: no dots; unique per slot
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', version)}-{sha256[:8]}-{serial}"


def slot_shape(adapter: VerifiedAdapter) -> tuple[Any, ...]:
    """What a slot must share with an adapter to hold it: the scaling parameters and
    every LoRA tensor's module and shape."""
    config = adapter.config
    tensors = sorted((key, tuple(t.shape)) for key, t in adapter.state_dict.items())
    return (
        config.r,
        config.lora_alpha,
        bool(getattr(config, "use_rslora", False)),
        tuple(sorted((getattr(config, "rank_pattern", None) or {}).items())),
        tuple(sorted((getattr(config, "alpha_pattern", None) or {}).items())),
        tuple(tensors),
    )


@dataclass(slots=True)
class _Slot:
    shape: tuple[Any, ...]
    version: str | None  # None: a spare


def _bare(peft_model: Any) -> Any:
    """The base model without LoRA layers, as if never wrapped (peft's ``unload``
    leaves ``peft_config`` behind, and wrapping such a model again warns)."""
    base = peft_model.unload()
    if "peft_config" in vars(base):
        del base.peft_config
    return base


@dataclass(frozen=True, slots=True)
class LoadedAdapter:
    version: str
    peft_name: str
    manifest: AdapterManifest
    num_parameters: int


class AdapterRegistry:
    """Verified LoRA loading and atomic hot-swap on a :class:`BatchingEngine`.

    Implements :class:`serving.sync.AdapterHost`. ``base_model_id`` is what
    manifests must name. ``store_dir`` (optional) lets :meth:`load_version` find
    versions by name.
    """

    def __init__(
        self,
        engine: BatchingEngine,
        *,
        base_model_id: str,
        store_dir: Path | None = None,
        warmup_prompt: str = "Hello!",
        warmup_timeout_s: float = 60.0,
    ) -> None:
        self.engine = engine
        self.base_model_id = base_model_id
        self.store_dir = store_dir
        self.warmup_prompt = warmup_prompt
        self.warmup_timeout_s = warmup_timeout_s
        self._loaded: dict[str, LoadedAdapter] = {}
        self._slots: dict[str, _Slot] = {}  # peft adapter name -> what it holds
        self._previous: str | None = None
        self._lock = asyncio.Lock()
        self._serial = 0

    # AdapterHost ------------------------------------------------------------------
    @property
    def active_version(self) -> str:
        return self.engine.active_version

    @property
    def loaded_versions(self) -> list[str]:
        return sorted(self._loaded)

    @property
    def previous_version(self) -> str | None:
        """The version active before the last :meth:`activate` (kept for rollback)."""
        return self._previous

    def adapter(self, version: str) -> LoadedAdapter:
        try:
            return self._loaded[version]
        except KeyError:
            raise AdapterError(f"adapter {version} is not loaded") from None

    async def load_version(self, version: str) -> None:
        """Load ``version`` from the store directory (its manifest gives the checksum)."""
        if self.store_dir is None:
            raise AdapterError("this registry has no adapter store directory")
        path = self.store_dir / check_version_name(version)
        await self.load_adapter(version, str(path), sha256=None)

    async def load_adapter(self, version: str, path: str, *, sha256: str | None) -> None:
        """Verify, add and warm adapter ``version`` from ``path``; activates nothing.

        ``sha256`` is the weights' checksum the registry recorded (None: trust the
        manifest). On failure serving is unchanged and :class:`AdapterError` is
        raised (:class:`AdapterRejected` when verification failed).
        """
        check_version_name(version)
        async with self._lock:
            if version in self._loaded:
                return
            base = self._base_model()
            verified = await asyncio.to_thread(self._read_and_check, Path(path), sha256, base)
            if verified.manifest.version != version:
                raise AdapterRejected(
                    f"{path} holds adapter {verified.manifest.version}, not {version}"
                )
            shape = slot_shape(verified)
            spare = next(
                (
                    n
                    for n, slot in self._slots.items()
                    if slot.version is None and slot.shape == shape
                ),
                None,
            )
            if spare is not None:  # off the decode path: copy into the spare's tensors
                name = spare
                self._slots[name].version = version
                try:
                    await asyncio.to_thread(self._fill_slot, name, verified)
                except BaseException:
                    self._slots[name].version = None
                    raise
            else:  # a new slot: peft injects it on the worker, between two steps
                self._serial += 1
                name = _peft_name(version, verified.manifest.weights_sha256, self._serial)
                await self._in_worker(lambda: self._add_to_model(name, verified))
                self._slots[name] = _Slot(shape=shape, version=version)
            try:
                self.engine.register_adapter(version, name)
                await self._warm(version)
            except BaseException:  # a new slot goes again; a reused one is a spare again
                await self._remove(version, name, keep_spare=spare is not None)
                raise
            self._loaded[version] = LoadedAdapter(
                version=version,
                peft_name=name,
                manifest=verified.manifest,
                num_parameters=verified.num_parameters,
            )
            log.info(
                "adapter loaded",
                extra={
                    "version": version,
                    "peft_name": name,
                    "params": verified.num_parameters,
                    "slot_reused": spare is not None,
                },
            )

    async def unload_adapter(self, version: str) -> None:
        """Retire ``version``: no new requests, wait for pinned ones, free its weights."""
        async with self._lock:
            loaded = self._loaded.get(version)
            if loaded is None:
                return
            self.engine.unregister_adapter(version)  # raises while it is active or canary
            del self._loaded[version]
            if self._previous == version:
                self._previous = None
        # outside the lock: waiting for long replies must not hold up other loads
        await self.engine.wait_unpinned(version)
        async with self._lock:
            await self._remove(version, loaded.peft_name)
        log.info("adapter unloaded", extra={"version": version})

    def activate(self, version: str) -> None:
        """New requests use ``version`` (``"base"``: no adapter); running ones keep theirs."""
        if version != BASE_VERSION and version not in self._loaded:
            raise AdapterError(f"adapter {version} is not loaded")
        current = self.engine.active_version
        self.engine.activate(version)
        if current != version:
            self._previous = current

    def rollback(self) -> str:
        """Activate the previous version again (instant: it is still loaded)."""
        if self._previous is None:
            raise AdapterError("there is no previous version to roll back to")
        target = self._previous
        self.activate(target)
        return target

    def set_canary(self, version: str | None, percent: float) -> None:
        if version is not None and version != BASE_VERSION and version not in self._loaded:
            raise AdapterError(f"canary adapter {version} is not loaded")
        self.engine.set_canary(version, percent)

    # internals --------------------------------------------------------------------
    def _base_model(self) -> torch.nn.Module:
        model = self.engine.model
        if model is None:
            raise AdapterError("the engine is closed")
        base: torch.nn.Module = model.get_base_model() if self.engine.is_peft else model
        return base

    def _read_and_check(
        self, path: Path, sha256: str | None, base: torch.nn.Module
    ) -> VerifiedAdapter:
        single_threaded_torch()  # a side thread: keep the engine's OpenMP team unthrottled
        verified = read_adapter(path, base_model_id=self.base_model_id, expected_sha256=sha256)
        check_fits(verified, base)
        return verified

    async def _in_worker(self, fn: Any) -> Any:
        try:
            return await asyncio.wrap_future(self.engine.run_in_worker(fn))
        except ServingError:
            raise
        except Exception as exc:
            raise AdapterError(f"adapter change failed: {type(exc).__name__}: {exc}") from exc

    def _add_to_model(self, name: str, adapter: VerifiedAdapter) -> None:
        """On the worker thread: add adapter ``name`` to the model, or leave it unchanged."""
        from peft import PeftModel, set_peft_model_state_dict

        engine = self.engine
        model = engine.model
        wrapped_now = not engine.is_peft
        if wrapped_now:
            # peft 0.21 reads a property transformers 5 deprecated. The warning filters
            # are process-global: without the lock, two engines' workers wrapping at once
            # restore each other's filters mid-wrap and the warning escapes half-way.
            with _WARNINGS_LOCK, warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning
                )
                peft_model = PeftModel(model, adapter.config, adapter_name=name)
        else:
            peft_model = model
            peft_model.add_adapter(name, adapter.config)
        try:
            result = set_peft_model_state_dict(peft_model, adapter.state_dict, adapter_name=name)
            unexpected = list(getattr(result, "unexpected_keys", []) or [])
            missing = [k for k in (getattr(result, "missing_keys", []) or []) if f".{name}." in k]
            if unexpected or missing:
                raise AdapterRejected(
                    f"adapter weights do not match the model: missing {missing[:3]}, "
                    f"unexpected {unexpected[:3]}"
                )
            peft_model.to(engine.device)
            peft_model.eval()
        except BaseException:
            if wrapped_now:
                engine.install_model(_bare(peft_model))
            else:
                self._delete_from_model(name)
            raise
        if wrapped_now:
            engine.install_model(peft_model)

    def _delete_from_model(self, name: str) -> None:
        """On the worker thread: delete peft adapter ``name`` and free its weights."""
        model = self.engine.model
        if model is None or not self.engine.is_peft or name not in model.peft_config:
            return
        others = [n for n in model.peft_config if n != name]
        if not others:  # the last adapter: serve the bare model again, without LoRA layers
            self.engine.install_model(_bare(model))
            return
        if name in model.active_adapters:
            model.set_adapter(others[0])  # so peft does not warn about deleting the active one
        model.delete_adapter(name)

    def _fill_slot(self, name: str, adapter: VerifiedAdapter) -> None:
        """On a side thread: copy ``adapter``'s weights into spare slot ``name``.

        No request can use a spare (no version maps to it), so the worker keeps
        decoding meanwhile; the copies run single-threaded (see
        :func:`single_threaded_torch`) and release the GIL.
        """
        single_threaded_torch()
        base = self._base_model()
        with torch.no_grad():
            for key, tensor in adapter.state_dict.items():
                match = _LORA_KEY_RE.match(key)
                assert match is not None  # check_fits accepted every key
                layer = base.get_submodule(match["module"])
                target = getattr(layer, f"lora_{match['ab']}")[name].weight
                target.copy_(tensor)

    async def _remove(self, version: str, name: str, *, keep_spare: bool = True) -> None:
        """Free slot ``name`` once no request pinned to ``version`` is left.

        The slot stays as a spare (``keep_spare``) while at most :data:`SPARE_SLOTS`
        exist and another slot is in use; else it is deleted on the worker (the
        last one takes the LoRA layers with it: the base model runs bare again).
        """
        self.engine.unregister_adapter(version)
        await self.engine.wait_unpinned(version)
        slot = self._slots.get(name)
        if slot is None:
            return
        slot.version = None
        spares = sum(s.version is None for s in self._slots.values())
        in_use = any(s.version is not None for s in self._slots.values())
        if in_use and keep_spare and spares <= SPARE_SLOTS:
            return
        if in_use:
            await self._in_worker(lambda: self._delete_from_model(name))
            del self._slots[name]
            return
        await self._in_worker(self._delete_all_slots)
        self._slots.clear()

    def _delete_all_slots(self) -> None:
        """On the worker thread: every adapter gone, the bare model served again."""
        model = self.engine.model
        if model is not None and self.engine.is_peft:
            self.engine.install_model(_bare(model))

    async def _warm(self, version: str) -> None:
        request = GenerationRequest(
            messages=(ChatMessage("user", self.warmup_prompt),),
            params=GenerationParams(
                # one token: the prompt runs every LoRA layer, and the request never joins
                # the batch (a decode step with two versions takes peft's slower mixed path)
                max_new_tokens=1,
                max_context_tokens=256,
                timeout_s=self.warmup_timeout_s,
            ),
        )
        try:
            stream = self.engine.stream(request, adapter_version=version)
            result = await stream.result()
        except ServingError as exc:
            raise AdapterError(f"warm-up generation with {version} failed: {exc}") from exc
        if result.finish_reason not in ("stop", "length"):
            raise AdapterError(
                f"warm-up generation with {version} ended with {result.finish_reason!r}"
            )
