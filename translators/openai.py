"""OpenAI-compatible passthrough: OpenAI itself and any server that speaks its wire format
(OpenRouter, Mistral, DeepSeek, vLLM, llama.cpp's and KoboldCpp's ``/v1`` emulation...).

The body goes through nearly as the client sent it (the model renamed, usage always asked for
on streams); answers are parsed into events so every backend's answer is rendered by the same
code, with the gateway's own ids and the public model name.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterable, Mapping

import orjson
from pydantic import BaseModel, ConfigDict

from .base import Frame, Translator, Upstream, get_json, openai_model_ids
from .errors import UpstreamError
from .events import Event, Finish, FinishReason, Meta, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from .params import Param, ParamMap
from .request import OPENAI_FIELDS, Request

# Fields the proxy handles itself; everything else the client sent is forwarded as it is.
params = ParamMap(
    {},
    handled={"model", "messages", "prompt", "stream", "stream_options"},
    forward_unknown=True,
)
# Mapped explicitly only to document that they go through unchanged.
for _name in (
    "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens", "presence_penalty",
    "frequency_penalty", "seed", "logit_bias", "logprobs", "top_logprobs", "user", "tools",
    "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort", "metadata",
    "modalities", "audio", "prediction", "service_tier", "store", "verbosity", "web_search_options",
    "functions", "function_call", "prompt_cache_key", "prompt_cache_retention",
    "safety_identifier", "best_of", "echo", "suffix",
):
    params.mapped[_name] = Param()

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "function_call": "function_call",
    "model_length": "length",  # Mistral
    "eos": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "insufficient_system_resource": "length",  # DeepSeek cut the answer short
}


class Options(BaseModel):
    """``openai`` backend options."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Send fields OpenAI does not define (SillyTavern's min_p, rep_pen...). Servers such as
    # llama.cpp or vLLM use them; api.openai.com rejects them, so its default config turns this off.
    forward_unknown: bool = True


def finish_reason(value: Any) -> FinishReason | None:
    """The OpenAI finish reason for an upstream value (None while the choice goes on)."""
    if value is None or value == "null":
        return None
    if value == "error":
        raise UpstreamError("upstream reported finish_reason 'error'", kind="5xx")
    return FINISH_REASONS.get(str(value), "stop")


def usage_event(usage: Mapping[str, Any]) -> Usage:
    """Usage from an OpenAI ``usage`` object (DeepSeek's cache fields included)."""
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    cached = prompt_details.get("cached_tokens", usage.get("prompt_cache_hit_tokens"))
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=int(cached) if cached is not None else None,
        reasoning_tokens=completion_details.get("reasoning_tokens"),
    )


def message_events(index: int, message: Mapping[str, Any], logprobs: Any) -> Iterable[Event]:
    """Events for one non-stream ``choices[].message``."""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        yield ReasoningDelta(reasoning, index)
    content = message.get("content")
    if content or logprobs:
        yield TextDelta(content or "", index, logprobs)
    for call_no, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        yield ToolCallDelta(
            call_no, call.get("id"), function.get("name"), function.get("arguments") or "", index
        )


def delta_events(index: int, delta: Mapping[str, Any], logprobs: Any) -> Iterable[Event]:
    """Events for one streamed ``choices[].delta``."""
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        yield ReasoningDelta(reasoning, index)
    content = delta.get("content")
    if content or logprobs:
        yield TextDelta(content or "", index, logprobs)
    for call in delta.get("tool_calls") or ():
        function = call.get("function") or {}
        yield ToolCallDelta(
            int(call.get("index", 0)),
            call.get("id"),
            function.get("name"),
            function.get("arguments") or "",
            index,
        )


