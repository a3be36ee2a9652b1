"""OpenAI chat messages → Claude Messages API ``system`` and ``messages`` (used by ``claude.py``).

What Claude demands, and how each rule is met here (facts: shared/protocols/cloud.md §2.3):

- No system role in ``messages``: every ``system``/``developer`` message, wherever it stands,
  becomes one block of the top-level ``system`` list, in order.
- Turns alternate: consecutive same-role messages are merged by concatenating their blocks.
- The first turn is a user turn: a configurable placeholder user turn is put in front of an
  assistant-first conversation (and is the only turn when there are only system messages).
- Text blocks are never empty nor whitespace only (Claude answers 400 "text content blocks must
  contain non-whitespace text"), and the final assistant turn must not end in whitespace.
- Assistant ``tool_calls`` become ``tool_use`` blocks; ``tool`` messages become ``tool_result``
  blocks of a user turn (consecutive results merge into one turn; results come first in it).
- ``cache_control`` on a content part is passed through onto the block it becomes.

The trailing assistant turn is the *prefill*: Claude continues it. Models that reject prefill
(and any request with thinking on) get it rewritten into an instruction at the end of the last
user turn, or a 400, as the model's ``prefill_fallback`` says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence, TypedDict

import orjson

from .errors import InvalidRequest, Unsupported
from .request import Message

Block = dict[str, Any]
PrefillMode = Literal["native", "instruct"]

# Claude accepts these image types only; browsers and some clients say image/jpg.
IMAGE_TYPES = {"image/jpeg": "image/jpeg", "image/jpg": "image/jpeg", "image/png": "image/png",
               "image/gif": "image/gif", "image/webp": "image/webp"}
DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(?P<data>.*)$", re.DOTALL)
MAX_BREAKPOINTS = 4  # Claude honours at most four cache_control markers per request


class Turn(TypedDict):
    """One Claude message: a role and its content blocks (always a list here)."""

    role: Literal["user", "assistant"]
    content: list[Block]


@dataclass(frozen=True, slots=True)
class PrefillPolicy:
    """What the model's config says about assistant prefill."""

    default: str | None
    supported: bool
    fallback: Literal["instruct", "reject"]
    instruction: str


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """Opt-in prompt caching: mark the system prompt and/or the last ``last_turns`` turns."""

    system: bool = False
    last_turns: int = 0
    ttl: str | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    """The native ``system`` and ``messages`` plus what the answer parser needs to know:
    the prefill text and whether it was sent as a prefill or as an instruction."""

    system: list[Block]
    messages: list[Turn]
    prefill: str | None = None
    prefill_mode: PrefillMode | None = None
    warnings: tuple[str, ...] = ()


# --- content parts -------------------------------------------------------------------------
def image_block(image_url: Any, where: str) -> Block:
    """An ``image_url`` part's value as a Claude image block (data URI → base64, http(s) → url)."""
    url = image_url.get("url") if isinstance(image_url, Mapping) else image_url
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{where}: image_url.url must be a non-empty string", param="messages")
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    match = DATA_URI.match(url)
    if match is None:
        raise InvalidRequest(
            f"{where}: image_url.url must be an http(s) URL or a base64 data URI", param="messages"
        )
    media_type = IMAGE_TYPES.get(match["mime"].lower())
    if media_type is None:
        raise InvalidRequest(
            f"{where}: Claude accepts JPEG, PNG, GIF and WebP images, not {match['mime']}", param="messages"
        )
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": match["data"]}}


