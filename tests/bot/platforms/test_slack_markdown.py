"""The model's Markdown as Slack mrkdwn (bot.platforms.slack.markdown)."""

from __future__ import annotations

import pytest

from bot.platforms.slack.blocks import split_text
from bot.platforms.slack.markdown import to_mrkdwn


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("plain words", "plain words"),
        ("**bold** and __also__", "*bold* and *also*"),
        ("*italic* and _this_", "_italic_ and _this_"),
        ("***both***", "*_both_*"),
        ("~~gone~~", "~gone~"),
        ("a * b * c and 2*3*4", "a * b * c and 2*3*4"),
        ("snake_case_name stays", "snake_case_name stays"),
        ("see [the docs](https://x.io/a?b=1&c=2)", "see <https://x.io/a?b=1&amp;c=2|the docs>"),
        ("mail [us](mailto:a@b.io)", "mail <mailto:a@b.io|us>"),
        ("![logo](https://x.io/l.png)", "<https://x.io/l.png|logo>"),
        ("[https://x.io](https://x.io)", "<https://x.io>"),
        ("<https://x.io/p>", "<https://x.io/p>"),
        ("[bad](javascript:alert(1))", "[bad](javascript:alert(1))"),
        ("[a|b](https://x.io)", "<https://x.io|a¦b>"),
        ("# Title", "*Title*"),
        ("### **Already bold** ##", "*Already bold*"),
        ("- one\n- two\n  - nested\n* star\n+ plus", "• one\n• two\n    ◦ nested\n• star\n• plus"),
        ("1. first\n2. second", "1. first\n2. second"),
        ("> quoted **text**", "> quoted *text*"),
        ("---", "──────────"),
        ("use `**not bold**` here", "use `**not bold**` here"),
        ("`a < b && c`", "`a &lt; b &amp;&amp; c`"),
        ("```python\nif a < b and c:\n    **x**\n```", "```\nif a &lt; b and c:\n    **x**\n```"),
        ("~~~\ncode\n~~~", "```\ncode\n```"),
        ("<!channel> & <@U123> > 3", "&lt;!channel&gt; &amp; &lt;@U123&gt; &gt; 3"),
        ("**<b>**", "*&lt;b&gt;*"),
        ("line one\n\nline two", "line one\n\nline two"),
    ],
)
def test_each_construct(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


def test_nothing_pings_or_links_unless_built_here() -> None:
    rendered = to_mrkdwn("hey <!here> [x](https://ok.io) <script> &lt;")
    assert rendered == "hey &lt;!here&gt; <https://ok.io|x> &lt;script&gt; &amp;lt;"
    assert rendered.count("<") == 1


def test_streaming_prefixes_never_break_the_markup() -> None:
    text = (
        "# Setup\nRun **the installer** first, then see [docs](https://x.io).\n"
        "```bash\nmake install && make test\n```\n- done `now`"
    )
    for end in range(1, len(text) + 1):
        shown = to_mrkdwn(text[:end])
        assert shown.count("```") % 2 == 0, text[:end]  # an open fence is closed
        assert "**" not in shown.replace("```", ""), text[:end]  # no raw Markdown bold
        assert "\x00" not in shown and "\x01" not in shown
        assert "&&" not in shown  # code is escaped while it streams too
    assert to_mrkdwn(text) == (
        "*Setup*\nRun *the installer* first, then see <https://x.io|docs>.\n"
        "```\nmake install &amp;&amp; make test\n```\n• done `now`"
    )


@pytest.mark.parametrize(
    ("partial", "shown"),
    [
        ("Run **the inst", "Run the inst"),
        ("Run **the installer** a", "Run *the installer* a"),
        ("~~old", "old"),
        ("see `cod", "see `cod"),
        ("```py", ""),
        ("```py\nx = 1", "```\nx = 1\n```"),
        ("[docs](https://x", "[docs](https://x"),
        ("#", "#"),
    ],
)
def test_half_written_constructs(partial: str, shown: str) -> None:
    assert to_mrkdwn(partial) == shown


def test_rendered_text_splits_into_balanced_parts() -> None:
    code = "```\n" + "\n".join(f"x{i} = {i} < {i + 1}" for i in range(300)) + "\n```"
    parts = split_text(to_mrkdwn("intro\n\n" + code), 500)
    assert len(parts) > 2 and all(p.count("```") % 2 == 0 for p in parts)
    assert all("<" not in p for p in parts)


def test_private_markers_in_model_text_are_dropped() -> None:
    assert to_mrkdwn("a\x000\x00b\x01c") == "a0bc"
