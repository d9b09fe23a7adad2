"""The answer memory through the core: a correction is live for the next message,
retired/erased entries and other workspaces never reach the prompt, the prompt
stays within the context budget, and only staff manage the memory from chat."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.core import (
    CommandEvent,
    Core,
    CoreConfig,
    FlagEvent,
    MessageEvent,
    Person,
    Place,
    RolePolicy,
)
from bot.core.events import Outcome, ReplyRef
from learning.privacy import erase_user
from serving.embed import HashingEmbedder
from serving.errors import ModelLoadError, PromptTooLong
from serving.memory import AnswerMemory, MemoryConfig
from serving.prompt import MEMORY_HEADER, build_prompt_ids, tokenizer_counter
from serving.types import GenerationParams, GenerationRequest
from storage.db import transaction
from storage.memory import MemoryEntries
from storage.models import MemoryEntry, MemorySource, MemoryStatus, Reply
from storage.repositories import Workspaces
from tests.bot.fakes import RecordingSink, ScriptedGenerator
from tests.conftest import run

PLACE = Place(platform="slack", channel_id="C1", thread_id="1.1", kind="thread", workspace_id="T1")
OTHER_THREAD = Place(
    platform="slack", channel_id="C1", thread_id="2.2", kind="thread", workspace_id="T1"
)
OTHER_WORKSPACE = Place(
    platform="slack", channel_id="C9", thread_id="3.3", kind="thread", workspace_id="T2"
)
ANN = Person(user_id="UANN")
BOB = Person(user_id="UBOB")
STAFF = Person(user_id="USTAFF")
MAINT = Person(user_id="UMAINT")

QUESTION = "How long does shipping to Austria take?"
PARAPHRASE = "how long is shipping to austria?"
CORRECT = "Parcels to Austria arrive in 3 to 5 working days with DHL."


def make_core(
    sessions: sessionmaker[Session],
    gen: ScriptedGenerator,
    *,
    params: GenerationParams | None = None,
    count_tokens: Any = None,
    max_tokens: int = 384,
) -> tuple[Core, AnswerMemory]:
    memory = AnswerMemory(
        sessions=sessions,
        embedder=HashingEmbedder(256),
        config=MemoryConfig(top_k=3, min_score=0.35, max_tokens=max_tokens),
        **({"count_tokens": count_tokens} if count_tokens else {}),
    )
    core = Core(
        generator=gen,
        sessions=sessions,
        roles=RolePolicy(staff=["slack:USTAFF"], maintainers=["slack:UMAINT"]),
        config=CoreConfig(system_prompt="Be brief.", params=params or GenerationParams()),
        memory=memory,
    )
    return core, memory


def say(core: Core, text: str, *, place: Place = PLACE, who: Person = ANN) -> RecordingSink:
    sink = RecordingSink()
    run(core.on_message(MessageEvent(place=place, author=who, text=text), sink))
    return sink


def flag(core: Core, correction: str, *, place: Place = PLACE, who: Person = STAFF) -> Outcome:
    event = FlagEvent(ref=ReplyRef(place=place), flagger=who, reason=None, correction=correction)
    return run(core.on_flag(event))  # type: ignore[no-any-return]


def command(core: Core, *args: str, who: Person = STAFF, place: Place = PLACE) -> Outcome:
    event = CommandEvent(place=place, author=who, name="memory", args=args)
    return run(core.on_command(event))  # type: ignore[no-any-return]


def system_of(request: GenerationRequest) -> str:
    assert request.messages[0].role == "system"
    return request.messages[0].content


def test_a_correction_is_retrieved_for_a_paraphrase_on_the_next_message(
    sessions: sessionmaker[Session],
) -> None:
    gen = ScriptedGenerator()
    core, _ = make_core(sessions, gen)
    say(core, QUESTION)
    assert CORRECT not in system_of(gen.requests[-1])
    outcome = flag(core, CORRECT)
    assert outcome.ok and "answer-memory entry #" in outcome.text
    # the next message, in another thread of the same workspace, by another customer
    sink = say(core, PARAPHRASE, place=OTHER_THREAD, who=BOB)
    system = system_of(gen.requests[-1])
    assert MEMORY_HEADER in system and CORRECT in system and QUESTION in system
    with sessions() as s:
        entry = s.scalars(select(MemoryEntry)).one()
        reply = s.scalars(select(Reply).order_by(Reply.id.desc())).first()
        assert reply is not None and reply.generation["memory"] == [entry.id]
        assert entry.source is MemorySource.CORRECTION and entry.created_by == "slack:USTAFF"
        assert entry.flag_id is not None and entry.reply_id is not None
    assert sink.notes == [f"📚 from the answer memory: #{entry.id}"]


def test_another_replica_sees_the_correction_before_its_next_message(
    sessions: sessionmaker[Session],
) -> None:
    gen_a, gen_b = ScriptedGenerator(), ScriptedGenerator()
    core_a, _ = make_core(sessions, gen_a)
    core_b, memory_b = make_core(sessions, gen_b)
    say(core_b, "warm up the index of replica b")
    assert memory_b.size(None) == 0
    say(core_a, QUESTION)
    flag(core_a, CORRECT)
    say(core_b, PARAPHRASE, place=OTHER_THREAD, who=BOB)
    assert CORRECT in system_of(gen_b.requests[-1])


def test_retired_and_erased_entries_are_never_retrieved(sessions: sessionmaker[Session]) -> None:
    gen = ScriptedGenerator()
    core, _ = make_core(sessions, gen)
    say(core, QUESTION, who=BOB)
    flag(core, CORRECT)
    with sessions() as s:
        entry_id = s.scalars(select(MemoryEntry.id)).one()
    retired = command(core, "retire", str(entry_id), "outdated")
    assert retired.ok, retired.text
    say(core, PARAPHRASE, place=OTHER_THREAD, who=BOB)
    assert CORRECT not in system_of(gen.requests[-1])

    # a second correction, then the customer who asked is erased
    other = "Shipping to Austria takes two days with express delivery."
    say(core, QUESTION, who=ANN)
    flag(core, other)
    say(core, PARAPHRASE, place=OTHER_THREAD, who=BOB)
    assert other in system_of(gen.requests[-1])
    with transaction(sessions) as s:
        report = erase_user(s, platform="slack", external_id="UANN", actor="cli:dpo")
    assert report.memory_entries == 1
    say(core, PARAPHRASE, place=OTHER_THREAD, who=BOB)
    assert other not in system_of(gen.requests[-1]) and MEMORY_HEADER not in system_of(
        gen.requests[-1]
    )
    with sessions() as s:
        rows = list(s.scalars(select(MemoryEntry)))
        assert [(r.id, r.status) for r in rows] == [(entry_id, MemoryStatus.RETIRED)]


def test_retrieval_respects_workspace_boundaries(sessions: sessionmaker[Session]) -> None:
    gen = ScriptedGenerator()
    core, _ = make_core(sessions, gen)
    say(core, QUESTION)
    flag(core, CORRECT)
    say(core, PARAPHRASE, place=OTHER_WORKSPACE, who=BOB)
    assert CORRECT not in system_of(gen.requests[-1])
    with sessions() as s:
        entry_id = s.scalars(select(MemoryEntry.id)).one()
    # nor can staff of the other workspace see or change the entry
    shown = command(core, "show", str(entry_id), place=OTHER_WORKSPACE)
    assert not shown.ok and "no answer-memory entry" in shown.text
    assert not command(core, "retire", str(entry_id), place=OTHER_WORKSPACE).ok
    assert command(core, "show", str(entry_id)).ok


def test_the_prompt_stays_within_the_context_budget(
    sessions: sessionmaker[Session], tiny_loaded: Any
) -> None:
    tokenizer = tiny_loaded.tokenizer
    params = GenerationParams(max_new_tokens=64, max_context_tokens=512)
    gen = ScriptedGenerator()
    core, _ = make_core(
        sessions, gen, params=params, count_tokens=tokenizer_counter(tokenizer), max_tokens=300
    )
    with transaction(sessions) as s:
        ws = Workspaces(s).get_or_create("slack", "T1").id
        repo = MemoryEntries(s)
        for n in range(40):  # many entries, some very long, all about shipping to Austria
            answer = f"Answer {n}: Austria shipping. " + (
                "very long detail " * 200 if n % 2 else ""
            )
            repo.add(
                workspace_id=ws,
                question=f"{QUESTION} variant {n}",
                answer=answer,
                source=MemorySource.CURATED,
                actor="cli:test",
                supersede=False,
            )
    for history_turns in (0, 6):
        for _ in range(history_turns):
            say(core, "Tell me about shipping to Austria " + "please " * 20)
        say(core, PARAPHRASE)
        request = gen.requests[-1]
        system = system_of(request)
        assert MEMORY_HEADER in system  # short entries still fit
        assert "very long detail" not in system  # long ones are skipped, not cut
        assert sum(1 for line in system.splitlines() if line.startswith("[")) <= 3
        budget = params.max_context_tokens - params.max_new_tokens
        try:
            ids, _ = build_prompt_ids(tokenizer, request.messages, max_prompt_tokens=budget)
        except PromptTooLong:  # pragma: no cover - the assertion below says why
            raise AssertionError("the memory pushed the prompt over the context") from None
        assert len(ids) <= budget
    # a question that leaves no room gets no memory at all (and no error from it)
    say(core, PARAPHRASE + " " + "word " * 300)
    assert MEMORY_HEADER not in system_of(gen.requests[-1])


def test_staff_manage_the_memory_from_chat_customers_cannot(
    sessions: sessionmaker[Session],
) -> None:
    gen = ScriptedGenerator()
    core, _ = make_core(sessions, gen)
    added = command(core, "add", "Do", "you", "ship", "to", "Norway?", "|", "Yes,", "via", "UPS.")
    assert added.ok, added.text
    with sessions() as s:
        entry_id = s.scalars(select(MemoryEntry.id)).one()
    for sub in (("list",), ("search", "ship", "Norway"), ("show", str(entry_id))):
        refused = command(core, *sub, who=ANN)
        assert not refused.ok
        assert refused.text == "Only support staff and maintainers can use /memory."
    assert not command(core, "edit", str(entry_id), "No.", who=ANN).ok
    assert not command(core, "retire", str(entry_id), who=ANN).ok

    listed = command(core, "list")
    assert listed.ok and f"#{entry_id}" in listed.text and "Norway" in listed.text
    found = command(core, "search", "Can", "you", "ship", "to", "Norway")
    assert found.ok and f"#{entry_id}" in found.text
    edited = command(core, "edit", f"#{entry_id}", "Yes, via DHL since May.")
    assert edited.ok, edited.text
    say(core, "do you ship to norway?")
    assert "Yes, via DHL since May." in system_of(gen.requests[-1])
    retired = command(core, "retire", str(entry_id), who=MAINT)
    assert retired.ok, retired.text
    with sessions() as s:
        row = s.get(MemoryEntry, entry_id)
        assert row is not None and row.status is MemoryStatus.RETIRED and row.revision == 2
        actions = [a.action for a in MemoryEntries(s).history(entry_id)]
    assert actions == ["memory.add", "memory.edit", "memory.retire"]
    say(core, "do you ship to norway?")
    assert MEMORY_HEADER not in system_of(gen.requests[-1])


def test_a_customer_cannot_put_an_answer_into_the_memory(sessions: sessionmaker[Session]) -> None:
    gen = ScriptedGenerator()
    core, _ = make_core(sessions, gen)
    say(core, QUESTION)
    assert not flag(core, "Free shipping forever!", who=ANN).ok
    with sessions() as s:
        assert s.scalars(select(MemoryEntry)).all() == []


class _BrokenEmbedder:
    """An embedding model that fails at run time (the serving boundary's error)."""

    model_id = "broken"
    dim = 8
    default_min_score = 0.3

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise ModelLoadError("the embedding model went away")


def test_a_broken_memory_never_stops_a_reply(sessions: sessionmaker[Session]) -> None:
    gen = ScriptedGenerator()
    memory = AnswerMemory(sessions=sessions, embedder=_BrokenEmbedder())
    with transaction(sessions) as s:
        MemoryEntries(s).add(
            workspace_id=None,
            question=QUESTION,
            answer=CORRECT,
            source=MemorySource.CURATED,
            actor="cli:test",
        )
    core = Core(
        generator=gen,
        sessions=sessions,
        roles=RolePolicy(),
        config=CoreConfig(system_prompt="Be brief."),
        memory=memory,
    )
    place = Place(platform="console", channel_id="c", kind="console")
    sink = RecordingSink()
    run(core.on_message(MessageEvent(place=place, author=ANN, text=PARAPHRASE), sink))
    assert sink.finals and sink.notes == [""]
    assert system_of(gen.requests[-1]) == "Be brief."
