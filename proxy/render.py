"""Events → OpenAI's wire format. The only module that knows what an OpenAI answer looks like.

- :class:`StreamRenderer` frames events as ``chat.completion.chunk`` / ``text_completion``
  SSE: a role chunk first for each choice, deltas, the finish chunk, the usage chunk (empty
  ``choices``) only when the client asked for it, then ``data: [DONE]``.
- :class:`Aggregate` collects events into one ``chat.completion`` / ``text_completion``.
Both work whatever the backend's own framing was, so a stream-only backend can answer a
non-stream request and the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from translators.errors import RosettaError
from translators.events import Event, Finish, Meta, Progress, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from translators.request import Operation

DONE = b"data: [DONE]\n\n"
# Legacy completions know only these finish reasons.
COMPLETION_REASONS = frozenset({"stop", "length", "content_filter"})


def completion_reason(reason: str | None) -> str:
    """A chat finish reason as ``/v1/completions`` may say it."""
    return reason if reason in COMPLETION_REASONS else "stop"


def usage_json(usage: Usage) -> dict[str, Any]:
    """OpenAI's ``usage`` object."""
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }
    if usage.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def error_json(error: RosettaError) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"message": error.message, "type": error.type, "param": error.param, "code": error.code}


def sse(data: dict[str, Any]) -> bytes:
    """One SSE ``data:`` event."""
    return b"data: " + orjson.dumps(data) + b"\n\n"


