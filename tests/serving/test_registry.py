"""Adapter store and hot-swap on the batching engine, with tiny LoRA adapters made by peft."""

from __future__ import annotations

import asyncio
import json
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from serving.engine import BatchingEngine
from serving.errors import AdapterError, AdapterRejected
from serving.prompt import build_prompt_ids
from serving.registry import (
    CONFIG,
    MANIFEST,
    WEIGHTS,
    AdapterManifest,
    AdapterRegistry,
    list_versions,
    sha256_file,
    write_adapter,
)
from serving.types import ChatMessage, GenerationParams, GenerationRequest, GenerationResult
from tests.tiny import make_tiny_model_dir

BASE_ID = "tiny-llama"
PROMPT = "The quick brown fox jumps over the lazy dog"


def _quiet_peft() -> Any:
    """peft 0.21 reads a property transformers 5 deprecated when it wraps a model."""
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
    return ctx


def _fresh_base(path: Path, state: dict[str, torch.Tensor]) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("registry")
    path = make_tiny_model_dir(root / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    sources: dict[str, Path] = {}
    for seed in range(1, 4):  # three LoRA adapters with different random weights
        torch.manual_seed(seed)
        config = LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        )
        ctx = _quiet_peft()
        try:
            peft_model = get_peft_model(_fresh_base(path, state), config)
        finally:
            ctx.__exit__(None, None, None)
        out = root / f"lora{seed}"
        peft_model.save_pretrained(str(out))
        sources[f"lora{seed}"] = out
    return SimpleNamespace(path=path, tokenizer=tokenizer, state=state, sources=sources)


def _store(tmp_path: Path, tiny: SimpleNamespace, *names: str) -> Path:
    store = tmp_path / "adapters"
    for i, name in enumerate(names):
        write_adapter(
            store,
            name,
            tiny.sources[f"lora{i % 3 + 1}"],
            base_model_id=BASE_ID,
            dataset_sha256=f"{i:064x}",
            metrics={"eval_loss": 1.0 + i},
        )
    return store


def _request(key: str = "", max_new_tokens: int = 8) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage("user", PROMPT),),
        params=GenerationParams(
            max_new_tokens=max_new_tokens, max_context_tokens=max_new_tokens + 200
        ),
        conversation_key=key,
    )


def _engine(tiny: SimpleNamespace, **kwargs: Any) -> BatchingEngine:
    return BatchingEngine(
        model=_fresh_base(tiny.path, tiny.state),
        tokenizer=tiny.tokenizer,
        model_id=BASE_ID,
        replica_id="r1",
        dtype="float32",
        **kwargs,
    )


async def _reply(engine: BatchingEngine, request: GenerationRequest) -> GenerationResult:
    stream = engine.stream(request)
    async for _ in stream:
        pass
    return await stream.result()


def _reference(tiny: SimpleNamespace, adapter_dir: Path | None, max_new_tokens: int = 8) -> str:
    """Greedy reply of a separately built model: base, or base + the adapter from disk."""
    from peft import PeftModel

    model = _fresh_base(tiny.path, tiny.state)
    if adapter_dir is not None:
        ctx = _quiet_peft()
        try:
            model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
        finally:
            ctx.__exit__(None, None, None)
    tok = tiny.tokenizer
    ids, _ = build_prompt_ids(tok, _request().messages, max_prompt_tokens=200)
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    new = [t for t in out[0, len(ids) :].tolist() if t != tok.eos_token_id]
    return str(tok.decode(new, skip_special_tokens=True)).rstrip("\ufffd")


def _param_count(engine: BatchingEngine) -> int:
    return sum(p.numel() for p in engine.model.parameters())