class OpenAI(Translator):
    """OpenAI Chat Completions and legacy Completions, passed through."""

    name = "openai"
    framing = "sse"
    params = params
    Options = Options
    default_url = "https://api.openai.com/v1"
    multi_prompt = True

    def build_request(self, req: Request) -> Upstream:
        native, warnings = self.params.apply(req.body, openai_fields=frozenset())
        if not self.options.forward_unknown:
            native = {k: v for k, v in native.items() if k in OPENAI_FIELDS}
            dropped = sorted(k for k in req.body if k not in OPENAI_FIELDS and req.body[k] is not None)
            if dropped:
                warnings.append("fields OpenAI does not define were not sent: " + ", ".join(dropped))
        native["model"] = req.upstream_model
        if req.operation == "chat":
            native["messages"] = list(req.messages)
            path = "/chat/completions"
        else:
            native["prompt"] = req.body.get("prompt") if req.prompt is None else req.prompt
            path = "/completions"
        if req.stream:
            native["stream"] = True
            native["stream_options"] = {**(req.get("stream_options") or {}), "include_usage": True}
        headers = {"Content-Type": "application/json", **self.backend.headers}
        if self.backend.api_key:
            headers["Authorization"] = f"Bearer {self.backend.api_key}"
        url = (self.backend.url or self.default_url).rstrip("/") + path
        return Upstream("POST", url, headers, native, req.stream, tuple(warnings))

    def parse_response(self, body: Any, req: Request) -> Iterable[Event]:
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            raise UpstreamError(f"upstream {self.name} answer has no 'choices' list", kind="malformed")
        yield Meta(body.get("id"), body.get("model"), body.get("system_fingerprint"))
        for position, choice in enumerate(body["choices"]):
            index = int(choice.get("index", position))
            if "message" in choice:
                yield from message_events(index, choice.get("message") or {}, choice.get("logprobs"))
            elif choice.get("text") or choice.get("logprobs"):
                yield TextDelta(choice.get("text") or "", index, choice.get("logprobs"))
            yield Finish(finish_reason(choice.get("finish_reason")) or "stop", index)
        if isinstance(body.get("usage"), dict):
            yield usage_event(body["usage"])

    async def parse_stream(self, frames: AsyncIterator[Frame], req: Request) -> AsyncIterator[Event]:
        meta_sent = False
        finished: set[int] = set()
        async for frame in frames:
            if frame.data == "[DONE]":
                return
            try:
                chunk = orjson.loads(frame.data)
            except orjson.JSONDecodeError:
                raise UpstreamError(f"upstream {self.name} sent a malformed stream chunk", kind="malformed") from None
            if not isinstance(chunk, dict):
                raise UpstreamError(f"upstream {self.name} sent a stream chunk that is not an object", kind="malformed")
            if "error" in chunk:
                error = chunk["error"]
                message = error.get("message") if isinstance(error, dict) else str(error)
                raise UpstreamError(f"upstream {self.name} failed mid-stream: {message}", kind="5xx")
            if not meta_sent:
                meta_sent = True
                yield Meta(chunk.get("id"), chunk.get("model"), chunk.get("system_fingerprint"))
            for position, choice in enumerate(chunk.get("choices") or ()):
                index = int(choice.get("index", position))
                if "delta" in choice:
                    for event in delta_events(index, choice.get("delta") or {}, choice.get("logprobs")):
                        yield event
                elif choice.get("text") or choice.get("logprobs"):
                    yield TextDelta(choice.get("text") or "", index, choice.get("logprobs"))
                reason = finish_reason(choice.get("finish_reason"))
                if reason is not None and index not in finished:
                    finished.add(index)
                    yield Finish(reason, index)
            if isinstance(chunk.get("usage"), dict):
                yield usage_event(chunk["usage"])
        if not finished:
            raise UpstreamError(f"upstream {self.name} stream ended before the answer finished", kind="cut_mid_stream")

    async def list_models(self, transport: Any) -> list[str]:
        url = (self.backend.url or self.default_url).rstrip("/") + "/models"
        headers = dict(self.backend.headers)
        if self.backend.api_key:
            headers["Authorization"] = f"Bearer {self.backend.api_key}"
        return openai_model_ids(await get_json(transport, url, headers))
