"""Dataset snapshots end to end with the real anonymizer, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from learning.evalset import add_item
from learning.privacy import erase_user
from learning.report import build_report, render_png, render_text
from learning.snapshot import SnapshotError, build_snapshot, read_manifest, read_rows
from storage.db import transaction
from storage.models import ConversationKind, DatasetSnapshot, Message
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
    train.write_text(train.read_text() + json.dumps({"prompt": "injected", "answer": "x"}) + "\n")
    with pytest.raises(SnapshotError, match="altered"):
        read_rows(result.path)
    with pytest.raises(SnapshotError, match="not a snapshot"):
        read_manifest(tmp_path)
