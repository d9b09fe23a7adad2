"""What chatloop shows in Slack: escaped text, split replies, Block Kit messages and modals.

- :func:`escape` makes model and core text inert mrkdwn (``&``, ``<``, ``>``), so a
  reply can never ping ``<!channel>`` or forge a link.
- :func:`split_text` cuts a long text into parts that fit one section block
  (3,000 characters; a message's text is limited to 4,000), at a paragraph break,
  else a line break, else a sentence end, else a space — never inside a word
  unless a single "word" is longer than a whole part. An open code fence is closed
  at the end of a part and reopened in the next.
- Builders for a reply part (the last part carries the 👍/👎 buttons and a context
  line), the thumbs-down reason modal, the flag-and-correct modal and the
  maintainers' approval request.

Action ids, callback ids and block ids are the contract with
:mod:`bot.platforms.slack.adapter` and with the app manifest; they are constants here.
Pure functions: no I/O, no core, no Slack client.
"""

from __future__ import annotations

import json
import re
from typing import Any

SECTION_CHARS = 3000
"""Slack's limit for a section block's text."""
PART_CHARS = 2900
"""Characters per reply part: a section block with room for the streaming cursor."""
STREAMING_CURSOR = " ▌"

VOTE_UP = "chatloop_vote_up"
VOTE_DOWN = "chatloop_vote_down"
APPROVE = "chatloop_approve"
REJECT = "chatloop_reject"
FLAG_SHORTCUT = "chatloop_flag"
FLAG_MODAL = "chatloop_flag_modal"
REASON_MODAL = "chatloop_vote_reason"
REPLY_BLOCK = "chatloop_reply"
FEEDBACK_BLOCK = "chatloop_feedback"
APPROVAL_BLOCK = "chatloop_approval"

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_SENTENCE_END = re.compile(r"[.!?…][)\"'”’]*\s")


def escape(text: str) -> str:
    """Text as inert Slack mrkdwn: only ``&``, ``<`` and ``>`` need escaping."""
    return "".join(_ENTITIES.get(ch, ch) for ch in text)


def _cut(text: str, limit: int) -> int:
    """Where to end the first part of ``text`` (len(text) > limit)."""
    window = text[: limit + 1]  # a boundary right after the limit still counts
    floor = limit // 2  # prefer a boundary in the second half: no tiny parts
    para = window.rfind("\n\n", 0, limit)
    if para >= floor:
        return para
    line = window.rfind("\n", 0, limit)
    if line >= floor:
        return line
    ends = [m.end() - 1 for m in _SENTENCE_END.finditer(window) if m.end() - 1 <= limit]
    if ends and ends[-1] >= floor:
        return ends[-1]
    space = max(window.rfind(" ", 0, limit + 1), window.rfind("\t", 0, limit + 1))
    if space > 0:
        return space
    # one "word" longer than a part: cut it, but never inside an &entity;
    amp = text.rfind("&", max(0, limit - 5), limit)
    if amp > 0 and ";" not in text[amp:limit]:
        return amp
    return limit


def split_text(text: str, limit: int = PART_CHARS) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters at natural boundaries."""
    if limit < 16:
        raise ValueError("limit must be at least 16 characters")
    text = text.strip()
    parts: list[str] = []
    fence_budget = limit - 4  # room to close a code fence
    while len(text) > limit:
        cut = _cut(text, fence_budget)
        part, rest = text[:cut].rstrip(), text[cut:].strip()
        if not part:  # only whitespace before the cut: take the hard cut
            part, rest = text[:fence_budget], text[fence_budget:]
        if part.count("```") % 2 == 1:
            part += "\n```"
            rest = "```\n" + rest
        parts.append(part)
        text = rest
    if text:
        parts.append(text)
    return parts


def plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _section(text: str, block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if block_id:
        block["block_id"] = block_id
    return block


def streaming_blocks(part: str) -> list[dict[str, Any]]:
    """A reply part while it is still being written."""
    return [_section(part)]


def reply_blocks(
    part: str, *, reply_id: int, index: int, count: int, note: str = ""
) -> list[dict[str, Any]]:
    """A finished reply part; the last one carries the feedback buttons and ``note``
    (already escaped) in a context line of its own."""
    blocks = [_section(part, f"{REPLY_BLOCK}:{reply_id}:{index}")]
    if index == count - 1:
        if note:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
        where = f" · part {count}/{count}" if count > 1 else ""
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"🤖 chatloop · reply #{reply_id}{where} · Was this helpful? "
                        "Buttons or 👍/👎 reactions both count.",
                    }
                ],
            }
        )
        blocks.append(
            {
                "type": "actions",
                "block_id": f"{FEEDBACK_BLOCK}:{reply_id}",
                "elements": [
                    {
                        "type": "button",
                        "action_id": VOTE_UP,
                        "text": plain("👍 Helpful"),
                        "value": str(reply_id),
                    },
                    {
                        "type": "button",
                        "action_id": VOTE_DOWN,
                        "text": plain("👎 Not helpful"),
                        "value": str(reply_id),
                    },
                ],
            }
        )
    return blocks


def reply_id_in(blocks: list[dict[str, Any]] | None) -> int | None:
    """The reply id chatloop wrote into a finished reply's block ids (or None)."""
    for block in blocks or []:
        block_id = block.get("block_id") if isinstance(block, dict) else None
        if isinstance(block_id, str) and block_id.startswith(f"{REPLY_BLOCK}:"):
            fields = block_id.split(":")
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1])
    return None


