"""Render OpenAI chat messages into one prompt with a prefix/suffix instruct template.

Rules (the same for every template; the data decides the strings):

- ``system`` and ``developer`` messages may come several times and anywhere; the template's
  ``system`` mode places them (see :data:`~.model.SystemMode`).
- A message ``name`` is written as ``name: text`` (unless the template says ``names: none``).
- A trailing assistant message with text is continued: its prefix and text, no suffix, no new
  assistant turn (prefill). Otherwise the prompt ends with the start of the assistant's turn.
- Tool results use the template's tool role when it has one, else they are user turns headed
  ``[Tool result: <function name>]``. An assistant message's ``tool_calls`` are written after
  its text as ``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`` (the Hermes/Qwen
  form), so the model sees what it called.
- A conversation may start with the assistant (SillyTavern's greeting); it is rendered as it
  is, unless the template sets ``user_alignment``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

from ..request import text_of
from .model import Rendered, Template

Role = Literal["system", "user", "assistant", "tool"]

# OpenAI roles → the four a template knows.
ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}


@dataclass(frozen=True, slots=True)
class Turn:
    """One message reduced to what a text template renders."""

    role: Role
    text: str
    name: str | None = None
    has_tool_calls: bool = False


def tool_calls_text(calls: Sequence[Mapping[str, Any]]) -> str:
    """An assistant's tool calls as text, one ``<tool_call>`` block each."""
    blocks = []
    for call in calls:
        function = call.get("function") or {}
        arguments: Any = function.get("arguments") or "{}"
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                pass  # keep the client's string as it is
        body = json.dumps({"name": function.get("name"), "arguments": arguments}, ensure_ascii=False)
        blocks.append(f"<tool_call>\n{body}\n</tool_call>")
    return "\n".join(blocks)


def to_turns(messages: Iterable[Mapping[str, Any]]) -> list[Turn]:
    """OpenAI messages as turns: roles mapped, content flattened to text, tool calls written
    out, tool results labelled with the function they answer."""
    call_names: dict[str, str] = {}
    turns: list[Turn] = []
    for message in messages:
        role = ROLES.get(str(message.get("role")), "user")
        text = text_of(message.get("content"))
        raw_name = message.get("name")
        name = str(raw_name) if raw_name else None
        calls = message.get("tool_calls") or ()
        if role == "assistant" and calls:
            for call in calls:
                function = call.get("function") or {}
                if call.get("id") and function.get("name"):
                    call_names[str(call["id"])] = str(function["name"])
            text = (text + "\n" if text else "") + tool_calls_text(calls)
        if role == "tool":
            # The function name labels the result; ``name`` is the legacy ``function`` role's.
            name = name or call_names.get(str(message.get("tool_call_id") or ""))
        turns.append(Turn(role, text, name, bool(calls)))
    return turns


_MACROS = re.compile(r"\{\{(name|user|char)\}\}", re.IGNORECASE)
_DEFAULT_NAMES: dict[Role, str] = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def expand(text: str, template: Template, turn_name: str | None, role: Role) -> str:
    """Expand SillyTavern macros in a prefix or suffix (when the template asks for it)."""
    if not template.macro or "{{" not in text:
        return text

    def value(match: re.Match[str]) -> str:
        macro = match.group(1).lower()
        if macro == "name":
            return turn_name or _DEFAULT_NAMES[role]
        return "User" if macro == "user" else "Assistant"

    return _MACROS.sub(value, text)


def _clean(text: str, template: Template) -> str:
    return text.strip() if template.trim else text


def _named(turn: Turn, template: Template) -> str:
    text = _clean(turn.text, template)
    if turn.name and template.names != "none" and turn.role in ("user", "assistant"):
        return f"{turn.name}: {text}"
    return text


def _system_block(texts: Sequence[str], template: Template, prefix: str, suffix: str) -> str:
    joined = template.system_join.join(_clean(t, template) for t in texts)
    return prefix + joined + suffix


