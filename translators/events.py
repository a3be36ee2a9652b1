"""The small vocabulary every translator speaks back to the proxy.

A translator turns native answers (one JSON body or a stream of frames) into these frozen
events; only ``proxy/render.py`` knows how an OpenAI answer looks. ``index`` is the OpenAI
choice index (``n`` > 1 gives several).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Union

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


@dataclass(frozen=True, slots=True)
class Meta:
    """Facts about the answer as a whole, usually first: the upstream's id and model.

    ``headers`` are extra response headers the backend wants the client to see (Horde worker
    name, ...); the proxy sends them only while the headers are still unsent.
    """

    upstream_id: str | None = None
    model: str | None = None
    system_fingerprint: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of generated text for one choice (``logprobs`` in OpenAI's shape, if any)."""

    text: str
    index: int = 0
    logprobs: Any = None


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's reasoning ("thinking") text; rendered as ``reasoning_content``."""

    text: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """Part of one tool call. ``call`` is the tool-call ordinal within the choice (OpenAI's
    ``tool_calls[].index``), not any upstream block index. ``id`` and ``name`` come once, on the
    first delta of a call; ``arguments`` are JSON text fragments to be concatenated."""

    call: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    index: int = 0


@dataclass(frozen=True, slots=True)
class Finish:
    """The end of one choice, with the OpenAI finish reason."""

    reason: FinishReason
    index: int = 0


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts for the whole answer. A later Usage replaces an earlier one (backends such as
    Claude report input at the start and output at the end: the translator sums them)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    source: Literal["provider", "estimated"] = "provider"


@dataclass(frozen=True, slots=True)
class Progress:
    """The job waits upstream (a queue): rendered as an SSE comment keep-alive for streaming
    clients and observed by metrics. Any field may be unknown."""

    queue_position: int | None = None
    wait_seconds: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Cost:
    """What the answer cost upstream in a backend-specific unit (Horde kudos, dollars...)."""

    amount: float
    unit: str


Event = Union[Meta, TextDelta, ReasoningDelta, ToolCallDelta, Finish, Usage, Progress, Cost]
