"""Wiring of the learning loop: a :class:`~learning.cycle.LoopConfig` from the settings.

The composition root's half of ``chatloop learn``: it resolves the base model to a
local directory (converted once, like the bot does), builds the anonymizer and the
cleaner from their settings, the trainer's and the gate's configs from
``learn_train``/``learn_gate``, and the prompt builder the bot serves with (system
prompt plus the answer memory's entries). ``learning`` itself never reads settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatloop.settings import Settings


def anonymizer_from(settings: Settings) -> Any:
    """The anonymizer the settings describe (languages, spaCy packages; never downloaded)."""
    from learning.anonymize import Anonymizer

    models = dict(item.split(":", 1) for item in settings.anonymizer_models) or None
    return Anonymizer(
        languages=settings.anonymizer_languages,
        spacy_models=models,
        url_allow_domains=settings.anonymizer_url_allow_domains,
    )


def clean_config_from(settings: Settings, seed: int) -> Any:
    """The cleaner's knobs from the settings (``CHATLOOP_CLEAN_*``)."""
    from learning.clean import CleanConfig

    return CleanConfig(
        languages=tuple(settings.clean_languages) or None,
        balance_ratio=settings.clean_balance_ratio,
        max_user_share=settings.clean_max_user_share,
        seed=seed,
    )


def retrieval_from(settings: Settings) -> Any:
    """Train and evaluate with the answer memory in the prompt, as the bot serves."""
    from learning.cycle import RetrievalConfig

    if not settings.memory_enabled:
        return None
    return RetrievalConfig(
        embedder=settings.memory_embedding_model,
        top_k=settings.memory_top_k,
        min_score=settings.memory_min_score,
        max_tokens=settings.memory_max_tokens,
    )


def canaries(settings: Settings) -> tuple[tuple[str, str], ...]:
    pairs = (item.partition("=>") for item in settings.learn_canaries)
    return tuple((prefix.strip(), secret.strip()) for prefix, _, secret in pairs)


def build_loop_config(
    settings: Settings,
    *,
    echo: Callable[[str], None] | None = None,
    progress: bool = False,
    prompt_builder: Any = None,
) -> Any:
    """The loop's configuration; resolves (and if needed converts) the base model."""
    from learning.cycle import LoopConfig
    from learning.gate import GatePolicy
    from learning.generalchat import general_chat_set
    from learning.trainconfig import TrainConfig
    from serving.fetch import resolve_model

    resolved = resolve_model(
        settings.model, settings.model_cache_dir, progress=echo or (lambda _m: None)
    )

    return LoopConfig(
        model_path=str(resolved.path),
        base_model_id=resolved.model_id,
        adapter_dir=settings.adapter_dir,
        snapshot_dir=settings.snapshot_dir,
        work_dir=settings.learn_work_dir,
        train=TrainConfig.from_dict(settings.learn_train),
        gate=GatePolicy(**settings.learn_gate),
        system_prompt=settings.system_prompt,
        anonymizer_factory=lambda: anonymizer_from(settings),
        clean_config=clean_config_from(settings, seed=0),
        min_train_examples=settings.learn_min_examples,
        max_eval_items=settings.learn_eval_items,
        general_chat=general_chat_set(settings.system_prompt, limit=48),
        replay_chat=general_chat_set(settings.system_prompt, held_out=False, limit=512),
        canaries=canaries(settings),
        embedder=settings.memory_embedding_model if settings.memory_enabled else None,
        prompt_builder=prompt_builder,
        retrieval=retrieval_from(settings),
        echo=echo,
        show_progress=progress,
    )
