"""Ollama answer objects → events (used by ``ollama.py``).

A stream line of ``/api/chat`` or ``/api/generate`` and a whole (non-stream) answer have the
same fields (``docs/api.md``, ``docs/openapi.yaml``): the text is ``message.content`` (chat) or
``response`` (generate), the reasoning ``message.thinking`` / ``thinking``, tool calls
``message.tool_calls``, token probabilities ``logprobs``; the object with ``"done": true``
has ``done_reason`` and the counts. So one :class:`AnswerState` reads both.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import orjson

from .events import Event, Finish, FinishReason, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from .request import Request

# done_reason (llm/server.go DoneReason; "load"/"unload" answer empty requests only)
DONE_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length", "load": "stop", "unload": "stop"}


def chat_logprobs(entries: Any) -> dict[str, Any] | None:
    """Ollama's ``logprobs`` list (``docs/openapi.yaml`` Logprob) in OpenAI's chat shape."""
    if not entries:
        return None
    return {
        "content": [
            {
                "token": e.get("token", ""),
                "logprob": e.get("logprob"),
                "bytes": e.get("bytes"),
                "top_logprobs": [
                    {"token": t.get("token", ""), "logprob": t.get("logprob"), "bytes": t.get("bytes")}
                    for t in e.get("top_logprobs") or ()
                ],
            }
            for e in entries
        ]
    }


def usage_of(chunk: Mapping[str, Any]) -> Usage | None:
    """Usage from a final object; None when Ollama gave no counts (a load/unload answer)."""
    if "prompt_eval_count" not in chunk and "eval_count" not in chunk:
        return None
    return Usage(int(chunk.get("prompt_eval_count") or 0), int(chunk.get("eval_count") or 0))


class AnswerState:
    """What one answer has said so far: the parts of a chat or generate object are the same in
    a stream line and in a whole answer, so both go through :meth:`chunk`."""

    __slots__ = ("req", "started", "finished", "calls")

    def __init__(self, req: Request) -> None:
        self.req = req
        self.started = False
        self.finished = False
        self.calls = 0

    def chunk(self, chunk: Mapping[str, Any]) -> Iterable[Event]:
        """Events for one object: thinking, text, tool calls; on ``done`` the finish and usage."""
        self.started = True
        message = chunk.get("message")
        if isinstance(message, Mapping):  # /api/chat
            thinking, text, calls = message.get("thinking"), message.get("content"), message.get("tool_calls")
        else:  # /api/generate
            thinking, text, calls = chunk.get("thinking"), chunk.get("response"), chunk.get("tool_calls")
        if thinking:
            yield ReasoningDelta(str(thinking))
        logprobs = chat_logprobs(chunk.get("logprobs"))
        if text or logprobs:
            yield TextDelta(str(text or ""), 0, logprobs)
        for call in calls or ():
            yield self.tool_call(call)
        if chunk.get("done"):
            self.finished = True
            reason = DONE_REASONS.get(str(chunk.get("done_reason") or "stop"), "stop")
            yield Finish("tool_calls" if self.calls and reason == "stop" else reason)
            usage = usage_of(chunk)
            if usage is not None:
                yield usage

    def tool_call(self, call: Mapping[str, Any]) -> ToolCallDelta:
        """One whole Ollama tool call; arguments (an object) become OpenAI's JSON string."""
        function = call.get("function") or {}
        arguments = function.get("arguments")
        text = arguments if isinstance(arguments, str) else orjson.dumps(arguments if arguments is not None else {}).decode()
        call_id = call.get("id") or f"call_{self.req.id[-12:]}_{self.calls}"
        delta = ToolCallDelta(self.calls, str(call_id), str(function.get("name", "")), text)
        self.calls += 1
        return delta