def _placed_systems(turns: list[Turn], template: Template) -> tuple[list[Turn], dict[int, list[str]], str]:
    """Apply the template's system mode. Returns the turns left to render, system texts to put
    in front of the user turn at an index, and a block that opens the prompt."""
    mode = template.system
    if mode in ("native", "as_user"):
        return turns, {}, ""
    systems = [t.text for t in turns if t.role == "system"]
    rest = [t for t in turns if t.role != "system"]
    if not systems:
        return rest, {}, ""
    if mode == "leading":
        prefix = template.first_system_prefix if template.first_system_prefix is not None else template.system_prefix
        suffix = template.first_system_suffix if template.first_system_suffix is not None else template.system_suffix
        return rest, {}, _system_block(systems, template, prefix, suffix)
    merged: dict[int, list[str]] = {}
    if mode == "last_user":
        users = [i for i, t in enumerate(rest) if t.role == "user"]
        if users:
            return rest, {users[-1]: systems}, ""
        # No user message to carry them: they become one user turn where the first one stood.
        first = next(i for i, t in enumerate(turns) if t.role == "system")
        kept = [t for t in turns[:first] if t.role != "system"]
        return kept + [Turn("user", "")] + rest[len(kept):], {len(kept): systems}, ""
    # next_user: each run of system messages joins the user message that follows it; a run
    # followed by anything else (SillyTavern's greeting, a tool result) or by nothing becomes a
    # user turn of its own where it stood, so the order of the conversation is kept.
    out: list[Turn] = []
    pending: list[str] = []
    for turn in turns:
        if turn.role == "system":
            pending.append(turn.text)
            continue
        if pending:
            merged[len(out)] = pending
            pending = []
            if turn.role != "user":
                out.append(Turn("user", ""))
        out.append(turn)
    if pending:
        merged[len(out)] = pending
        out.append(Turn("user", ""))
    return out, merged, ""


def render_instruct(messages: Sequence[Mapping[str, Any]], template: Template) -> Rendered:
    """The prompt for ``messages`` in a prefix/suffix ``template`` (see the module rules)."""
    turns = to_turns(messages)
    prefill: Turn | None = None
    if turns and turns[-1].role == "assistant" and not turns[-1].has_tool_calls:
        last = turns.pop()
        if last.text.strip():
            prefill = last
    if template.default_system and not any(t.role == "system" for t in turns):
        turns.insert(0, Turn("system", template.default_system))
    if template.user_alignment:
        at = next((i for i, t in enumerate(turns) if t.role != "system"), None)
        if at is not None and turns[at].role == "assistant":
            turns.insert(at, Turn("user", template.user_alignment))
        elif at is None and prefill is not None:
            turns.append(Turn("user", template.user_alignment))

    opening_system = bool(turns) and turns[0].role == "system"
    turns, merged, opening = _placed_systems(turns, template)
    # Indices of the turns rendered as user turns (for first/last user prefixes).
    users = [i for i, t in enumerate(turns) if t.role == "user" or (t.role == "tool" and template.tool_prefix is None)]
    parts: list[str] = [template.bos if template.add_bos else "", opening]
    seen_assistant = False

    def assistant_prefix(turn: Turn) -> str:
        nonlocal seen_assistant
        prefix = template.assistant_prefix
        if not seen_assistant and template.first_assistant_prefix is not None:
            prefix = template.first_assistant_prefix
        seen_assistant = True
        return expand(prefix, template, turn.name, "assistant")

    for index, turn in enumerate(turns):
        if turn.role == "system":
            as_user = template.system == "as_user"
            prefix = template.user_prefix if as_user else template.system_prefix
            suffix = template.user_suffix if as_user else template.system_suffix
            if index == 0 and opening_system:
                prefix = template.first_system_prefix if template.first_system_prefix is not None else prefix
                suffix = template.first_system_suffix if template.first_system_suffix is not None else suffix
            parts += [expand(prefix, template, None, "system"), _clean(turn.text, template), expand(suffix, template, None, "system")]
        elif turn.role == "assistant":
            parts += [assistant_prefix(turn), _named(turn, template), expand(template.assistant_suffix, template, turn.name, "assistant")]
        elif turn.role == "tool" and template.tool_prefix is not None:
            parts += [template.tool_prefix, _clean(turn.text, template), template.tool_suffix or ""]
        else:
            prefix = template.user_prefix
            if index == users[0] and template.first_user_prefix is not None:
                prefix = template.first_user_prefix
            elif index == users[-1] and template.last_user_prefix is not None:
                prefix = template.last_user_prefix
            if turn.role == "tool":
                text = f"[Tool result: {turn.name or 'tool'}]\n{_clean(turn.text, template)}"
            else:
                text = _named(turn, template)
            if index in merged:
                block = _system_block(merged[index], template, template.system_prefix, template.system_suffix)
                text = block + text if text else block.rstrip()
            parts += [expand(prefix, template, turn.name, "user"), text, expand(template.user_suffix, template, turn.name, "user")]

    if prefill is not None:
        text = prefill.text.lstrip() if template.trim else prefill.text
        named = f"{prefill.name}: {text}" if prefill.name and template.names != "none" else text
        parts += [assistant_prefix(prefill), named]
    else:
        start = template.generation_prefix if template.generation_prefix is not None else template.assistant_prefix
        parts.append(expand(start, template, None, "assistant"))
    return Rendered("".join(parts), template.stop)
