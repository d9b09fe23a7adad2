"""The frozen evaluation set: add, list, import, dedupe."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.orm import Session, sessionmaker

from learning.evalset import (
    EvalSetError,
    add_item,
    eval_hashes,
    import_jsonl,
    list_items,
    question_hash,
)
from storage.db import transaction


def test_add_list_and_dedupe(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        item = add_item(
            s,
            question="How do I reset my password?",
            answer="Settings > Security.",
            tags=["account", " "],
            actor="m",
        )
        assert item is not None and item.tags == ["account"]
        assert (
            add_item(s, question="  how do I RESET my   password? ", answer="other", actor="m")
            is None
        )
        add_item(
            s,
            question="Wie ändere ich mein Passwort?",
            answer="Einstellungen.",
            tags=["de"],
            actor="m",
        )
        with pytest.raises(EvalSetError):
            add_item(s, question=" ", answer="x", actor="m")
    with transaction(sessions) as s:
        assert [i.question for i in list_items(s)] == [
            "How do I reset my password?",
            "Wie ändere ich mein Passwort?",
        ]
        assert [i.question for i in list_items(s, tag="de")] == ["Wie ändere ich mein Passwort?"]
        assert question_hash("how do i reset my password?") in eval_hashes(s)


def test_import_reports_bad_lines_and_keeps_going(sessions: sessionmaker[Session]) -> None:
    lines = [
        json.dumps({"question": "q1", "answer": "a1", "tags": ["x"]}),
        "not json",
        json.dumps({"question": "q2"}),
        json.dumps(["a", "list"]),
        "",
        json.dumps({"question": "Q1", "answer": "dup"}),
        json.dumps({"question": "q3", "answer": "a3", "tags": "oops"}),
        json.dumps({"question": "q4", "answer": "a4"}),
    ]
    with transaction(sessions) as s:
        report = import_jsonl(s, lines, actor="m")
    assert (report.added, report.duplicates) == (2, 1)
    assert [e.split(":")[0] for e in report.errors] == ["line 2", "line 3", "line 4", "line 7"]