# --------------------------------------------------------------------------- store
def test_write_adapter_is_atomic_and_manifest_describes_it(
    tmp_path: Path, tiny: SimpleNamespace
) -> None:
    store = _store(tmp_path, tiny, "v1", "v2")
    assert list_versions(store) == ["v1", "v2"]
    assert [p.name for p in store.iterdir() if p.name.startswith(".")] == []  # no temp dirs
    manifest = AdapterManifest.from_json((store / "v1" / MANIFEST).read_text())
    assert manifest.version == "v1" and manifest.base_model_id == BASE_ID
    assert manifest.weights_sha256 == sha256_file(store / "v1" / WEIGHTS)
    assert manifest.config_sha256 == sha256_file(store / "v1" / CONFIG)
    assert manifest.metrics == {"eval_loss": 1.0} and manifest.dataset_sha256 == "0" * 64
    with pytest.raises(AdapterError, match="already exists"):
        _store(tmp_path, tiny, "v1")
    with pytest.raises(AdapterRejected, match="invalid adapter version"):
        write_adapter(
            store, "base", tiny.sources["lora1"], base_model_id=BASE_ID, dataset_sha256="x"
        )
    (store / "half").mkdir()  # no manifest: not a version
    assert list_versions(store) == ["v1", "v2"]


# --------------------------------------------------------------------------- hot swap
def test_load_activate_pin_and_rollback(tmp_path: Path, tiny: SimpleNamespace) -> None:
    store = _store(tmp_path, tiny, "v1", "v2")
    want = {
        "base": _reference(tiny, None),
        "v1": _reference(tiny, store / "v1"),
        "v2": _reference(tiny, store / "v2"),
    }
    assert len(set(want.values())) == 3

    async def go() -> dict[str, Any]:
        engine = _engine(tiny)
        registry = AdapterRegistry(engine, base_model_id=BASE_ID, store_dir=store)
        seen: dict[str, Any] = {}
        try:
            before = engine.stream(_request())  # pinned to base before anything loads
            await registry.load_version("v1")
            assert registry.active_version == "base"  # loading activates nothing
            registry.activate("v1")
            seen["before"] = await _consume(before)
            seen["v1"] = await _reply(engine, _request())
            await registry.load_version("v2")
            registry.activate("v2")
            seen["v2"] = await _reply(engine, _request())
            seen["previous"] = registry.previous_version
            seen["rolled_back_to"] = registry.rollback()
            seen["after_rollback"] = await _reply(engine, _request())
            seen["loaded"] = registry.loaded_versions
            return seen
        finally:
            await engine.aclose()

    seen = asyncio.run(go())
    assert (seen["before"].adapter_version, seen["before"].text) == ("base", want["base"])
    assert (seen["v1"].adapter_version, seen["v1"].text) == ("v1", want["v1"])
    assert (seen["v2"].adapter_version, seen["v2"].text) == ("v2", want["v2"])
    assert seen["previous"] == "v1" and seen["rolled_back_to"] == "v1"
    assert seen["after_rollback"].adapter_version == "v1"
    assert seen["after_rollback"].text == want["v1"]
    assert seen["loaded"] == ["v1", "v2"]


async def _consume(stream: Any) -> GenerationResult:
    async for _ in stream:
        pass
    result: GenerationResult = await stream.result()
    return result


def test_requests_keep_their_version_across_a_swap(tmp_path: Path, tiny: SimpleNamespace) -> None:
    store = _store(tmp_path, tiny, "v1", "v2")

    async def go() -> tuple[GenerationResult, GenerationResult]:
        engine = _engine(tiny, stop_token_ids=[])
        registry = AdapterRegistry(engine, base_model_id=BASE_ID, store_dir=store)
        try:
            await registry.load_version("v1")
            await registry.load_version("v2")
            registry.activate("v1")
            running = engine.stream(_request(max_new_tokens=40))
            registry.activate("v2")  # mid-flight
            after = await _reply(engine, _request(max_new_tokens=4))
            return await _consume(running), after
        finally:
            await engine.aclose()

    running, after = asyncio.run(go())
    assert running.adapter_version == "v1" and running.completion_tokens == 40
    assert after.adapter_version == "v2"