def document_block(file: Any, where: str) -> Block:
    """A ``file`` part with inline PDF data as a Claude document block."""
    data = file.get("file_data") if isinstance(file, Mapping) else None
    match = DATA_URI.match(data) if isinstance(data, str) else None
    if match is None or match["mime"].lower() != "application/pdf":
        raise Unsupported(
            f"{where}: only file parts with inline PDF data (file_data data URI) reach Claude",
            param="messages",
        )
    return {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": match["data"]}}


def part_block(part: Mapping[str, Any], where: str, *, assistant: bool) -> Block | None:
    """One OpenAI content part as a Claude block (None for an empty or whitespace-only text part)."""
    kind = part.get("type")
    block: Block | None
    match kind:
        case "text" | "input_text":
            text = part.get("text")
            block = {"type": "text", "text": text} if isinstance(text, str) and text.strip() else None
        case "refusal" if assistant:
            text = part.get("refusal")
            block = {"type": "text", "text": text} if isinstance(text, str) and text.strip() else None
        case "image_url" if not assistant:
            block = image_block(part.get("image_url"), where)
        case "file" if not assistant:
            block = document_block(part.get("file"), where)
        case "input_audio":
            raise Unsupported(f"{where}: Claude does not take audio input", param="messages")
        case _:
            raise InvalidRequest(f"{where}: content part type {kind!r} is not allowed here", param="messages")
    if block is not None and isinstance(part.get("cache_control"), Mapping):
        block["cache_control"] = dict(part["cache_control"])
    return block


def content_blocks(content: Any, where: str, *, assistant: bool = False) -> list[Block]:
    """A message ``content`` (string, parts or null) as Claude blocks, blank text left out."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content.strip() else []
    blocks: list[Block] = []
    for number, part in enumerate(content):
        if not isinstance(part, Mapping):
            raise InvalidRequest(f"{where}[{number}] must be an object", param="messages")
        block = part_block(part, f"{where}[{number}]", assistant=assistant)
        if block is not None:
            blocks.append(block)
    return blocks


def tool_use_blocks(tool_calls: Iterable[Any], where: str) -> list[Block]:
    """Assistant ``tool_calls`` as ``tool_use`` blocks (arguments parsed: Claude wants an object)."""
    blocks: list[Block] = []
    for number, call in enumerate(tool_calls):
        function = (call.get("function") or {}) if isinstance(call, Mapping) else {}
        if not isinstance(call, Mapping) or call.get("type", "function") != "function" or not function.get("name"):
            raise InvalidRequest(f"{where}[{number}] must be a function call with a name", param="messages")
        arguments = function.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError:
            raise InvalidRequest(f"{where}[{number}].function.arguments is not valid JSON", param="messages") from None
        if not isinstance(parsed, dict):
            raise InvalidRequest(f"{where}[{number}].function.arguments must be a JSON object", param="messages")
        blocks.append({"type": "tool_use", "id": str(call.get("id") or ""), "name": function["name"], "input": parsed})
    return blocks


def tool_result_block(message: Message, where: str) -> Block:
    """A ``tool`` message as a ``tool_result`` block (an empty result carries no content)."""
    call_id = message.get("tool_call_id")
    if not call_id:
        raise InvalidRequest(f"{where}.tool_call_id is required", param="messages")
    block: Block = {"type": "tool_result", "tool_use_id": call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        parts = content_blocks(content, f"{where}.content")
        if parts:
            block["content"] = parts
    return block


def with_name(blocks: list[Block], name: Any) -> list[Block]:
    """Claude has no speaker names: prefix ``"<name>: "`` to the first text block, as
    SillyTavern and other gateways do, so the model still knows who spoke."""
    if not isinstance(name, str) or not name:
        return blocks
    for position, block in enumerate(blocks):
        if block["type"] == "text":
            return [*blocks[:position], {**block, "text": f"{name}: {block['text']}"}, *blocks[position + 1 :]]
    return blocks


# --- messages ------------------------------------------------------------------------------
# What an empty final user turn becomes (zero width space).
EMPTY_TURN = "\u200b"

def split_messages(messages: Sequence[Message]) -> tuple[list[Block], list[Turn]]:
    """System blocks and the (not yet merged) user/assistant turns of an OpenAI chat."""
    system: list[Block] = []
    turns: list[Turn] = []
    for number, message in enumerate(messages):
        where = f"messages[{number}]"
        role = message.get("role")
        match role:
            case "system" | "developer":
                system.extend(content_blocks(message.get("content"), f"{where}.content"))
            case "user":
                blocks = with_name(content_blocks(message.get("content"), f"{where}.content"), message.get("name"))
                turns.append({"role": "user", "content": blocks})
            case "assistant":
                blocks = content_blocks(message.get("content"), f"{where}.content", assistant=True)
                blocks = with_name(blocks, message.get("name"))
                blocks += tool_use_blocks(message.get("tool_calls") or (), f"{where}.tool_calls")
                turns.append({"role": "assistant", "content": blocks})
            case "tool":
                turns.append({"role": "user", "content": [tool_result_block(message, where)]})
            case "function":
                raise Unsupported(
                    f"{where}: role 'function' (deprecated function calling) is not supported; use tools",
                    param="messages",
                )
            case _:
                raise InvalidRequest(f"{where}: unknown role {role!r}", param="messages")
    return system, turns


def merge_turns(turns: Iterable[Turn]) -> list[Turn]:
    """Drop empty turns and merge consecutive same-role ones; in a user turn the tool results
    go first (Claude wants them right after the assistant's tool_use)."""
    merged: list[Turn] = []
    for turn in turns:
        if not turn["content"]:
            continue
        if merged and merged[-1]["role"] == turn["role"]:
            merged[-1] = {"role": turn["role"], "content": merged[-1]["content"] + turn["content"]}
        else:
            merged.append({"role": turn["role"], "content": list(turn["content"])})
    for position, turn in enumerate(merged):
        if turn["role"] == "user":
            results = [b for b in turn["content"] if b["type"] == "tool_result"]
            if results and len(results) < len(turn["content"]):
                rest = [b for b in turn["content"] if b["type"] != "tool_result"]
                merged[position] = {"role": "user", "content": results + rest}
    return merged


def strip_final_assistant(turns: list[Turn]) -> list[Turn]:
    """Claude rejects a final assistant turn ending in whitespace: rstrip its last text block
    (dropping blocks, and the turn, that end up empty)."""
    if not turns or turns[-1]["role"] != "assistant":
        return turns
    content = list(turns[-1]["content"])
    while content and content[-1]["type"] == "text":
        text = content[-1]["text"].rstrip()
        if text:
            content[-1] = {**content[-1], "text": text}
            break
        content.pop()
    if not content:
        return turns[:-1]
    return [*turns[:-1], {"role": "assistant", "content": content}]


def prefill_text(turn: Turn) -> str | None:
    """The text a trailing assistant turn asks Claude to continue (None if it holds more than
    text, e.g. an unanswered tool_use: that is not a prefill)."""
    if any(block["type"] != "text" for block in turn["content"]):
        return None
    return "".join(block["text"] for block in turn["content"])


def count_markers(blocks: Iterable[Block]) -> int:
    """How many ``cache_control`` markers blocks carry (tool_result content included)."""
    total = 0
    for block in blocks:
        total += "cache_control" in block
        if block.get("type") == "tool_result" and isinstance(block.get("content"), list):
            total += count_markers(block["content"])
    return total


def mark_cacheable(
    system: list[Block], turns: list[Turn], policy: CachePolicy, reserved: int, skip_last: bool
) -> tuple[list[Block], list[Turn], list[str]]:
    """Apply the model's caching policy: a ``cache_control`` marker on the last system block and
    on the last block of each of the last ``policy.last_turns`` turns (a trailing prefill turn
    is skipped: it changes every request). Markers the client set count against Claude's limit
    of four; policy markers that would exceed it are left out with a warning."""
    warnings: list[str] = []
    budget = MAX_BREAKPOINTS - reserved - count_markers(system) - sum(count_markers(t["content"]) for t in turns)
    marker: Block = {"type": "ephemeral", **({"ttl": policy.ttl} if policy.ttl else {})}
    wanted: list[tuple[str, int]] = []
    if policy.system and system:
        wanted.append(("system", len(system) - 1))
    last = len(turns) - (1 if skip_last else 0)
    wanted += [("turn", i) for i in range(last - 1, max(last - policy.last_turns, 0) - 1, -1)]
    system, turns = list(system), list(turns)
    for kind, index in wanted:
        blocks = system if kind == "system" else turns[index]["content"]
        if "cache_control" in blocks[-1]:
            continue
        if budget <= 0:
            warnings.append("caching policy: Claude allows 4 cache_control markers; some were not added")
            break
        budget -= 1
        marked = {**blocks[-1], "cache_control": dict(marker)}
        if kind == "system":
            system[-1] = marked
        else:
            turns[index] = {"role": turns[index]["role"], "content": [*blocks[:-1], marked]}
    return system, turns, warnings


def build_conversation(
    messages: Sequence[Message],
    *,
    placeholder: str,
    prefill: PrefillPolicy,
    cache: CachePolicy = CachePolicy(),
    reserved_breakpoints: int = 0,
    model: str = "",
) -> Conversation:
    """The whole message conversion, in order: split, merge, placeholder, default prefill,
    whitespace, caching, then the prefill fallback for models that cannot continue a turn."""
    system, turns = split_messages(messages)
    if turns and turns[-1]["role"] == "user" and not turns[-1]["content"]:
        # The client's last word is an empty user turn (SillyTavern: sending nothing): it
        # asks for a reply, so keep the turn. Dropped, the assistant turn before it would
        # become a prefill and be continued. U+200B is text to Claude, not whitespace
        # (SillyTavern's own fix for empty turns).
        turns[-1] = {"role": "user", "content": [{"type": "text", "text": EMPTY_TURN}]}
    turns = merge_turns(turns)
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": placeholder}]})
    default = (prefill.default or "").rstrip()
    if default and turns[-1]["role"] == "user":
        turns.append({"role": "assistant", "content": [{"type": "text", "text": default}]})
    turns = strip_final_assistant(turns)
    text = prefill_text(turns[-1]) if turns[-1]["role"] == "assistant" else None
    system, turns, warnings = mark_cacheable(system, turns, cache, reserved_breakpoints, text is not None)
    if text is None:
        return Conversation(system, turns, warnings=tuple(warnings))
    if prefill.supported:
        return Conversation(system, turns, text, "native", tuple(warnings))
    if prefill.fallback == "reject":
        raise InvalidRequest(
            f"model {model!r} does not accept an assistant prefill (with this model, or with thinking "
            "on, the conversation must end with a user message); remove the trailing assistant "
            "message or the model's 'prefill' setting",
            param="messages",
        )
    # instruct: the last user turn (the one before the prefill) asks for the prefill instead
    turns = turns[:-1]
    instruction = {"type": "text", "text": prefill.instruction.replace("{prefill}", text)}
    turns[-1] = {"role": "user", "content": [*turns[-1]["content"], instruction]}
    warnings.append("the assistant prefill was sent as an instruction: this model cannot continue a turn")
    return Conversation(system, turns, text, "instruct", tuple(warnings))
