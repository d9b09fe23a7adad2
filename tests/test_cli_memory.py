"""``chatloop memory list|add|import|search|retire`` on a SQLite file (hashing embedder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatloop.cli import app
from storage.db import make_engine, session_factory
from storage.memory import MemoryEntries
from storage.models import MemorySource, MemoryStatus


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    import os

    for key in list(os.environ):
        if key.startswith("CHATLOOP_"):
            monkeypatch.delenv(key)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("CHATLOOP_DATABASE_URL", url)
    monkeypatch.setenv("CHATLOOP_MEMORY_EMBEDDING_MODEL", "hashing-128")
    monkeypatch.chdir(tmp_path)
    return url


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def entries(url: str) -> list[tuple[int, str, str, MemoryStatus, int | None, str | None]]:
    engine = make_engine(url)
    with session_factory(engine)() as s:
        rows = [
            (e.id, e.question, e.answer, e.status, e.workspace_id, e.embedding_model)
            for e in reversed(
                MemoryEntries(s).list(statuses=list(MemoryStatus))  # every workspace
            )
        ]
        sources = {e.source for e in MemoryEntries(s).list(statuses=list(MemoryStatus))}
    engine.dispose()
    assert sources <= {MemorySource.CURATED}
    return rows


def test_add_list_search_retire(env: str) -> None:
    assert invoke("db", "upgrade")[0] == 0
    code, out, err = invoke("memory", "add", "Do you ship to Norway?", "Yes, with UPS.")
    assert code == 0, err
    assert out.strip() == "added entry #1"
    code, out, _ = invoke("memory", "add", "Do you ship to Norway?", "Yes, with UPS.")
    assert code == 0 and out.strip() == "already in the memory"
    code, out, _ = invoke(
        "memory", "add", "Do you ship to Norway?", "Only to Oslo.", "--workspace", "slack:T1"
    )
    assert code == 0 and out.strip() == "added entry #2"

    code, out, _ = invoke("memory", "list")
    assert code == 0 and "#1" in out and "Yes, with UPS." in out and "#2 " not in out
    code, out, _ = invoke("memory", "list", "--workspace", "slack:T1", "--json")
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert (row["id"], row["answer"], row["source"]) == (2, "Only to Oslo.", "curated")
    assert row["created_by"].startswith("cli")
    code, out, _ = invoke("memory", "search", "ship to norway?")
    assert code == 0 and out.startswith("#1 ")

    code, out, _ = invoke("memory", "retire", "1", "--reason", "we stopped")
    assert code == 0 and "retired entry #1" in out
    code, out, _ = invoke("memory", "list")
    assert out.strip() == "no entries"
    code, out, _ = invoke("memory", "list", "--retired")
    assert "#1" in out and "retired" in out
    code, _, err = invoke("memory", "retire", "1")
    assert code == 1 and "already retired" in err
    code, _, err = invoke("memory", "retire", "99")
    assert code == 1 and "no answer-memory entry #99" in err
    code, _, err = invoke("memory", "list", "--workspace", "nocolon")
    assert code == 2 and "<platform>:<workspace id>" in err
    assert [r[0] for r in entries(env)] == [1, 2]
    assert all(r[5] == "hashing-128" for r in entries(env))


def test_import_jsonl_is_idempotent_and_supersedes(env: str, tmp_path: Path) -> None:
    assert invoke("db", "upgrade")[0] == 0
    pairs = tmp_path / "faq.jsonl"
    pairs.write_text(
        "\n".join(
            json.dumps(p)
            for p in [
                {"question": "What are your hours?", "answer": "9 to 5.", "paraphrases": ["x"]},
                {"question": "Do you ship abroad?", "answer": "Yes, to the EU."},
            ]
        )
        + "\n\n",
        encoding="utf-8",
    )
    code, out, err = invoke("memory", "import", str(pairs), "--workspace", "discord:42")
    assert code == 0, err
    assert json.loads(out.splitlines()[-1]) == {"read": 2, "added": 2, "skipped": 0}
    code, out, _ = invoke("memory", "import", str(pairs), "--workspace", "discord:42")
    assert json.loads(out.splitlines()[-1]) == {"read": 2, "added": 0, "skipped": 2}

    pairs.write_text(json.dumps({"question": "what are your  HOURS?", "answer": "8 to 4."}) + "\n")
    code, out, _ = invoke("memory", "import", str(pairs), "--workspace", "discord:42")
    assert json.loads(out.splitlines()[-1])["added"] == 1
    rows = entries(env)
    assert [(r[2], r[3]) for r in rows] == [
        ("9 to 5.", MemoryStatus.RETIRED),  # superseded by the new answer to the same question
        ("Yes, to the EU.", MemoryStatus.ACTIVE),
        ("8 to 4.", MemoryStatus.ACTIVE),
    ]
    assert len({r[4] for r in rows}) == 1 and rows[0][4] is not None

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "only a question"}\n', encoding="utf-8")
    code, _, err = invoke("memory", "import", str(bad))
    assert code == 1 and "bad.jsonl:1" in err