def test_canary_routes_a_sticky_share_of_conversations(
    tmp_path: Path, tiny: SimpleNamespace
) -> None:
    store = _store(tmp_path, tiny, "v1")

    async def go() -> list[str]:
        engine = _engine(tiny)
        registry = AdapterRegistry(engine, base_model_id=BASE_ID, store_dir=store)
        try:
            await registry.load_version("v1")
            registry.set_canary("v1", 100.0)
            versions = [
                (await _reply(engine, _request(key="c1", max_new_tokens=1))).adapter_version
            ]
            versions.append((await _reply(engine, _request(max_new_tokens=1))).adapter_version)
            with pytest.raises(AdapterError, match="serving"):
                await registry.unload_adapter("v1")
            registry.set_canary(None, 0.0)
            versions.append(
                (await _reply(engine, _request(key="c1", max_new_tokens=1))).adapter_version
            )
            return versions
        finally:
            await engine.aclose()

    assert asyncio.run(go()) == ["v1", "base", "base"]


def test_unload_waits_for_pinned_requests_then_frees_the_weights(
    tmp_path: Path, tiny: SimpleNamespace
) -> None:
    store = _store(tmp_path, tiny, "v1")

    async def go() -> dict[str, Any]:
        engine = _engine(tiny, stop_token_ids=[])
        registry = AdapterRegistry(engine, base_model_id=BASE_ID, store_dir=store)
        out: dict[str, Any] = {}
        try:
            bare = _param_count(engine)
            await registry.load_version("v1")
            name = registry.adapter("v1").peft_name
            registry.activate("v1")
            with pytest.raises(AdapterError, match="serving"):
                await registry.unload_adapter("v1")
            pinned = engine.stream(_request(max_new_tokens=500))
            registry.activate("base")
            unload = asyncio.ensure_future(registry.unload_adapter("v1"))
            while engine.stats().generated_tokens < 3:  # noqa: ASYNC110 - engine thread state
                await asyncio.sleep(0.002)
            out["unload_waited"] = not unload.done()
            out["still_in_model"] = name in engine.model.peft_config
            pinned.cancel()
            out["pinned"] = await _consume(pinned)
            await unload
            out["gone"] = not engine.is_peft  # the last adapter gone: LoRA layers removed too
            out["params_back_to_bare"] = _param_count(engine) == bare
            out["loaded"] = registry.loaded_versions
            out["after"] = await _reply(engine, _request(max_new_tokens=2))
            return out
        finally:
            await engine.aclose()

    out = asyncio.run(go())
    assert out["unload_waited"] and out["still_in_model"]
    assert out["pinned"].adapter_version == "v1" and out["pinned"].finish_reason == "cancelled"
    assert out["gone"] and out["params_back_to_bare"] and out["loaded"] == []
    assert out["after"].adapter_version == "base"


def test_memory_stays_flat_over_many_swaps(tmp_path: Path, tiny: SimpleNamespace) -> None:
    versions = [f"v{i}" for i in range(8)]
    store = _store(tmp_path, tiny, *versions)

    async def go() -> tuple[list[int], list[int], list[str]]:
        engine = _engine(tiny)
        registry = AdapterRegistry(engine, base_model_id=BASE_ID, store_dir=store)
        params: list[int] = []
        adapters: list[int] = []
        served: list[str] = []
        try:
            for version in versions:
                await registry.load_version(version)
                registry.activate(version)
                keep = {version, registry.previous_version}
                for old in registry.loaded_versions:
                    if old not in keep:  # what RegistryFollower does after a swap
                        await registry.unload_adapter(old)
                served.append((await _reply(engine, _request(max_new_tokens=1))).adapter_version)
                params.append(_param_count(engine))
                adapters.append(len(engine.model.peft_config))
            return params, adapters, served
        finally:
            await engine.aclose()

    params, adapters, served = asyncio.run(go())
    assert served == versions
    # active + previous + one spare slot for the next load, whatever the number of swaps
    assert adapters[:2] == [1, 2] and adapters[2:] == [3] * (len(versions) - 2)
    assert len(set(params[2:])) == 1


