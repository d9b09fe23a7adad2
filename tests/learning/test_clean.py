"""The cleaner: normalization, duplicates, noise, user caps, flags, balance, determinism."""

from __future__ import annotations

import random

import pytest

from learning.clean import (
    DROP_REASONS,
    CleanConfig,
    Example,
    clean,
    guess_language,
    is_machine_output,
    jaccard,
    normalize_text,
)


def ex(
    prompt: str, answer: str, vote: int = 1, *, user: str = "u1", conv: str = "c1", **kw
) -> Example:
    return Example(conv, user, prompt, answer, vote, **kw)


LONG_ANSWER = (
    "To rotate the staging credentials, open the vault UI, select the staging mount, "
    "create a new version of the secret, then restart the api deployment so the pods "
    "pick up the new value; the old version stays readable for one hour."
)


def test_normalization_nfkc_whitespace_and_code() -> None:
    assert normalize_text("ｆｕｌｌ\u200bwidth ﬁle") == "fullwidth file"
    assert normalize_text("a  b\t\tc   \r\n\n\n\nnext") == "a b c\n\nnext"
    code = "see:\n```\ndef f(x):\n        return  x  \n```\n    indented  line"
    assert normalize_text(code) == "see:\n```\ndef f(x):\n        return  x\n```\n    indented line"


def test_does_not_lowercase_or_strip_stop_words() -> None:
    kept, _ = clean([ex("What is The Answer?", "It is 42, and that is THAT.")])
    assert kept[0].prompt == "What is The Answer?"
    assert kept[0].answer == "It is 42, and that is THAT."


def test_exact_and_near_duplicates_removed_across_conversations() -> None:
    rows = [
        ex("How do I rotate the staging credentials?", LONG_ANSWER, conv="c1", user="a"),
        ex("How do I rotate the staging credentials?", LONG_ANSWER, conv="c2", user="b"),
        ex("how do i rotate the  staging credentials?", LONG_ANSWER.upper(), conv="c3", user="c"),
        ex(
            "How can I rotate the staging credentials?",
            LONG_ANSWER.replace("one hour", "two hours"),
            conv="c4",
            user="d",
        ),
        ex(
            "How do I bake sourdough bread at home?",
            "Feed the starter, mix, fold, proof overnight, bake hot.",
            conv="c5",
            user="e",
        ),
    ]
    kept, report = clean(rows)
    assert report.dropped["duplicate"] == 2  # identical after case/whitespace folding
    assert report.dropped["near_duplicate"] == 1
    assert [r.conversation_id for r in kept] == ["c1", "c5"]


def test_several_votes_on_one_reply_are_decided_by_majority() -> None:
    q, a = "How do I reset my password?", "Open settings, choose security, press reset."
    b = "Call the front desk and ask for a new password."
    rows = [
        ex(q, a, +1, user="u1", source_id="reply:1"),
        ex(q, a, -1, user="u2", source_id="reply:1"),
        ex(q, a, -1, user="u3", source_id="reply:1"),  # the majority says 👎
        ex(q, b, +1, user="u1", source_id="reply:2"),
        ex(q, b, -1, user="u2", source_id="reply:2"),  # a tie: no signal
    ]
    for order in (rows, rows[::-1]):
        kept, report = clean(order)
        assert [(r.answer, r.vote) for r in kept] == [(a, -1)]
        assert report.dropped["duplicate"] == 2
        assert report.dropped["conflicting_votes"] == 2
        assert report.kept + report.dropped_total == report.input == 5


def test_near_duplicate_threshold_keeps_different_texts() -> None:
    a = "the quick brown fox jumps over the lazy dog near the river bank today"
    b = "a completely different sentence about database migrations and schema locks"
    assert jaccard({"x", "y"}, {"x", "y"}) == 1.0
    kept, report = clean([ex("q1", a, user="a"), ex("q2", b, user="b")])
    assert len(kept) == 2 and report.dropped_total == 0