def _text_input(
    block_id: str, label: str, *, placeholder: str, optional: bool = True, max_length: int = 3000
) -> dict[str, Any]:
    return {
        "type": "input",
        "block_id": block_id,
        "optional": optional,
        "label": plain(label),
        "element": {
            "type": "plain_text_input",
            "action_id": block_id,
            "multiline": True,
            "max_length": max_length,
            "placeholder": plain(placeholder),
        },
    }


def reason_modal(metadata: dict[str, Any]) -> dict[str, Any]:
    """The "what was wrong?" modal a 👎 button opens; the 👎 is already recorded."""
    return {
        "type": "modal",
        "callback_id": REASON_MODAL,
        "private_metadata": json.dumps(metadata, separators=(",", ":")),
        "title": plain("Not helpful"),
        "submit": plain("Send"),
        "close": plain("Skip"),
        "blocks": [
            _section("Thanks, your 👎 is recorded. What was wrong or missing? (optional)"),
            _text_input(
                "reason", "Reason", placeholder="e.g. the steps are outdated", max_length=2000
            ),
        ],
    }


def flag_modal(metadata: dict[str, Any], *, excerpt: str) -> dict[str, Any]:
    """Staff's "flag and correct" modal for one bot reply."""
    short = excerpt if len(excerpt) <= 600 else excerpt[:600].rsplit(" ", 1)[0] + " …"
    return {
        "type": "modal",
        "callback_id": FLAG_MODAL,
        "private_metadata": json.dumps(metadata, separators=(",", ":")),
        "title": plain("Flag and correct"),
        "submit": plain("Flag"),
        "close": plain("Cancel"),
        "blocks": [
            {"type": "context", "elements": [{"type": "mrkdwn", "text": short or " "}]},
            _text_input(
                "correction", "The right answer", placeholder="What the bot should have said"
            ),
            _text_input("reason", "Why it is wrong", placeholder="optional", max_length=2000),
        ],
    }


def approval_blocks(version: str, summary: str) -> list[dict[str, Any]]:
    """The approval request posted to the maintainers' channel."""
    body = escape(summary.strip()) or "(no evaluation summary)"
    if len(body) > PART_CHARS:
        body = split_text(body)[0] + "\n…"
    return [
        {"type": "header", "text": plain(f"Adapter {version} awaits approval"[:150])},
        _section(body),
        {
            "type": "actions",
            "block_id": APPROVAL_BLOCK,
            "elements": [
                {
                    "type": "button",
                    "action_id": APPROVE,
                    "style": "primary",
                    "text": plain("Approve"),
                    "value": version,
                    "confirm": {
                        "title": plain("Approve this adapter?"),
                        "text": plain(f"{version} becomes active on every replica."),
                        "confirm": plain("Approve"),
                        "deny": plain("Cancel"),
                    },
                },
                {
                    "type": "button",
                    "action_id": REJECT,
                    "style": "danger",
                    "text": plain("Reject"),
                    "value": version,
                },
            ],
        },
    ]


def decided_blocks(blocks: list[dict[str, Any]] | None, outcome: str) -> list[dict[str, Any]]:
    """An approval request after a maintainer decided: its buttons replaced by ``outcome``."""
    kept = [b for b in blocks or [] if isinstance(b, dict) and b.get("type") != "actions"]
    return [*kept, {"type": "context", "elements": [{"type": "mrkdwn", "text": outcome}]}]


def input_value(state: dict[str, Any] | None, block_id: str) -> str:
    """A plain text input's value from a submitted view's ``state.values`` ("" if empty)."""
    values = (state or {}).get("values") or {}
    block = values.get(block_id) or {}
    element = block.get(block_id)
    if element is None and block:
        element = next(iter(block.values()))
    value = element.get("value") if isinstance(element, dict) else None
    return value.strip() if isinstance(value, str) else ""
