"""Dataset snapshots end to end with the real anonymizer, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from learning.evalset import add_item
from learning.privacy import erase_user
from learning.report import build_report, render_png, render_text
from learning.snapshot import SnapshotError, build_snapshot, read_manifest, read_rows
from storage.db import make_engine, session_factory, transaction, upgrade
from storage.models import ConversationKind, DatasetSnapshot, Flag, Message
from storage.repositories import Conversations, FeedbackRepo, Flags, Messages, Replies, Users

CANARY_EMAIL = "zelda.quartermaine@example.org"
CANARY_PHONE = "+44 20 7946 0958"
CANARY_NAME = "Zelda Quartermaine"


@pytest.fixture(scope="module")
def anonymizer() -> Any:
    from learning.anonymize import Anonymizer

    return Anonymizer()


def _turn(
    s: Session, thread: str, user: str, question: str, answer: str, *, name: str = ""
) -> tuple[int, int]:
    u = Users(s).upsert("slack", user, display_name=name or None)
    conv = Conversations(s).get_or_create(
        "slack", "C1", thread_id=thread, kind=ConversationKind.THREAD
    )
    msg = Messages(s).add(conversation_id=conv.id, user_id=u.id, raw_text=question)
    reply = Replies(s).add(
        message_id=msg.id, conversation_id=conv.id, text=answer, finish_reason="stop",
        adapter_version="base", model_id="m", replica_id="r", latency_ms=1.0, ttft_ms=1.0,
        prompt_tokens=1, completion_tokens=1,
    )  # fmt: skip
    return reply.id, u.id


def _seed(sessions: sessionmaker[Session]) -> dict[str, int]:
    with transaction(sessions) as s:
        r1, zelda = _turn(
            s, "t1", "UZELDA",
            f"hi, i'm zelda quartermaine, mail me at {CANARY_EMAIL} or call {CANARY_PHONE}. "
            "How do I reset my password?",
            "Open Settings, then Security, then press Reset password.",
            name=CANARY_NAME,
        )  # fmt: skip
        FeedbackRepo(s).vote(reply_id=r1, user_id=zelda, value=1, source="button")
        r2, bob = _turn(
            s,
            "t2",
            "UBOB",
            "How can I export my invoices as PDF files?",
            "I cannot help with that.",
        )
        staff = Users(s).upsert("slack", "USTAFF").id
        FeedbackRepo(s).vote(reply_id=r2, user_id=bob, value=-1, source="button")
        Flags(s).add(
            reply_id=r2,
            user_id=staff,
            reason="wrong",
            corrected_text="Go to Billing, choose Invoices and click Export PDF.",
        )
        r3, _ = _turn(
            s,
            "t3",
            "UCAROL",
            "Where do I change the language of the app?",
            "Under Settings > Language.",
        )
        FeedbackRepo(s).vote(reply_id=r3, user_id=staff, value=0, source="button")  # retracted
        r4, dave = _turn(s, "t4", "UDAVE", "What is the capital of France?", "Paris.")
        FeedbackRepo(s).vote(reply_id=r4, user_id=dave, value=1, source="button")
        add_item(s, question="what is the capital of France?", answer="Paris", actor="m")
        for i in range(6):  # more conversations, so both split sides are populated
            r, u = _turn(
                s,
                f"x{i}",
                f"UX{i}",
                f"How do I enable feature number {i} in the dashboard?",
                f"Toggle switch {i} under Settings > Features.",
            )
            FeedbackRepo(s).vote(reply_id=r, user_id=u, value=1, source="reaction")
        _turn(s, "t5", "UERIN", "A question nobody voted on", "An answer")
        return {"zelda": zelda}


def test_snapshot_pipeline(
    sessions: sessionmaker[Session], anonymizer: Any, tmp_path: Path
) -> None:
    ids = _seed(sessions)
    result = build_snapshot(
        sessions, anonymizer=anonymizer, out_dir=tmp_path, eval_fraction=0.3, seed=1
    )
    assert result is not None
    counts = result.counts
    assert counts["selected_replies"] == 10  # the unvoted reply is not selected
    assert counts["eval_set_questions_excluded"] == 1
    assert counts["clean"]["dropped"].get("retracted") == 1
    assert counts["clean"]["corrected"] == 1
    assert counts["train"] + counts["eval"] == counts["clean"]["kept"] == 8
    assert (
        counts["pii"].get("EMAIL") == 1
        and counts["pii"].get("PHONE") == 1
        and counts["pii"].get("PERSON", 0) >= 1
    )

    # nothing personal reached the files
    blob = "".join(p.read_text() for p in result.path.iterdir())
    for canary in (
        CANARY_EMAIL,
        CANARY_PHONE,
        "zelda",
        "Zelda",
        "Quartermaine",
        "quartermaine",
        "UZELDA",
    ):
        assert canary not in blob
    rows = read_rows(result.path, "train") + read_rows(result.path, "eval")
    corrected = [r for r in rows if r["corrected"]]
    assert (
        len(corrected) == 1
        and corrected[0]["answer"].startswith("Go to Billing")
        and corrected[0]["vote"] == 1
    )
    assert not any("capital of France" in r["prompt"] for r in rows)
    train_convs = {r["conversation"] for r in read_rows(result.path, "train")}
    eval_convs = {r["conversation"] for r in read_rows(result.path, "eval")}
    assert train_convs and eval_convs and not train_convs & eval_convs

    # the anonymized text is kept beside the raw text in the database
    with sessions() as s:
        msg = s.scalars(select(Message).order_by(Message.id)).first()
        assert msg is not None and msg.raw_text and CANARY_EMAIL in msg.raw_text
        assert msg.anon_text and CANARY_EMAIL not in msg.anon_text and "<EMAIL_1>" in msg.anon_text
        assert msg.anonymized_at is not None

    manifest = read_manifest(result.path)
    assert (
        manifest["content_hash"] == result.content_hash
        and len(manifest["source_message_ids"]) == 10
    )
    assert build_snapshot(sessions, anonymizer=anonymizer, out_dir=tmp_path) is None  # nothing new

    # the report reads the snapshot
    report = build_report(result.path)
    text = render_text(report)
    assert "funnel" in text and "retracted" in text and "EMAIL" in text
    png = render_png(report, tmp_path / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # an erasure taints the snapshot that holds the person's data
    with transaction(sessions) as s:
        erase_user(s, platform="slack", external_id="UZELDA", actor="test")
    with sessions() as s:
        snap = s.get(DatasetSnapshot, result.snapshot_id)
        assert snap is not None and snap.tainted
    del ids


def test_an_altered_snapshot_is_refused(
    sessions: sessionmaker[Session], anonymizer: Any, tmp_path: Path
) -> None:
    _seed(sessions)
    result = build_snapshot(sessions, anonymizer=anonymizer, out_dir=tmp_path)
    assert result is not None
    train = result.path / "train.jsonl"
    train.chmod(0o644)  # snapshot files are read-only: tampering takes intent
    train.write_text(train.read_text() + json.dumps({"prompt": "injected", "answer": "x"}) + "\n")
    with pytest.raises(SnapshotError, match="altered"):
        read_rows(result.path)
    with pytest.raises(SnapshotError, match="not a snapshot"):
        read_manifest(tmp_path)


def _all_rows(path: Path) -> list[dict[str, Any]]:
    return read_rows(path, "train") + read_rows(path, "eval")


def test_late_votes_and_flags_reach_the_next_snapshot(
    sessions: sessionmaker[Session], anonymizer: Any, tmp_path: Path
) -> None:
    with transaction(sessions) as s:
        # r2 is older than r1 and not judged before the first snapshot
        r2, ben = _turn(s, "l2", "UBEN", "How do I delete my account?", "Write to support.")
        r1, ann = _turn(s, "l1", "UANN", "How do I change my avatar?", "Profile > Avatar.")
        FeedbackRepo(s).vote(reply_id=r1, user_id=ann, value=1, source="button")
        staff = Users(s).upsert("slack", "USTAFF").id
    first = build_snapshot(sessions, anonymizer=anonymizer, out_dir=tmp_path, eval_fraction=0)
    assert first is not None and first.counts["selected_replies"] == 1
    assert build_snapshot(sessions, anonymizer=anonymizer, out_dir=tmp_path) is None

    with transaction(sessions) as s:  # judgements of old replies, after the snapshot
        FeedbackRepo(s).vote(reply_id=r1, user_id=ben, value=-1, source="button")
        Flags(s).add(
            reply_id=r2, user_id=staff, reason="wrong",
            corrected_text="Open Settings > Account and press Delete account.",
        )  # fmt: skip
    second = build_snapshot(sessions, anonymizer=anonymizer, out_dir=tmp_path, eval_fraction=0)
    assert second is not None
    assert second.counts["selected_replies"] == second.counts["reselected_replies"] == 2
    rows = _all_rows(second.path)
    # the re-selected reply carries its current votes, old and new (one example each;
    # 👍 and 👎 on one reply are a tie, which the cleaner drops as no signal)
    assert second.counts["examples"] == 3
    assert second.counts["clean"]["dropped"] == {"conflicting_votes": 2}
    assert [r["source"] for r in rows].count(f"reply:{r1}") == 0
    [fixed] = [r for r in rows if r["source"] == f"reply:{r2}"]
    assert fixed["corrected"] and fixed["answer"].startswith("Open Settings > Account")
    manifest = read_manifest(second.path)
    assert manifest["flag_until_id"] is not None and manifest["feedback_until"]
    assert manifest["until_message_id"] == read_manifest(first.path)["until_message_id"]
    assert build_snapshot(sessions, anonymizer=anonymizer, out_dir=tmp_path) is None

    with transaction(sessions) as s:  # a retraction is a change too
        FeedbackRepo(s).vote(reply_id=r1, user_id=ann, value=0, source="button")
    third = build_snapshot(sessions, anonymizer=anonymizer, out_dir=tmp_path, eval_fraction=0)
    assert third is not None and third.counts["selected_replies"] == 1
    assert third.counts["examples"] == 2 and third.counts["clean"]["dropped"] == {"retracted": 1}
    assert [(r["source"], r["vote"]) for r in _all_rows(third.path)] == [(f"reply:{r1}", -1)]
    report = render_text(build_report(third.path))
    assert "of which judged late" in report


def test_late_votes_after_a_snapshot_without_watermarks(
    sessions: sessionmaker[Session], anonymizer: Any, tmp_path: Path
) -> None:
    """A snapshot written before the watermark columns existed: its time is the mark."""
    with transaction(sessions) as s:
        r1, ann = _turn(s, "w1", "UANN", "How do I change my avatar?", "Profile > Avatar.")
        FeedbackRepo(s).vote(reply_id=r1, user_id=ann, value=1, source="button")
    first = build_snapshot(sessions, anonymizer=anonymizer, out_dir=tmp_path)
    assert first is not None
    with transaction(sessions) as s:
        snap = s.get(DatasetSnapshot, first.snapshot_id)
        assert snap is not None and snap.feedback_until is not None
        snap.feedback_until, snap.flag_until_id = None, None
    assert build_snapshot(sessions, anonymizer=anonymizer, out_dir=tmp_path) is None
    with transaction(sessions) as s:
        staff = Users(s).upsert("slack", "USTAFF").id
        Flags(s).add(reply_id=r1, user_id=staff, reason=None, corrected_text="Profile > Photo.")
    again = build_snapshot(sessions, anonymizer=anonymizer, out_dir=tmp_path)
    assert again is not None and again.counts["reselected_replies"] == 1


_PH = re.compile(r"<PERSON_\d+>")


def test_a_person_keeps_one_placeholder_across_snapshot_runs(
    sessions: sessionmaker[Session], anonymizer: Any, tmp_path: Path
) -> None:
    question = "Hi, I am Zelda Quartermaine. How do I reset my password?"
    with transaction(sessions) as s:
        reply, zelda = _turn(
            s, "p1", "UZELDA", question, "Open Settings > Security.", name=CANARY_NAME
        )
        FeedbackRepo(s).vote(reply_id=reply, user_id=zelda, value=-1, source="button")
        staff = Users(s).upsert("slack", "USTAFF").id
    first = build_snapshot(sessions, anonymizer=anonymizer, out_dir=tmp_path / "a")
    assert first is not None
    [row] = _all_rows(first.path)
    [zelda_ph] = _PH.findall(row["prompt"])
    with sessions() as s:
        stored = s.scalars(select(Message)).one().anon_text

    # a correction written later names another person first, then Zelda again
    with transaction(sessions) as s:
        Flags(s).add(
            reply_id=reply, user_id=staff, reason="incomplete",
            corrected_text="Ask Oliver Henderson from support; he sends Zelda Quartermaine "
            "a reset link.",
        )  # fmt: skip
    second = build_snapshot(sessions, anonymizer=anonymizer, out_dir=tmp_path / "b")
    assert second is not None
    rows = _all_rows(second.path)
    [fixed] = [r for r in rows if r["corrected"]]
    assert _PH.findall(fixed["prompt"]) == [zelda_ph]
    oliver_ph, zelda_again = _PH.findall(fixed["answer"])
    assert zelda_again == zelda_ph and oliver_ph != zelda_ph
    assert "Zelda" not in fixed["answer"] and "Oliver" not in fixed["answer"]
    # the question was anonymized afresh from its raw text, and counted again
    assert second.counts["pii"]["PERSON"] >= 3
    with sessions() as s:
        assert s.scalars(select(Message)).one().anon_text == stored
        flag = s.scalars(select(Flag)).one()
        assert flag.corrected_anon_text == fixed["answer"]


def test_stored_placeholders_are_reserved_once_raw_text_is_gone(
    sessions: sessionmaker[Session], anonymizer: Any, tmp_path: Path
) -> None:
    with transaction(sessions) as s:
        reply, zelda = _turn(
            s, "g1", "UZELDA", "Hi, I am Zelda Quartermaine. How do I reset my password?",
            "Open Settings > Security.", name=CANARY_NAME,
        )  # fmt: skip
        FeedbackRepo(s).vote(reply_id=reply, user_id=zelda, value=1, source="button")
    assert build_snapshot(sessions, anonymizer=anonymizer, out_dir=tmp_path / "a") is not None
    with transaction(sessions) as s:  # retention dropped the raw question
        msg = s.scalars(select(Message)).one()
        assert msg.anon_text is not None and _PH.findall(msg.anon_text) == ["<PERSON_1>"]
        msg.raw_text = None
        staff = Users(s).upsert("slack", "USTAFF").id
        Flags(s).add(
            reply_id=reply, user_id=staff, reason=None,
            corrected_text="Oliver Henderson from support sends you a reset link.",
        )  # fmt: skip
    again = build_snapshot(sessions, anonymizer=anonymizer, out_dir=tmp_path / "b")
    assert again is not None
    [fixed] = [r for r in _all_rows(again.path) if r["corrected"]]
    assert _PH.findall(fixed["prompt"]) == ["<PERSON_1>"]  # the stored text, as it was
    assert _PH.findall(fixed["answer"]) == ["<PERSON_2>"]  # a new person, a new number


def test_the_same_data_gives_the_same_snapshot(
    sessions: sessionmaker[Session], anonymizer: Any, tmp_path: Path
) -> None:
    """Two fresh databases (this backend and SQLite) with the same data: same snapshot."""
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    upgrade(other_url)
    other_engine = make_engine(other_url)
    results = []
    try:
        for i, factory in enumerate((sessions, session_factory(other_engine))):
            _seed(factory)
            result = build_snapshot(
                factory, anonymizer=anonymizer, out_dir=tmp_path / f"out{i}",
                eval_fraction=0.3, seed=1,
            )  # fmt: skip
            assert result is not None
            results.append(result)
    finally:
        other_engine.dispose()
    a, b = results
    assert a.content_hash == b.content_hash and a.path.name == b.path.name
    for part in ("train", "eval"):
        assert (a.path / f"{part}.jsonl").read_bytes() == (b.path / f"{part}.jsonl").read_bytes()
        assert read_rows(a.path, part) == read_rows(b.path, part)
    assert read_rows(a.path, "train") and read_rows(a.path, "eval")
    assert a.counts == b.counts
    # written once, read-only from then on
    assert stat.S_IMODE(a.path.stat().st_mode) == 0o555
    for f in a.path.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o444