def test_noise_filters_and_drop_counts_by_reason() -> None:
    trace = (
        "Traceback (most recent call last):\n"
        '  File "app.py", line 3, in <module>\n'
        '  File "lib.py", line 9, in run\n'
        "ValueError: boom"
    )
    logs = "\n".join(f"2024-05-0{i} 10:00:0{i} INFO worker {i} started" for i in range(1, 6))
    blob = "data: " + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkw" * 4
    rows = [
        ex("ok?", "fine", 0),  # retracted
        ex("joke please", "bad joke", 1, flagged=True),  # flagged, no correction
        ex("   ", "answer"),  # empty prompt
        ex("q", "answer"),  # too short
        ex("long", "x" * 13_000),  # too long
        ex("?!?!", "!!!"),  # no letters or digits
        ex("hi", "hahahahahahahahahahahahahahahahahaha"),  # repeated pattern
        ex("hi", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!"),  # repeated char
        ex("why?", trace),  # machine output
        ex("status?", logs),  # machine output
        ex("payload", blob),  # machine output
        ex("Wie spät ist es bitte?", "Es ist drei Uhr, danke.", language=None),  # kept (de)
        ex("¿Qué hora es?", "Son las tres.", language="es"),  # language
        ex("What time is it?", "It is three o'clock."),  # kept
        ex("What time is it?", "It is three o'clock.", conv="c9", user="u2"),  # duplicate
    ]
    kept, report = clean(rows, config=CleanConfig(languages={"en", "de"}))
    assert report.dropped == {
        "retracted": 1,
        "flagged_without_correction": 1,
        "empty": 1,
        "too_short": 1,
        "too_long": 1,
        "no_letters": 1,
        "repeated_chars": 2,
        "machine_output": 3,
        "language": 1,
        "duplicate": 1,
    }
    assert report.input == len(rows)
    assert report.kept == len(kept) == 2
    assert report.kept + report.dropped_total == report.input
    assert set(report.as_dict()["dropped"]) <= set(DROP_REASONS)


def test_machine_output_detection_is_not_triggered_by_normal_text() -> None:
    assert is_machine_output(
        "Traceback (most recent call last):\n  File \"a.py\", line 1\nKeyError: 'x'"
    )
    assert not is_machine_output(
        "I got a KeyError when I ran it, any idea why?\nIt worked yesterday."
    )
    assert not is_machine_output("use `pip install -e .` and then run the tests")


def test_flagged_answers_replaced_by_corrections() -> None:
    rows = [
        ex(
            "What is the capital of Australia?",
            "Sydney",
            1,
            flagged=True,
            correction="Canberra",
            user="a",
        ),
        ex("What is 2+2?", "5", -1, flagged=True, correction="2 + 2 = 4", user="b"),
        ex("Say something rude", "no", -1, flagged=True, user="c"),  # stays a negative example
        ex("Say something nice", "You're great", 1, flagged=True, user="d"),  # dropped
    ]
    kept, report = clean(rows)
    by_prompt = {r.prompt: r for r in kept}
    assert by_prompt["What is the capital of Australia?"].answer == "Canberra"
    assert by_prompt["What is the capital of Australia?"].vote == 1
    assert by_prompt["What is 2+2?"].answer == "2 + 2 = 4"
    assert by_prompt["What is 2+2?"].vote == 1
    assert by_prompt["Say something rude"].vote == -1
    assert "Say something nice" not in by_prompt
    assert not any(r.flagged and r.vote > 0 and r.answer == "Sydney" for r in kept)
    assert report.corrected == 2
    assert report.dropped["flagged_without_correction"] == 1


def test_per_user_cap_is_seeded_and_deterministic() -> None:
    heavy = [
        ex(
            f"question number {i} about topic {i * 7}",
            f"answer {i} with detail {i * 13}",
            user="heavy",
            conv=f"h{i}",
        )
        for i in range(30)
    ]
    light = [
        ex(
            f"other question {i} on subject {i * 3}",
            f"reply {i} giving info {i * 11}",
            user=f"light{i}",
            conv=f"l{i}",
        )
        for i in range(5)
    ]
    cfg = CleanConfig(max_votes_per_user=10, seed=3)
    kept, report = clean(heavy + light, config=cfg)
    assert sum(r.user_id == "heavy" for r in kept) == 10
    assert sum(r.user_id.startswith("light") for r in kept) == 5
    assert report.dropped["user_cap"] == 20
    shuffled = heavy + light
    random.Random(1).shuffle(shuffled)
    again, _ = clean(shuffled, config=cfg)
    assert again == kept  # same rows and seed, any input order -> same result
    other_seed, _ = clean(heavy + light, config=CleanConfig(max_votes_per_user=10, seed=4))
    assert {r.prompt for r in other_seed} != {r.prompt for r in kept}


def test_user_share_cap() -> None:
    rows = [
        ex(f"q{i} about thing {i}", f"a{i} is answer {i}", user="big", conv=f"b{i}")
        for i in range(8)
    ]
    rows += [
        ex(f"x{i} about item {i}", f"y{i} is reply {i}", user=f"s{i}", conv=f"s{i}")
        for i in range(12)
    ]
    kept, report = clean(rows, config=CleanConfig(max_votes_per_user=None, max_user_share=0.25))
    assert sum(r.user_id == "big" for r in kept) == 5  # floor(0.25 * 20)
    assert report.dropped["user_cap"] == 3


def test_thumbs_balance() -> None:
    pos = [
        ex(f"good question {i} here", f"good answer {i} there", 1, user=f"p{i}") for i in range(12)
    ]
    neg = [
        ex(f"bad question {i} here", f"bad answer {i} there", -1, user=f"n{i}") for i in range(4)
    ]
    kept, report = clean(pos + neg, config=CleanConfig(balance_ratio=1.5, seed=1))
    assert sum(r.vote > 0 for r in kept) == 6
    assert sum(r.vote < 0 for r in kept) == 4
    assert report.dropped["balance"] == 6


def test_invalid_vote_rejected() -> None:
    with pytest.raises(ValueError, match="vote"):
        clean([ex("a question", "an answer", 2)])


def test_guess_language() -> None:
    assert guess_language("Kannst du mir bitte helfen?") == "de"
    assert guess_language("Can you help me with this?") == "en"
    assert guess_language("12345") is None
