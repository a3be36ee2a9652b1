"""OpenAI chat messages and tools → Ollama ``/api/chat`` messages (used by ``ollama.py``).

Ollama's message (``docs/api.md`` "Generate a chat completion", ``api/types.go`` Message):
``{"role": "system"|"user"|"assistant"|"tool", "content": str, "images": [base64],
"tool_calls": [{"function": {"name", "arguments": {object}}}], "tool_name": str}``.

- ``content`` is one string: text parts are joined; ``image_url`` parts must be ``data:`` URIs
  and become ``images`` (bare base64, no ``data:`` prefix). A remote image URL is refused:
  fetching a URL a client chose from the gateway's network is not something to do quietly.
- ``developer`` is a system message; the legacy ``function`` role is a ``tool`` message.
- Assistant ``tool_calls[].function.arguments`` is a JSON *string* in OpenAI and an *object*
  in Ollama: it is parsed here (invalid JSON is the client's 400).
- A ``tool`` message carries ``tool_name`` (Ollama has no call ids in its documented API):
  the name is looked up from the assistant call with the same ``tool_call_id``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import orjson

from .errors import InvalidRequest, Unsupported
from .request import Message

DATA_URI = re.compile(r"^data:[\w.+-]+/[\w.+-]+(?:;[^,;]*)*;base64,(?P<data>.*)$", re.DOTALL)
ROLES: dict[str, str] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}


def split_content(content: Any, where: str) -> tuple[str, list[str]]:
    """The text and the base64 images of an OpenAI message ``content``."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind in ("text", "input_text"):
            texts.append(str(part.get("text", "")))
        elif kind == "refusal":
            texts.append(str(part.get("refusal", "")))
        elif kind == "image_url":
            image = part.get("image_url") or {}
            url = image.get("url", "") if isinstance(image, Mapping) else str(image)
            match = DATA_URI.match(url)
            if match is None:
                raise Unsupported(
                    "Ollama takes images inline: send them as data: URIs (base64), not as URLs",
                    param=f"{where}.content[{j}].image_url.url",
                )
            images.append(match.group("data"))
        else:
            raise Unsupported(f"Ollama does not take '{kind}' content parts", param=f"{where}.content[{j}]")
    return "".join(texts), images


def tool_call_names(messages: Sequence[Message]) -> dict[str, str]:
    """Tool call id → function name, from every assistant message's ``tool_calls``."""
    names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or ():
            names[call.get("id", "")] = call["function"]["name"]
    return names


def call_arguments(text: str, where: str) -> Any:
    """An OpenAI arguments string as the JSON object Ollama wants."""
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        raise InvalidRequest("tool call arguments must be a JSON string", param=where) from None
    if not isinstance(value, dict):
        raise InvalidRequest("tool call arguments must encode a JSON object", param=where)
    return value


def chat_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """OpenAI chat messages as Ollama ``messages``."""
    names = tool_call_names(messages)
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = ROLES[message["role"]]
        text, images = split_content(message.get("content"), where)
        native: dict[str, Any] = {"role": role, "content": text}
        if images:
            native["images"] = images
        if message.get("tool_calls"):
            native["tool_calls"] = [
                {
                    "function": {
                        "name": call["function"]["name"],
                        "arguments": call_arguments(
                            call["function"].get("arguments", ""), f"{where}.tool_calls[{j}].function.arguments"
                        ),
                    }
                }
                for j, call in enumerate(message["tool_calls"])
            ]
        if role == "tool":
            name = names.get(message.get("tool_call_id", "")) or message.get("name")
            if name:
                native["tool_name"] = name
        out.append(native)
    return out


def chat_tools(body: Mapping[str, Any]) -> list[Any] | None:
    """The ``tools`` to send: OpenAI's function tools have Ollama's shape already. ``none``
    sends no tools (Ollama has no ``tool_choice``); forcing a call cannot be honoured."""
    tools = body.get("tools") or body.get("functions")
    choice = body.get("tool_choice", body.get("function_call"))
    if not tools:
        return None
    if choice == "none":
        return None
    if choice not in (None, "auto"):
        raise Unsupported("Ollama cannot be made to call a tool: tool_choice must be 'auto' or 'none'", param="tool_choice")
    if body.get("functions") and not body.get("tools"):
        return [{"type": "function", "function": dict(fn)} for fn in tools]
    return list(tools)