def test_a_reloaded_version_reuses_a_spare_slot_and_answers_like_a_fresh_model(
    tmp_path: Path, tiny: SimpleNamespace
) -> None:
    """Loads after the first ones copy weights into a spare slot: same replies as peft's own."""
    store = _store(tmp_path, tiny, "v1", "v2", "v3")
    want = {v: _reference(tiny, store / v) for v in ("v1", "v2", "v3")}
    assert len(set(want.values())) == 3

    async def go() -> dict[str, Any]:
        engine = _engine(tiny)
        registry = AdapterRegistry(engine, base_model_id=BASE_ID, store_dir=store)
        out: dict[str, Any] = {}
        try:
            await registry.load_version("v1")
            await registry.load_version("v2")
            slot_v1 = registry.adapter("v1").peft_name
            registry.activate("v2")
            await registry.unload_adapter("v1")
            out["spare_kept"] = slot_v1 in engine.model.peft_config
            await registry.load_version("v3")
            out["v3_slot"] = registry.adapter("v3").peft_name == slot_v1
            registry.activate("v3")
            out["v3"] = (await _reply(engine, _request())).text
            out["v2"] = (await _consume(engine.stream(_request(), adapter_version="v2"))).text
            await registry.unload_adapter("v2")  # v3 active: v2's slot becomes the spare
            await registry.load_version("v1")  # back into v2's old slot
            out["v1"] = (await _consume(engine.stream(_request(), adapter_version="v1"))).text
            out["slots"] = len(engine.model.peft_config)
            return out
        finally:
            await engine.aclose()

    out = asyncio.run(go())
    assert out["spare_kept"] and out["v3_slot"]
    assert (out["v1"], out["v2"], out["v3"]) == (want["v1"], want["v2"], want["v3"])
    assert out["slots"] == 2


# --------------------------------------------------------------------------- failures
def _tamper_weights(version_dir: Path) -> None:
    data = bytearray((version_dir / WEIGHTS).read_bytes())
    data[-1] ^= 0x01
    (version_dir / WEIGHTS).write_bytes(bytes(data))