class StreamRenderer:
    """Renders one answer's events as SSE bytes; call :meth:`end` (or :meth:`error`) last."""

    __slots__ = ("operation", "base", "include_usage", "started", "finished", "usage", "_head", "_tail")

    def __init__(self, operation: Operation, response_id: str, model: str, created: int, include_usage: bool) -> None:
        self.operation = operation
        self.base: dict[str, Any] = {
            "id": response_id,
            "object": "chat.completion.chunk" if operation == "chat" else "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": None,
        }
        self.include_usage = include_usage
        # Every chunk of one answer shares these bytes: serialised once, not per chunk.
        self._head = b"data: " + orjson.dumps(self.base)[:-1] + b',"choices":['
        self._tail = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"
        self.started: set[int] = set()
        self.finished: set[int] = set()
        self.usage: Usage | None = None

    def _chunk(self, choice: dict[str, Any]) -> bytes:
        return self._head + orjson.dumps(choice) + self._tail

    def _delta(self, index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if self.operation == "completion":
            text = delta.get("content", "")
            reason = completion_reason(finish) if finish else None
            return self._chunk({"text": text, "index": index, "logprobs": delta.get("logprobs"), "finish_reason": reason})
        out = b""
        if index not in self.started:
            self.started.add(index)
            out = self._chunk(
                {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
            )
        logprobs = delta.pop("logprobs", None)
        return out + self._chunk({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish})

    def render(self, event: Event) -> bytes:
        """The bytes for ``event`` (may be empty)."""
        match event:
            case TextDelta(text, index, logprobs):
                if not text and logprobs is None:
                    return b""
                delta: dict[str, Any] = {"content": text}
                if logprobs is not None:
                    delta["logprobs"] = logprobs
                return self._delta(index, delta)
            case ReasoningDelta(text, index):
                if self.operation == "completion" or not text:
                    return b""
                return self._delta(index, {"reasoning_content": text})
            case ToolCallDelta(call, call_id, name, arguments, index):
                if self.operation == "completion":
                    return b""
                entry: dict[str, Any] = {"index": call}
                if call_id is not None:
                    entry["id"] = call_id
                    entry["type"] = "function"
                    entry["function"] = {"name": name or "", "arguments": arguments}
                else:
                    entry["function"] = {"arguments": arguments}
                return self._delta(index, {"tool_calls": [entry]})
            case Finish(reason, index):
                if index in self.finished:
                    return b""
                self.finished.add(index)
                return self._delta(index, {} if self.operation == "chat" else {"content": ""}, reason)
            case Usage():
                self.usage = event
                return b""
            case Progress(position, wait, detail):
                return comment(position, wait, detail)
            case Meta() | _:
                return b""

    def end(self, usage: Usage | None) -> bytes:
        """Finish chunks for choices that never finished, the usage chunk if asked, [DONE]."""
        out = b""
        if not self.finished:
            out += self.render(Finish("stop", 0))
        if self.include_usage and usage is not None:
            out += sse({**self.base, "choices": [], "usage": usage_json(usage)})
        return out + DONE

    def error(self, error: RosettaError) -> bytes:
        """One error chunk (``choices`` empty, so clients that index it do not crash), [DONE]."""
        return sse({**self.base, "choices": [], "error": error_json(error)}) + DONE


def comment(position: int | None, wait: float | None, detail: Any) -> bytes:
    """An SSE comment line telling a waiting client where its job stands (a keep-alive)."""
    parts = []
    if position is not None:
        parts.append(f"queue_position={position}")
    if wait is not None:
        parts.append(f"wait_seconds={wait:g}")
    for key, value in (detail or {}).items():
        parts.append(f"{key}={value}")
    return (": " + " ".join(parts) + "\n\n").encode() if parts else b": waiting\n\n"


@dataclass
class _Choice:
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: list[Any] = field(default_factory=list)
    finish: str | None = None


class Aggregate:
    """Collects events into one non-stream answer."""

    def __init__(self) -> None:
        self.choices: dict[int, _Choice] = {}
        self.usage: Usage | None = None
        self.meta = Meta()

    def add(self, event: Event) -> None:
        """Take one event into account."""
        match event:
            case TextDelta(text, index, logprobs):
                choice = self.choices.setdefault(index, _Choice())
                choice.text.append(text)
                if logprobs is not None:
                    choice.logprobs.append(logprobs)
            case ReasoningDelta(text, index):
                self.choices.setdefault(index, _Choice()).reasoning.append(text)
            case ToolCallDelta(call, call_id, name, arguments, index):
                calls = self.choices.setdefault(index, _Choice()).calls
                entry = calls.setdefault(call, {"id": call_id, "type": "function", "function": {"name": name or "", "arguments": ""}})
                if call_id and not entry["id"]:
                    entry["id"] = call_id
                if name and not entry["function"]["name"]:
                    entry["function"]["name"] = name
                entry["function"]["arguments"] += arguments
            case Finish(reason, index):
                self.choices.setdefault(index, _Choice()).finish = reason
            case Usage():
                self.usage = event
            case Meta():
                self.meta = event
            case _:
                pass

    def text(self) -> str:
        """All generated text (every choice, reasoning and tool arguments included): what
        completion tokens are estimated from."""
        parts: list[str] = []
        for choice in self.choices.values():
            parts += choice.reasoning + choice.text
            parts += [c["function"]["name"] + c["function"]["arguments"] for c in choice.calls.values()]
        return "".join(parts)

    def render(self, operation: Operation, response_id: str, model: str, created: int, usage: Usage | None) -> dict[str, Any]:
        """The ``chat.completion`` or ``text_completion`` object."""
        indexes = sorted(self.choices) or [0]
        choices = []
        for index in indexes:
            choice = self.choices.get(index, _Choice())
            text = "".join(choice.text)
            if operation == "chat":
                message: dict[str, Any] = {
                    "role": "assistant",
                    "content": text if text or not choice.calls else None,
                    "refusal": None,
                }
                if choice.reasoning:
                    message["reasoning_content"] = "".join(choice.reasoning)
                if choice.calls:
                    message["tool_calls"] = [
                        {**c, "id": c["id"] or f"call_{response_id[-8:]}_{n}"} for n, c in sorted(choice.calls.items())
                    ]
                choices.append(
                    {"index": index, "message": message, "logprobs": _chat_logprobs(choice.logprobs), "finish_reason": choice.finish or "stop"}
                )
            else:
                choices.append(
                    {"text": text, "index": index, "logprobs": _completion_logprobs(choice.logprobs), "finish_reason": completion_reason(choice.finish)}
                )
        out: dict[str, Any] = {
            "id": response_id,
            "object": "chat.completion" if operation == "chat" else "text_completion",
            "created": created,
            "model": model,
            "choices": choices,
            "system_fingerprint": None,
        }
        if usage is not None:
            out["usage"] = usage_json(usage)
        return out


def _chat_logprobs(pieces: list[Any]) -> Any:
    if not pieces:
        return None
    content: list[Any] = []
    for piece in pieces:
        content += (piece or {}).get("content") or []
    return {"content": content, "refusal": None}


def _completion_logprobs(pieces: list[Any]) -> Any:
    if not pieces:
        return None
    out: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for piece in pieces:
        for key in out:
            out[key] += (piece or {}).get(key) or []
    return out
