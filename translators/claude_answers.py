"""Claude answers → Rosetta events (used by ``claude.py``): the non-stream ``message``, the SSE
stream, stop reasons, usage and Anthropic's error bodies.

Facts (shared/protocols/cloud.md §2.4–2.6; https://docs.claude.com/en/docs/build-with-claude/streaming):
a stream is ``message_start``, then per content block ``content_block_start`` /
``content_block_delta``* / ``content_block_stop``, then ``message_delta`` (stop reason and
*cumulative* usage) and ``message_stop``; ``ping`` may come anywhere, and so may ``error``
after the 200. New event types may be added (the versioning policy says to ignore them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterable, Iterator, Mapping

import orjson

from .base import Frame
from .errors import UpstreamError, status_for_upstream, upstream_error
from .events import Event, Finish, FinishReason, Meta, ReasoningDelta, TextDelta, ToolCallDelta, Usage

STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",  # a server tool loop paused; the turn as sent is complete
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error type → the HTTP status it stands for (https://platform.claude.com/docs/en/api/errors).
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

# Error messages worth a clearer answer than the upstream's (observed texts; cloud.md §2.3).
PREFILL_REJECTED = "does not support assistant message prefill"
PROMPT_TOO_LONG = "prompt is too long"


@dataclass(frozen=True, slots=True)
class AnswerPlan:
    """What the request asked of the answer: ``emit`` is text to put first (the prefill, when
    config includes it); ``strip`` is the prefill the model was *asked* to write (instruct
    fallback), removed from the start of the answer so only the continuation remains."""

    emit: str | None = None
    strip: str | None = None


def claude_error(
    status: int, error_type: str | None, message: str, *, retry_after: float | None = None,
    in_stream: bool = False,
) -> UpstreamError:
    """The UpstreamError for an Anthropic error: an HTTP error status, or (``in_stream``) an
    ``error`` event after the 200, whose status is the one its type stands for."""
    text = message or error_type or ""
    if PREFILL_REJECTED in text:
        return UpstreamError(
            "upstream claude rejected the assistant prefill: this model cannot continue an "
            "assistant turn; set 'prefill_supported: false' for it in the config "
            f"(Claude said: {text})",
            kind="4xx", status=400, type="invalid_request_error", param="messages",
            code="prefill_not_supported",
        )
    if status == 400 and PROMPT_TOO_LONG in text:
        return UpstreamError(
            f"upstream claude: {text}", kind="4xx", status=400, type="invalid_request_error",
            param="messages", code="context_length_exceeded",
        )
    if in_stream:
        mapped = status_for_upstream(status)
        return UpstreamError(
            f"upstream claude failed mid-stream: {error_type}: {text}",
            kind="4xx" if 400 <= status < 500 else "5xx", status=mapped,
            type="rate_limit_error" if mapped == 429 else "upstream_error",
            code=error_type, retry_after=retry_after,
        )
    return upstream_error(status, text, backend_type="claude", code=error_type, retry_after=retry_after)


def stop_reason(value: Any) -> FinishReason:
    """The OpenAI finish reason for a Claude ``stop_reason`` (unknown future values: stop)."""
    return STOP_REASONS.get(str(value), "stop")


def usage_event(usage: Mapping[str, Any]) -> Usage:
    """Usage from Claude's counters: the prompt is input plus cache writes plus cache reads."""
    read = int(usage.get("cache_read_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + int(usage.get("cache_creation_input_tokens") or 0) + read
    details = usage.get("output_tokens_details") or {}
    thinking = details.get("thinking_tokens") if isinstance(details, Mapping) else None
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=int(usage.get("output_tokens") or 0),
        cached_tokens=read if "cache_read_input_tokens" in usage else None,
        reasoning_tokens=int(thinking) if thinking is not None else None,
    )


class PrefixStripper:
    """Removes ``prefix`` (after any leading whitespace) from the start of a text that arrives
    in pieces; if the text turns out not to start with it, the text passes unchanged."""

    def __init__(self, prefix: str | None) -> None:
        self.prefix = prefix or ""
        self.buffer = ""
        self.done = not self.prefix

    def feed(self, text: str) -> str:
        """The part of ``text`` that can be let through now."""
        if self.done:
            return text
        self.buffer += text
        probe = self.buffer.lstrip()
        if len(probe) >= len(self.prefix):
            self.done = True
            return probe[len(self.prefix) :] if probe.startswith(self.prefix) else self.buffer
        if self.prefix.startswith(probe):
            return ""
        self.done = True
        return self.buffer

    def flush(self) -> str:
        """What is still held back (the text ended inside a partial match)."""
        if self.done:
            return ""
        self.done = True
        return self.buffer


def response_events(body: Any, plan: AnswerPlan) -> Iterator[Event]:
    """Events for a non-stream ``message``."""
    if not isinstance(body, dict) or not isinstance(body.get("content"), list):
        raise UpstreamError("upstream claude answer has no 'content' list", kind="malformed")
    yield Meta(body.get("id"), body.get("model"))
    if plan.emit:
        yield TextDelta(plan.emit)
    stripper = PrefixStripper(plan.strip)
    calls = 0
    for block in body["content"]:
        kind = block.get("type") if isinstance(block, dict) else None
        match kind:
            case "text":
                if text := stripper.feed(block.get("text") or ""):
                    yield TextDelta(text)
            case "thinking":
                if block.get("thinking"):
                    yield ReasoningDelta(block["thinking"])
            case "tool_use":
                if held := stripper.flush():
                    yield TextDelta(held)
                arguments = orjson.dumps(block.get("input") or {}).decode()
                yield ToolCallDelta(calls, block.get("id"), block.get("name"), arguments)
                calls += 1
            case _:
                # redacted_thinking, server tool blocks, ...: nothing an OpenAI answer can carry
                continue
    if held := stripper.flush():
        yield TextDelta(held)
    yield Finish(stop_reason(body.get("stop_reason")))
    if isinstance(body.get("usage"), dict):
        yield usage_event(body["usage"])


@dataclass(slots=True)
class _Block:
    """A content block open in the stream."""

    kind: str
    call: int = -1
    start_input: Any = None
    saw_json: bool = False


@dataclass(slots=True)
class _StreamState:
    blocks: dict[int, _Block] = field(default_factory=dict)
    calls: int = 0
    usage: dict[str, Any] = field(default_factory=dict)
    finished: bool = False


def _loads(frame: Frame) -> dict[str, Any]:
    try:
        data = orjson.loads(frame.data)
    except orjson.JSONDecodeError:
        raise UpstreamError("upstream claude sent a malformed stream event", kind="malformed") from None
    if not isinstance(data, dict):
        raise UpstreamError("upstream claude sent a stream event that is not an object", kind="malformed")
    return data


def _block_start(state: _StreamState, data: Mapping[str, Any], stripper: PrefixStripper) -> Iterable[Event]:
    index = int(data.get("index", 0))
    block = data.get("content_block") or {}
    kind = block.get("type")
    match kind:
        case "text":
            state.blocks[index] = _Block("text")
            if text := stripper.feed(block.get("text") or ""):
                yield TextDelta(text)
        case "thinking":
            state.blocks[index] = _Block("thinking")
            if block.get("thinking"):
                yield ReasoningDelta(block["thinking"])
        case "tool_use":
            if held := stripper.flush():
                yield TextDelta(held)
            state.blocks[index] = _Block("tool_use", state.calls, block.get("input"))
            yield ToolCallDelta(state.calls, block.get("id"), block.get("name"), "")
            state.calls += 1
        case _:
            # redacted_thinking (complete in its start), server_tool_use, web_search_tool_result...
            state.blocks[index] = _Block(str(kind))


def _block_delta(state: _StreamState, data: Mapping[str, Any], stripper: PrefixStripper) -> Iterable[Event]:
    block = state.blocks.get(int(data.get("index", 0)))
    delta = data.get("delta") or {}
    kind = delta.get("type")
    match kind:
        case "text_delta":
            if text := stripper.feed(delta.get("text") or ""):
                yield TextDelta(text)
        case "thinking_delta":
            if delta.get("thinking"):
                yield ReasoningDelta(delta["thinking"])
        case "input_json_delta":
            # server_tool_use blocks stream input too; only client tool calls reach the answer
            if block is not None and block.kind == "tool_use" and delta.get("partial_json"):
                block.saw_json = True
                yield ToolCallDelta(block.call, arguments=delta["partial_json"])
        case "signature_delta" | "citations_delta":
            # the thinking signature and citations have no place in an OpenAI answer
            return
        case _:
            return


def _block_stop(state: _StreamState, data: Mapping[str, Any]) -> Iterable[Event]:
    block = state.blocks.pop(int(data.get("index", 0)), None)
    if block is not None and block.kind == "tool_use" and not block.saw_json:
        # a call without input deltas: OpenAI clients still need its arguments ("{}" at least)
        yield ToolCallDelta(block.call, arguments=orjson.dumps(block.start_input or {}).decode())


async def stream_events(
    frames: AsyncIterator[Frame], plan: AnswerPlan, *, overloaded_retry_after: float | None = None
) -> AsyncIterator[Event]:
    """Events for a Claude SSE stream; an ``error`` event raises (``overloaded_retry_after`` is
    the Retry-After hint for an in-stream ``overloaded_error``, which has no headers)."""
    state = _StreamState()
    stripper = PrefixStripper(plan.strip)
    async for frame in frames:
        data = _loads(frame)
        kind = data.get("type") or frame.event
        match kind:
            case "message_start":
                message = data.get("message") or {}
                yield Meta(message.get("id"), message.get("model"))
                if plan.emit:
                    yield TextDelta(plan.emit)
                state.usage.update(message.get("usage") or {})
            case "content_block_start":
                for event in _block_start(state, data, stripper):
                    yield event
            case "content_block_delta":
                for event in _block_delta(state, data, stripper):
                    yield event
            case "content_block_stop":
                for event in _block_stop(state, data):
                    yield event
            case "message_delta":
                if held := stripper.flush():
                    yield TextDelta(held)
                reason = (data.get("delta") or {}).get("stop_reason")
                if reason is not None and not state.finished:
                    state.finished = True
                    yield Finish(stop_reason(reason))
                # cumulative counters: later values replace earlier ones
                state.usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
                if state.usage:
                    yield usage_event(state.usage)
            case "message_stop":
                if not state.finished:
                    raise UpstreamError("upstream claude stream stopped without a stop reason", kind="malformed")
                return
            case "ping":
                continue
            case "error":
                error = data.get("error") or {}
                etype = str(error.get("type") or "api_error")
                status = ERROR_STATUS.get(etype, 500)
                retry = overloaded_retry_after if status == 529 else None
                raise claude_error(status, etype, str(error.get("message") or ""), retry_after=retry, in_stream=True)
            case _:
                continue
    if not state.finished:
        raise UpstreamError("upstream claude stream ended before the answer finished", kind="cut_mid_stream")
