"""Edge validation of OpenAI request bodies: every wrong value gets a 400 naming its param.

Checks types and ranges the way OpenAI does, and nothing a backend might legitimately accept
beyond them: unknown fields are kept (SillyTavern sends dozens of sampler extras) and reach
backends that take them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from translators.errors import InvalidRequest
from translators.request import Message, Operation

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal", "input_text"})


@dataclass(frozen=True, slots=True)
class Parsed:
    """What validation derived from a body (the body itself is not changed)."""

    model: str
    stream: bool
    include_usage: bool
    stop: tuple[str, ...]
    max_tokens: int | None
    n: int
    messages: tuple[Message, ...]
    prompt: Any


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number(body: Mapping[str, Any], name: str, low: float, high: float | None) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_num(value):
        raise InvalidRequest(f"'{name}' must be a number, got {type(value).__name__}", param=name)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidRequest(f"'{name}' must be {bound}, got {value}", param=name)


def _integer(body: Mapping[str, Any], name: str, low: int, high: int | None = None) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_int(value):
        raise InvalidRequest(f"'{name}' must be an integer, got {type(value).__name__}", param=name)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidRequest(f"'{name}' must be {bound}, got {value}", param=name)


def _typed(body: Mapping[str, Any], name: str, kind: type, label: str) -> None:
    value = body.get(name)
    if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)):
        raise InvalidRequest(f"'{name}' must be {label}, got {type(value).__name__}", param=name)


def _stop(body: Mapping[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(s for s in value if s)
    raise InvalidRequest("'stop' must be a string or a list of strings", param="stop")


def _logit_bias(body: Mapping[str, Any]) -> None:
    value = body.get("logit_bias")
    if value is None:
        return
    if not isinstance(value, dict):
        raise InvalidRequest("'logit_bias' must be an object mapping token ids to bias values", param="logit_bias")
    for key, bias in value.items():
        if not str(key).lstrip("-").isdigit():
            raise InvalidRequest(f"'logit_bias' keys must be token ids, got {key!r}", param="logit_bias")
        if not _is_num(bias) or not -100 <= bias <= 100:
            raise InvalidRequest(f"'logit_bias' values must be numbers between -100 and 100, got {bias!r}", param="logit_bias")


def _content(content: Any, where: str, role: str) -> None:
    if content is None:
        if role in ("assistant", "function"):
            return
        raise InvalidRequest(f"'{where}.content' is required for role '{role}'", param=f"{where}.content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}.content' must be a string or a list of content parts", param=f"{where}.content")
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        if not isinstance(part, dict) or part.get("type") not in PART_TYPES:
            raise InvalidRequest(f"'{here}' must be a content part with a valid 'type'", param=here)
        kind = part["type"]
        if kind in ("text", "input_text", "refusal") and not isinstance(part.get(kind if kind != "input_text" else "text"), str):
            raise InvalidRequest(f"'{here}.{kind}' must be a string", param=f"{here}.{kind}")
        if kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str) or not url:
                raise InvalidRequest(f"'{here}.image_url.url' must be a URL or data URI", param=f"{here}.image_url.url")


def _messages(body: Mapping[str, Any]) -> tuple[Message, ...]:
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest("'messages' is a required property", param="messages")
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' must be a list of messages", param="messages")
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message", param="messages", code="empty_array")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"'{where}' must be an object", param=where)
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(
                f"'{where}.role' must be one of {', '.join(sorted(ROLES))}, got {role!r}", param=f"{where}.role"
            )
        _content(message.get("content"), where, role)
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise InvalidRequest(f"'{where}.tool_call_id' is required for tool messages", param=f"{where}.tool_call_id")
        calls = message.get("tool_calls")
        if calls is not None:
            if role != "assistant" or not isinstance(calls, list):
                raise InvalidRequest(f"'{where}.tool_calls' must be a list on an assistant message", param=f"{where}.tool_calls")
            for j, call in enumerate(calls):
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments", ""), str):
                    raise InvalidRequest(
                        f"'{where}.tool_calls[{j}]' must have function.name and function.arguments (a JSON string)",
                        param=f"{where}.tool_calls[{j}]",
                    )
        if message.get("name") is not None and not isinstance(message.get("name"), str):
            raise InvalidRequest(f"'{where}.name' must be a string", param=f"{where}.name")
    return tuple(messages)  # type: ignore[arg-type]


def _tools(body: Mapping[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("'tools' must be a list", param="tools")
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise InvalidRequest(f"'tools[{i}]' must be {{type: 'function', function: {{name, parameters?}}}}", param=f"tools[{i}]")
            if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
                raise InvalidRequest(f"'tools[{i}].function.parameters' must be a JSON Schema object", param=f"tools[{i}].function.parameters")
    choice = body.get("tool_choice")
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise InvalidRequest("'tool_choice' must be 'none', 'auto', 'required' or a function", param="tool_choice")
        if choice == "required" and not tools:
            raise InvalidRequest("'tool_choice' is 'required' but no 'tools' were given", param="tool_choice")
        return
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(name, str):
        raise InvalidRequest("'tool_choice' must be 'none', 'auto', 'required' or {type: 'function', function: {name}}", param="tool_choice")
    if not any(((t.get("function") or {}).get("name") == name) for t in tools or []):
        raise InvalidRequest(f"'tool_choice' names function {name!r}, which is not in 'tools'", param="tool_choice")


def _response_format(body: Mapping[str, Any]) -> None:
    value = body.get("response_format")
    if value is None:
        return
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise InvalidRequest("'response_format.type' must be 'text', 'json_object' or 'json_schema'", param="response_format")
    if kind == "json_schema" and not isinstance(value.get("json_schema"), dict):
        raise InvalidRequest("'response_format.json_schema' is required for type 'json_schema'", param="response_format.json_schema")


def _common(body: Mapping[str, Any]) -> tuple[str, bool, bool]:
    model = body.get("model")
    if model is None:
        raise InvalidRequest("'model' is a required property", param="model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string", param="model")
    _typed(body, "stream", bool, "a boolean")
    stream = bool(body.get("stream"))
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidRequest("'stream_options' must be an object", param="stream_options")
        if not stream:
            raise InvalidRequest("'stream_options' is only allowed when 'stream' is true", param="stream_options")
        usage = options.get("include_usage")
        if usage is not None and not isinstance(usage, bool):
            raise InvalidRequest("'stream_options.include_usage' must be a boolean", param="stream_options.include_usage")
        include_usage = bool(usage)
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)
    _integer(body, "n", 1, 128)
    _integer(body, "max_tokens", 1)
    _integer(body, "seed", -(2**63), 2**64)
    _typed(body, "user", str, "a string")
    _logit_bias(body)
    return model, stream, include_usage


def parse_chat(body: Mapping[str, Any]) -> Parsed:
    """Validate a ``/v1/chat/completions`` body."""
    model, stream, include_usage = _common(body)
    messages = _messages(body)
    _integer(body, "max_completion_tokens", 1)
    _typed(body, "logprobs", bool, "a boolean")
    _integer(body, "top_logprobs", 0, 20)
    if body.get("top_logprobs") is not None and not body.get("logprobs"):
        raise InvalidRequest("'top_logprobs' requires 'logprobs' to be true", param="top_logprobs")
    _typed(body, "parallel_tool_calls", bool, "a boolean")
    _typed(body, "reasoning_effort", str, "a string")
    _tools(body)
    _response_format(body)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    return Parsed(model, stream, include_usage, _stop(body), max_tokens, body.get("n") or 1, messages, None)


def parse_completion(body: Mapping[str, Any]) -> Parsed:
    """Validate a legacy ``/v1/completions`` body."""
    model, stream, include_usage = _common(body)
    prompt = body.get("prompt")
    if prompt is None:
        raise InvalidRequest("'prompt' is a required property", param="prompt")
    if isinstance(prompt, list):
        if not prompt:
            raise InvalidRequest("'prompt' must not be an empty list", param="prompt")
        kinds = {type(p) for p in prompt}
        if not (kinds <= {str} or kinds <= {int} or all(isinstance(p, list) and all(_is_int(t) for t in p) for p in prompt)):
            raise InvalidRequest("'prompt' must be a string, a list of strings, or token arrays", param="prompt")
    elif not isinstance(prompt, str):
        raise InvalidRequest("'prompt' must be a string, a list of strings, or token arrays", param="prompt")
    _integer(body, "logprobs", 0, 5)
    _integer(body, "best_of", 1, 20)
    _typed(body, "echo", bool, "a boolean")
    _typed(body, "suffix", str, "a string")
    return Parsed(model, stream, include_usage, _stop(body), body.get("max_tokens"), body.get("n") or 1, (), prompt)


PARSERS: dict[Operation, Callable[[Mapping[str, Any]], Parsed]] = {
    "chat": parse_chat,
    "completion": parse_completion,
}
