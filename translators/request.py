"""The request as translators see it: a validated OpenAI body plus what the router decided.

``body`` is the client's JSON after validation with route defaults merged in (client values
win); it is never mutated. The pipeline fills ``messages`` or ``prompt`` to match what the
translator accepts: a prompt to a chat backend becomes one user message, a chat to a
text-completion backend is rendered by the instruct template into ``prompt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence, TypedDict

Operation = Literal["chat", "completion"]

# Every field of OpenAI's two generation endpoints (2026 SDK). A translator's ParamMap must
# account for each of these (mapped, unsupported, ignored or handled by a named function);
# the conformance test checks it.
OPENAI_CHAT_FIELDS: frozenset[str] = frozenset(
    {
        "model", "messages", "audio", "frequency_penalty", "function_call", "functions",
        "logit_bias", "logprobs", "top_logprobs", "max_completion_tokens", "max_tokens",
        "metadata", "modalities", "n", "parallel_tool_calls", "prediction", "presence_penalty",
        "prompt_cache_key", "prompt_cache_retention", "reasoning_effort", "response_format",
        "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
        "stream_options", "temperature", "tool_choice", "tools", "top_p", "user", "verbosity",
        "web_search_options",
    }
)
OPENAI_COMPLETION_FIELDS: frozenset[str] = frozenset(
    {
        "model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs",
        "max_tokens", "n", "presence_penalty", "seed", "stop", "stream", "stream_options",
        "suffix", "temperature", "top_p", "user",
    }
)
OPENAI_FIELDS = OPENAI_CHAT_FIELDS | OPENAI_COMPLETION_FIELDS


class FunctionCall(TypedDict):
    """``tool_calls[].function`` on the wire."""

    name: str
    arguments: str


class ToolCall(TypedDict):
    """An assistant message's ``tool_calls[]`` entry on the wire."""

    id: str
    type: Literal["function"]
    function: FunctionCall


class Message(TypedDict, total=False):
    """One chat message as OpenAI clients send it (validated at the edge)."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None
    name: str
    tool_calls: list[ToolCall]
    tool_call_id: str


@dataclass(frozen=True, slots=True)
class Request:
    """One generation request, validated and routed."""

    id: str
    operation: Operation
    model: str
    upstream_model: str
    body: Mapping[str, Any]
    stream: bool = False
    include_usage: bool = False
    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None
    n: int = 1
    # the translator's ModelOptions instance for this route (set by the proxy)
    options: Any = None

    def get(self, name: str, default: Any = None) -> Any:
        """A body field, or ``default`` when absent or null."""
        value = self.body.get(name)
        return default if value is None else value


def text_of(content: str | Sequence[Mapping[str, Any]] | None) -> str:
    """The text of a message ``content``: a string, or the concatenated text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(
        str(part.get("text", "")) for part in content if part.get("type") in ("text", "input_text")
    )
