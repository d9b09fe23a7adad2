"""The model's Markdown as Slack mrkdwn: what a reply looks like in Slack.

:func:`to_mrkdwn` renders the Markdown a chat model writes (CommonMark/GitHub
flavoured, as far as chat answers use it) in Slack's ``mrkdwn`` markup
(docs.slack.dev, "Formatting text for app surfaces"):

=================================  ==================================================
Markdown                           mrkdwn
=================================  ==================================================
``**bold**``, ``__bold__``         ``*bold*``
``*italic*``, ``_italic_``         ``_italic_``
``~~struck~~``                     ``~struck~``
``[text](https://u)``, images      ``<https://u|text>`` (http, https and mailto only;
                                   any other target stays text)
``<https://u>`` (autolink)         ``<https://u>``
``# Heading`` (any level)          ``*Heading*`` on its own line
``- item``, ``* item``, ``+ item`` ``• item`` (nested: ``◦``, indented)
``1. item``, ``> quote``           unchanged (Slack shows both as written)
```` ```lang ```` fenced code      ```` ``` ```` (the language word dropped: mrkdwn
                                   has no highlighting and would show it)
``` `code` ```                     unchanged; nothing inside code is formatted
``---``                            a line of ``─``
=================================  ==================================================

Every ``&``, ``<`` and ``>`` the model wrote is escaped (``&amp;``, ``&lt;``,
``&gt;``), inside code too, so a reply can never ping ``<!channel>`` or forge a
link; only the links built here and a leading quote marker are real markup.

Streaming: the sink renders the whole text so far on every edit, so a half-written
construct must look sane. An unclosed code fence is closed at the end (the code
shows as code while it streams); an emphasis opener with no closer yet (``**bol``,
``__``, ``~~``) is shown without its marker, so the word appears plain and turns
bold once the closer arrives; after a lone backtick the rest of the line is left
unformatted until the span closes. Because the same rules apply to the final
text, an emphasis marker the model never closed is dropped rather than shown.

Why mrkdwn in section blocks and not Slack's ``markdown`` block (documented in the
Block Kit reference, ``{"type": "markdown", "text": ...}``, for AI apps): Slack
translates that block itself and "a single block may result in multiple blocks
after translation", while chatloop finds its reply again by the ``block_id`` it
writes into the reply's section (``blocks.reply_id_in``); its 12,000-character
limit is cumulative per payload, where the sink's parts are cut for sections; and
what a markdown block does with ``<!channel>`` in model text is not documented.
Rendering here keeps escaping, splitting and streaming in our hands and testable
against the Web API fake, which stores blocks but renders nothing.

Pure functions: no I/O, no Slack client, nothing of the core.
"""

from __future__ import annotations

import re

__all__ = ["to_mrkdwn"]

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+#.-]*)\s*$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_RULE = re.compile(r"^\s{0,3}([-*_])(?:\s*\1){2,}\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_QUOTE = re.compile(r"^\s{0,3}>\s?(.*)$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[([^\]\n]*)\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_AUTOLINK = re.compile(r"<((?:https?://|mailto:)[^\s<>|]+)>")
_SAFE_TARGET = re.compile(r"^(?:https?://|mailto:)[^\s<>|]+$", re.IGNORECASE)
_BOLD_ITALIC = re.compile(r"\*\*\*(?=\S)(.+?)(?<=\S)\*\*\*")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_ITALIC_UNDERSCORE = re.compile(r"(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_DANGLING = re.compile(r"(?<![\w*~_])(\*\*\*|\*\*|__|~~)(?=\w|$)")
_PLACEHOLDER = "\x00{}\x00"
_PLACEHOLDER_RE = re.compile("\x00(\\d+)\x00")
_BOLD_MARK = "\x01"
_RULE_LINE = "──────────"


def _escape(text: str) -> str:
    return "".join(_ENTITIES.get(ch, ch) for ch in text)


def _inline(text: str) -> str:
    """One line of running text (no block structure) as escaped mrkdwn."""
    kept: list[str] = []

    def keep(rendered: str) -> str:
        kept.append(rendered)
        return _PLACEHOLDER.format(len(kept) - 1)

    def code(match: re.Match[str]) -> str:
        return keep(f"`{_escape(match.group(2))}`")

    def link(match: re.Match[str]) -> str:
        label, target = match.group(1).strip(), match.group(2)
        if not _SAFE_TARGET.match(target):
            return match.group(0)
        label = _escape(label.replace("|", "¦")) if label and label != target else ""
        return keep(f"<{_escape(target)}|{label}>" if label else f"<{_escape(target)}>")

    def autolink(match: re.Match[str]) -> str:
        return keep(f"<{_escape(match.group(1))}>")

    text = _CODE_SPAN.sub(code, text)
    if "`" in text:  # an unclosed code span (still streaming): the rest is code-like text
        head, _, tail = text.partition("`")
        text = head + keep("`" + _escape(tail))
    text = _LINK.sub(link, text)
    text = _AUTOLINK.sub(autolink, text)
    text = _escape(text)
    text = _BOLD_ITALIC.sub(lambda m: f"{_BOLD_MARK}_{m.group(1)}_{_BOLD_MARK}", text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(2)}{_BOLD_MARK}", text)
    text = _STRIKE.sub(r"~\1~", text)
    text = _ITALIC_STAR.sub(r"_\1_", text)
    text = _ITALIC_UNDERSCORE.sub(r"_\1_", text)
    text = _DANGLING.sub("", text)  # an opener whose closer has not been written (yet)
    text = text.replace(_BOLD_MARK, "*")
    while _PLACEHOLDER_RE.search(text):  # a link label may hold a code span
        text = _PLACEHOLDER_RE.sub(lambda m: kept[int(m.group(1))], text)
    return text


def _heading(text: str) -> str:
    inner = _inline(text).replace("*", "").strip()
    return f"*{inner}*" if inner else ""


def to_mrkdwn(markdown: str) -> str:
    """``markdown`` (complete or still streaming) as escaped Slack mrkdwn."""
    out: list[str] = []
    fence: str | None = None  # the marker of the open code fence
    markdown = markdown.replace("\x00", "").replace(_BOLD_MARK, "")  # our private markers
    for line in markdown.split("\n"):
        opened = _FENCE.match(line)
        if fence is not None:
            closes = opened and not opened.group(3) and opened.group(2)[0] == fence[0]
            if opened and closes and len(opened.group(2)) >= len(fence):
                out.append("```")
                fence = None
                continue
            out.append(_escape(line))
            continue
        if opened:
            fence = opened.group(2)
            out.append("```")
            continue
        if _RULE.match(line):
            out.append(_RULE_LINE)
            continue
        heading = _HEADING.match(line)
        if heading:
            out.append(_heading(heading.group(2)))
            continue
        bullet = _BULLET.match(line)
        if bullet:
            level = len(bullet.group(1).expandtabs(4)) // 2
            mark = "•" if level == 0 else "◦"
            out.append(f"{'    ' * level}{mark} {_inline(bullet.group(2))}")
            continue
        quote = _QUOTE.match(line)
        if quote:
            out.append(f"> {_inline(quote.group(1))}".rstrip())
            continue
        out.append(_inline(line))
    if fence is not None:  # still streaming inside a code block, or never closed
        if out and out[-1] == "```":
            out.pop()  # an opener with nothing in it yet shows nothing
        else:
            out.append("```")
    return "\n".join(out)