def _rewrite(version_dir: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Replace the weights and re-sign the manifest: checksums pass, content is wrong."""
    from safetensors.torch import save_file

    save_file(tensors, str(version_dir / WEIGHTS))
    manifest = json.loads((version_dir / MANIFEST).read_text())
    manifest["weights_sha256"] = sha256_file(version_dir / WEIGHTS)
    (version_dir / MANIFEST).write_text(json.dumps(manifest))


def _weights(version_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return dict(load_file(str(version_dir / WEIGHTS)))


BAD_ADAPTERS = {
    "tampered": (lambda d: _tamper_weights(d), "does not match the manifest"),
    "no-manifest": (lambda d: (d / MANIFEST).unlink(), "no manifest.json"),
    "truncated-weights": (
        lambda d: (d / WEIGHTS).write_bytes((d / WEIGHTS).read_bytes()[:1000]),
        "does not match the manifest",
    ),
    "truncated-manifest": (
        lambda d: (d / MANIFEST).write_text((d / MANIFEST).read_text()[:40]),
        "manifest is not valid JSON",
    ),
    "no-weights": (lambda d: (d / WEIGHTS).unlink(), "has no adapter_model.safetensors"),
    "bad-shape": (
        lambda d: _rewrite(
            d, {k: torch.zeros(4, 7) if "lora_A" in k else v for k, v in _weights(d).items()}
        ),
        "do not fit",
    ),
    "bad-target": (
        lambda d: _rewrite(d, {k.replace("q_proj", "qq_proj"): v for k, v in _weights(d).items()}),
        "does not have",
    ),
    "nan": (
        lambda d: _rewrite(
            d, {k: torch.full_like(v, float("nan")) for k, v in _weights(d).items()}
        ),
        "non-finite",
    ),
    "other-base": (
        lambda d: (d / MANIFEST).write_text(
            (d / MANIFEST).read_text().replace(BASE_ID, "someone/else")
        ),
        "trained on 'someone/else'",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_ADAPTERS))
def test_a_rejected_adapter_leaves_serving_exactly_as_it_was(
    tmp_path: Path, tiny: SimpleNamespace, kind: str
) -> None:
    store = _store(tmp_path, tiny, "v1", "bad")
    damage, message = BAD_ADAPTERS[kind]
    damage(store / "bad")
    want_v1 = _reference(tiny, store / "v1")

    async def go() -> tuple[AdapterRejected, dict[str, Any]]:
        engine = _engine(tiny)
        registry = AdapterRegistry(engine, base_model_id=BASE_ID, store_dir=store)
        try:
            await registry.load_version("v1")
            registry.activate("v1")
            params = _param_count(engine)
            adapters = dict(engine.model.peft_config)
            with pytest.raises(AdapterRejected) as rejected:
                await registry.load_version("bad")
            state = {
                "active": registry.active_version,
                "loaded": registry.loaded_versions,
                "same_params": _param_count(engine) == params,
                "same_adapters": dict(engine.model.peft_config) == adapters,
                "reply": await _reply(engine, _request()),
            }
            return rejected.value, state
        finally:
            await engine.aclose()

    error, state = asyncio.run(go())
    assert message in str(error)
    assert state["active"] == "v1" and state["loaded"] == ["v1"]
    assert state["same_params"] and state["same_adapters"]
    assert state["reply"].text == want_v1


def test_checksum_must_match_the_registered_one(tmp_path: Path, tiny: SimpleNamespace) -> None:
    store = _store(tmp_path, tiny, "v1")

    async def go() -> tuple[str, bool]:
        engine = _engine(tiny)
        registry = AdapterRegistry(engine, base_model_id=BASE_ID)
        try:
            with pytest.raises(AdapterRejected, match="not the registered") as rejected:
                await registry.load_adapter("v1", str(store / "v1"), sha256="ab" * 32)
            with pytest.raises(AdapterRejected, match="holds adapter v1"):
                await registry.load_adapter("v9", str(store / "v1"), sha256=None)
            return str(rejected.value), engine.is_peft
        finally:
            await engine.aclose()

    _, wrapped = asyncio.run(go())
    assert wrapped is False  # never even wrapped the model


def test_failure_after_wrapping_unwraps_the_model(
    tmp_path: Path, tiny: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import peft

    store = _store(tmp_path, tiny, "v1")
    want_base = _reference(tiny, None)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(peft, "set_peft_model_state_dict", broken)

    async def go() -> tuple[AdapterError, bool, int, int, GenerationResult]:
        engine = _engine(tiny)
        registry = AdapterRegistry(engine, base_model_id=BASE_ID, store_dir=store)
        try:
            params = _param_count(engine)
            with pytest.raises(AdapterError) as failed:
                await registry.load_version("v1")
            reply = await _reply(engine, _request())
            return failed.value, engine.is_peft, params, _param_count(engine), reply
        finally:
            await engine.aclose()

    error, is_peft, before, after, reply = asyncio.run(go())
    assert "disk on fire" in str(error)
    assert is_peft is False and before == after
    assert reply.adapter_version == "base" and reply.text == want_base


def test_failed_warm_up_removes_the_new_adapter(
    tmp_path: Path, tiny: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path, tiny, "v1", "v2")

    async def go() -> tuple[list[str], list[str], str]:
        engine = _engine(tiny)
        registry = AdapterRegistry(engine, base_model_id=BASE_ID, store_dir=store)
        try:
            await registry.load_version("v1")
            registry.activate("v1")

            async def failing_warm(version: str) -> None:
                raise AdapterError(f"warm-up generation with {version} failed: test")

            monkeypatch.setattr(registry, "_warm", failing_warm)
            with pytest.raises(AdapterError, match="warm-up"):
                await registry.load_version("v2")
            return registry.loaded_versions, list(engine.model.peft_config), engine.active_version
        finally:
            await engine.aclose()

    loaded, peft_names, active = asyncio.run(go())
    assert loaded == ["v1"] and len(peft_names) == 1 and peft_names[0].startswith("v1-")
    assert active == "v1"


def test_adapters_on_a_bf16_engine(tmp_path: Path, tiny: SimpleNamespace) -> None:
    store = _store(tmp_path, tiny, "v1")

    async def go() -> tuple[GenerationResult, GenerationResult]:
        engine = BatchingEngine(
            model=_fresh_base(tiny.path, tiny.state).to(torch.bfloat16),
            tokenizer=tiny.tokenizer,
            model_id=BASE_ID,
            replica_id="r1",
            dtype="bfloat16",
        )
        registry = AdapterRegistry(engine, base_model_id=BASE_ID, store_dir=store)
        try:
            await registry.load_version("v1")
            on_v1 = engine.stream(_request(), adapter_version="v1")
            on_base = engine.stream(_request())
            return await _consume(on_v1), await _consume(on_base)
        finally:
            await engine.aclose()

    on_v1, on_base = asyncio.run(go())
    assert on_v1.adapter_version == "v1" and on_v1.finish_reason in {"stop", "length"}
    assert on_base.adapter_version == "base" and on_base.finish_reason in {"stop", "length"}


# --------------------------------------------------------------------------- replicas
def test_two_in_process_replicas_follow_the_registry(
    tmp_path: Path, tiny: SimpleNamespace, sessions: Any
) -> None:
    """Two batching engines share one database; their followers poll it (no sync by hand)."""
    from serving.sync import RegistryFollower
    from storage.db import transaction
    from storage.models import AdapterStatus
    from storage.repositories import Adapters

    store = _store(tmp_path, tiny, "v1", "v2")
    want = {v: _reference(tiny, store / v) for v in ("v1", "v2")}
    with transaction(sessions) as s:
        reg = Adapters(s)
        for v in ("v1", "v2"):
            reg.register(
                version=v,
                base_model=BASE_ID,
                path=str(store / v),
                weights_sha256=sha256_file(store / v / WEIGHTS),
            )
            reg.transition(v, AdapterStatus.CANDIDATE, actor="learning")
            reg.transition(v, AdapterStatus.PENDING, actor="learning")

    async def converge(registries: list[AdapterRegistry], version: str) -> list[str]:
        for _ in range(600):  # bounded wait for the pollers, not a timing assertion
            if all(r.active_version == version for r in registries):
                break
            await asyncio.sleep(0.02)
        return [r.active_version for r in registries]

    async def go() -> dict[str, Any]:
        engines = [_engine(tiny) for _ in range(2)]
        registries = [AdapterRegistry(e, base_model_id=BASE_ID, store_dir=store) for e in engines]
        followers = [
            RegistryFollower(host=r, sessions=sessions, interval_s=0.02) for r in registries
        ]
        seen: dict[str, Any] = {}
        try:
            for f in followers:
                f.start()
            for version in ("v1", "v2"):
                with transaction(sessions) as s:
                    Adapters(s).transition(version, AdapterStatus.ACTIVE, actor="maintainer")
                seen[version] = await converge(registries, version)
                seen[f"{version}-replies"] = [
                    await _reply(e, _request(key="conv")) for e in engines
                ]
            with transaction(sessions) as s:
                Adapters(s).rollback(actor="maintainer")
            seen["rollback"] = await converge(registries, "v1")
            seen["loaded"] = [r.loaded_versions for r in registries]
        finally:
            for f in followers:
                await f.stop()
            for e in engines:
                await e.aclose()
        return seen

    seen = asyncio.run(go())
    for version in ("v1", "v2"):
        assert seen[version] == [version, version]
        for reply in seen[f"{version}-replies"]:
            assert reply.adapter_version == version
            assert reply.text == want[version]
    assert seen["rollback"] == ["v1", "v1"]
    assert all("v1" in loaded for loaded in seen["loaded"])


def test_single_version_and_mixed_batches_alternate_exactly(
    tmp_path: Path, tiny: SimpleNamespace
) -> None:
    """One-version batches bypass peft's mixed path; switching between the two is exact."""
    store = _store(tmp_path, tiny, "v1", "v2")
    want = {
        "base": _reference(tiny, None),
        **{v: _reference(tiny, store / v) for v in ("v1", "v2")},
    }
    assert len(set(want.values())) == 3  # the adapters really change the reply

    async def pinned(engine: BatchingEngine, version: str) -> GenerationResult:
        stream = engine.stream(_request(), adapter_version=version)
        async for _ in stream:
            pass
        return await stream.result()

    async def go() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        engine = _engine(tiny)
        registry = AdapterRegistry(engine, base_model_id=BASE_ID, store_dir=store)
        try:
            for v in ("v1", "v2"):
                await registry.load_version(v)
            alone = []
            for version in ("base", "v1", "v2", "base", "v1", "v1", "base", "v2"):
                result = await pinned(engine, version)  # a batch of one version
                alone.append((version, result.text))
            order = ["v2", "base", "v1", "base", "v2", "v1"]
            mixed = await asyncio.gather(*(pinned(engine, v) for v in order))
            after = await pinned(engine, "base")  # back to one version after a mixed batch
            together = [(r.adapter_version, r.text) for r in mixed]
            return [*alone, ("base", after.text)], together
        finally:
            await engine.aclose()

    alone, together = asyncio.run(go())
    assert alone == [(v, want[v]) for v, _ in alone]
    assert together == [(v, want[v]) for v, _ in together]


def test_the_engine_routes_peft_layers_as_peft_itself_would(
    tmp_path: Path, tiny: SimpleNamespace
) -> None:
    """The worker sets the layers' routing fields directly (peft's calls walk every module):
    the state it leaves is the one peft's enable/disable/set_adapter would, and each
    version still answers exactly as its own reference after switching back and forth."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from serving.scheduler import PEFT_BASE_ADAPTER

    store = _store(tmp_path, tiny, "v1", "v2")
    want = {v: _reference(tiny, store / v) for v in ("v1", "v2")} | {"base": _reference(tiny, None)}

    async def go() -> tuple[list[Any], list[tuple[str, str]]]:
        engine = _engine(tiny)
        registry = AdapterRegistry(engine, base_model_id=BASE_ID, store_dir=store)
        try:
            await registry.load_version("v1")
            await registry.load_version("v2")
            names = {v: registry.adapter(v).peft_name for v in ("v1", "v2")}

            def states() -> list[Any]:
                out = []
                for route in (names["v1"], PEFT_BASE_ADAPTER, names["v2"], None):
                    engine._peft_route(route)
                    layers = [m for m in engine.model.modules() if isinstance(m, BaseTunerLayer)]
                    out.append(
                        (route, {(tuple(m.active_adapters), m.disable_adapters) for m in layers})
                    )
                return out

            routed = await asyncio.wrap_future(engine.run_in_worker(states))
            answers = []
            for version in ("v1", "base", "v2", "v1", "base"):
                registry.activate(version)
                answers.append((version, (await _reply(engine, _request())).text))
            return routed, answers
        finally:
            await engine.aclose()

    routed, answers = asyncio.run(go())
    v1, v2 = routed[0][0], routed[2][0]
    assert routed[0][1] == {((v1,), False)}
    assert routed[1][1] == {((v1,), True)}  # base: layers off, active adapter kept
    assert routed[2][1] == {((v2,), False)}
    assert routed[3][1] == {((v2,), False)}  # mixed: layers on (adapter_names picks rows)
    assert all(text == want[version] for version, text in answers)
