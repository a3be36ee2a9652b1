"""Claude: Anthropic's Messages API (``POST /v1/messages``), streamed and not.

Facts with sources: shared/protocols/cloud.md §2. Message conversion and the prefill rules are
in ``claude_messages.py``; the request fields that need more than a rename in
``claude_params.py``; answers, usage and errors in ``claude_answers.py``. The decisions:

Model capabilities are read from the model id's version (``model_version``: claude-opus-4-6 →
4.6, claude-3-5-sonnet-… → 3.5, claude-opus-4-20250514 → 4.0, claude-fable-5 → 5.0); each can be
set per model in config, and ids without a version count as old models.

| capability (ModelOptions)   | default rule                          | source                          |
|-----------------------------|---------------------------------------|---------------------------------|
| ``prefill_supported``       | version < 4.6                         | copilot-api#261, vscode-unify#249 |
| ``thinking_mode`` adaptive  | version ≥ 4.6 (4.7+ reject budgets)   | pi#3297, docker-agent#2563      |
| ``sampling`` (temp/top_p/k) | version < 4.7                         | ComfyUI#13923, litellm#37868    |
| ``sampling_exclusive``      | version ≥ 4.5, or Opus ≥ 4.1          | langfuse#9882, cloud.md §2.2    |
| ``structured_outputs``      | same as ``sampling_exclusive``        | cloud.md §2.2 (output_config)   |

- ``max_tokens`` is required by Claude: the client's ``max_completion_tokens``/``max_tokens``,
  else the model's ``max_tokens`` setting (4096).
- Sampling, one policy (``sampling_policy``): ``temperature``/``top_p`` are clamped to 0..1
  (params table, with a warning); models without sampling, and any request with thinking on,
  send none of temperature/top_p/top_k; ``sampling_exclusive`` models keep temperature and lose
  top_p when both are set. Every drop is a warning.
- Thinking: a client ``thinking`` object passes through as it is. Else ``reasoning_effort``
  (``none``: no thinking) becomes, on adaptive models, ``{"type": "adaptive", "display":
  "summarized"}`` plus ``output_config.effort`` (minimal→low, others by name); on older models
  ``{"type": "enabled", "budget_tokens": B}`` with B = max(1024, share × max_tokens), share
  minimal 0, low 0.10, medium 0.25, high 0.50, xhigh 0.75, max 0.95, so 1024 ≤ B < max_tokens
  (a max_tokens ≤ 1024 is raised by 1024, with a warning).
- Prefill: models without prefill, and any request with thinking on, get ``prefill_fallback``:
  ``instruct`` (default) asks for the prefill at the end of the last user turn and strips it
  from the start of the answer; ``reject`` is a 400 naming ``messages``. Either way the answer
  holds only the continuation, unless ``include_prefill`` puts the prefill (as sent, trailing
  whitespace stripped) first.
- ``response_format: json_schema`` → ``output_config.format`` on models with structured
  outputs; on others, and for ``json_object`` (Claude has no schema-less JSON mode), a 400
  naming ``response_format``.
- Stop sequences made only of whitespace are not sent (Claude rejects them: litellm#3286).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterable, Literal, Mapping
from urllib.parse import quote

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .base import Frame, Translator, Upstream, parse_json, retry_after_of
from .claude_answers import AnswerPlan, claude_error, response_events, stream_events
from .claude_messages import CachePolicy, Conversation, PrefillPolicy, build_conversation
from .claude_params import (
    max_tokens_of,
    output_format_of,
    penalty_warnings,
    sampling_policy,
    stop_sequences_of,
    thinking_of,
    tools_of,
)
from .errors import UpstreamError
from .events import Event
from .params import Param, ParamMap
from .request import OPENAI_FIELDS, Request

params = ParamMap(
    {
        "temperature": Param(range=(0.0, 1.0)),
        "top_p": Param(range=(0.0, 1.0)),
        "top_k": Param(range=(0, None)),
        "user": Param(to="metadata.user_id"),
        # Claude's top-level automatic cache breakpoint, for clients that know it
        "cache_control": Param(),
    },
    unsupported={
        "n": "Claude returns one answer per request",
        "best_of": "Claude returns one answer per request",
        "logprobs": "Claude does not return log probabilities",
        "top_logprobs": "Claude does not return log probabilities",
        "echo": "Claude does not echo the prompt",
        "suffix": "Claude has no fill-in-the-middle",
        "audio": "Claude answers with text only",
        "modalities": "Claude answers with text only",
        "functions": "the deprecated functions API is not mapped; use tools",
        "function_call": "the deprecated functions API is not mapped; use tool_choice",
        "web_search_options": "Claude's web search is a server tool, not mapped from OpenAI's option",
    },
    ignored={
        "logit_bias", "seed", "metadata", "service_tier", "store", "verbosity", "prediction",
        "prompt_cache_key", "prompt_cache_retention",
    },
    handled={
        "model", "messages", "prompt", "stream", "stream_options", "max_tokens",
        "max_completion_tokens", "stop", "tools", "tool_choice", "parallel_tool_calls",
        "response_format", "reasoning_effort", "thinking", "safety_identifier",
        "presence_penalty", "frequency_penalty",
    },
)

DEFAULT_INSTRUCTION = "Begin your reply with exactly the following text, then continue it seamlessly:\n\n{prefill}"
MAX_MODEL_PAGES = 10
# claude-3-5-sonnet-…, claude-opus-4-1-…, claude-sonnet-4-20250514 (a date, not a minor), claude-fable-5
VERSION = re.compile(r"claude-(?:[a-z]+-)?(?P<major>\d+)(?:[-.](?P<minor>\d{1,2}))?(?!\d)")


class Options(BaseModel):
    """``claude`` backend options."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    anthropic_version: str = "2023-06-01"
    # beta flags sent as one comma-joined anthropic-beta header
    anthropic_beta: list[str] = Field(default_factory=list)
    # the user turn put before a conversation that starts with the assistant
    placeholder_user: str = Field(default="Let's get started.", min_length=1)
    # Retry-After (seconds) for an overloaded Claude that named none (529, in-stream overload)
    overloaded_retry_after: float = Field(default=2.0, ge=0)

    @field_validator("anthropic_beta", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return [flag.strip() for flag in value.split(",") if flag.strip()] if isinstance(value, str) else value


class CacheOptions(BaseModel):
    """Opt-in prompt caching for one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    system: bool = False
    last_turns: int = Field(default=0, ge=0, le=3)
    ttl: Literal["5m", "1h"] | None = None


class ModelOptions(BaseModel):
    """Per-model ``claude`` settings (see the module docstring for the defaults' rules)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_tokens: int = Field(default=4096, ge=1, description="sent when the client gives none")
    prefill: str | None = Field(default=None, description="assistant prefill added after a final user turn")
    include_prefill: bool = False
    prefill_supported: bool | None = None
    prefill_fallback: Literal["instruct", "reject"] = "instruct"
    prefill_instruction: str = DEFAULT_INSTRUCTION
    sampling: bool | None = None
    sampling_exclusive: bool | None = None
    structured_outputs: bool | None = None
    thinking_mode: Literal["budget", "adaptive"] | None = None
    cache: CacheOptions = CacheOptions()

    @field_validator("prefill_instruction")
    @classmethod
    def _has_slot(cls, value: str) -> str:
        if "{prefill}" not in value:
            raise ValueError("must contain {prefill}")
        return value


# --- what a model can do ----------------------------------------------------------------
def model_version(model: str) -> tuple[int, int] | None:
    """``(major, minor)`` from a Claude model id (claude-3-5-sonnet-…, claude-opus-4-1-…,
    claude-sonnet-4-20250514 → (4, 0)); None for ids that do not say."""
    match = VERSION.search(model)
    return (int(match["major"]), int(match["minor"] or 0)) if match else None


def prefill_supported(model: str) -> bool:
    """Default: Claude 4.6 and later reject a trailing assistant message; unknown ids accept it."""
    version = model_version(model)
    return version is None or version < (4, 6)


def sampling_supported(model: str) -> bool:
    """Default: Claude 4.7 and later reject temperature, top_p and top_k ("deprecated for this model")."""
    version = model_version(model)
    return version is None or version < (4, 7)


def adaptive_thinking(model: str) -> bool:
    """Default: Claude 4.6 and later think adaptively (4.7+ reject ``budget_tokens`` thinking)."""
    version = model_version(model)
    return version is not None and version >= (4, 6)


def newer_family(model: str) -> bool:
    """Claude 4.5 and later, and Opus 4.1 and later: one of temperature/top_p, structured outputs."""
    version = model_version(model)
    if version is None:
        return False
    return version >= (4, 5) or ("opus" in model and version >= (4, 1))


def model_options(req: Request) -> ModelOptions:
    """The request's model settings as ModelOptions (the proxy may pass them validated or raw)."""
    options: Any = req.options
    return options if isinstance(options, ModelOptions) else ModelOptions.model_validate(dict(options))


@dataclass(frozen=True, slots=True)
class NativeRequest:
    """The native body, what was changed on the way, and the converted conversation."""

    body: dict[str, Any]
    warnings: tuple[str, ...]
    conversation: Conversation


class Claude(Translator):
    """Anthropic's Claude Messages API."""

    name = "claude"
    framing = "sse"
    params = params
    accepts = frozenset({"chat"})
    default_url = "https://api.anthropic.com"
    Options = Options
    ModelOptions = ModelOptions

    def base_url(self) -> str:
        """The API root; a configured URL ending in ``/v1`` is accepted too."""
        base = (self.backend.url or self.default_url).rstrip("/")
        return base.removesuffix("/v1")

    def request_headers(self) -> dict[str, str]:
        """x-api-key, anthropic-version and the configured beta flags."""
        headers = {"content-type": "application/json", "anthropic-version": self.options.anthropic_version}
        headers.update(self.backend.headers)
        if self.backend.api_key:
            headers["x-api-key"] = self.backend.api_key
        if self.options.anthropic_beta:
            headers["anthropic-beta"] = ",".join(self.options.anthropic_beta)
        return headers

    def native_request(self, req: Request) -> NativeRequest:
        """Everything ``build_request`` sends, and the conversation the answer parser needs."""
        options = model_options(req)
        model = req.upstream_model
        newer = newer_family(model)
        native, warning_list = self.params.apply(req.body, openai_fields=OPENAI_FIELDS)
        warnings = list(warning_list)
        max_tokens, explicit = max_tokens_of(req, options.max_tokens)
        adaptive = options.thinking_mode == "adaptive" if options.thinking_mode else adaptive_thinking(model)
        thinking = thinking_of(req, max_tokens, explicit, adaptive, warnings)
        max_tokens = thinking.max_tokens
        sampling = sampling_supported(model) if options.sampling is None else options.sampling
        exclusive = newer if options.sampling_exclusive is None else options.sampling_exclusive
        structured = newer if options.structured_outputs is None else options.structured_outputs
        sampling_policy(native, thinking_on=thinking.on, sampling=sampling, exclusive=exclusive, warnings=warnings)
        tools, tool_choice = tools_of(req, thinking.on, structured, warnings)
        output_format = output_format_of(req, structured)
        penalty_warnings(req, warnings)
        if "user_id" not in native.get("metadata", {}) and req.get("safety_identifier"):
            native["metadata"] = {"user_id": req.get("safety_identifier")}
        supported = prefill_supported(model) if options.prefill_supported is None else options.prefill_supported
        conversation = build_conversation(
            req.messages,
            placeholder=self.options.placeholder_user,
            prefill=PrefillPolicy(options.prefill, supported and not thinking.on, options.prefill_fallback, options.prefill_instruction),
            cache=CachePolicy(options.cache.system, options.cache.last_turns, options.cache.ttl),
            reserved_breakpoints=sum("cache_control" in tool for tool in tools) + ("cache_control" in native),
            model=model,
        )
        warnings += conversation.warnings
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": conversation.messages, **native}
        if conversation.system:
            body["system"] = conversation.system
        if stops := stop_sequences_of(req, warnings):
            body["stop_sequences"] = stops
        if thinking.config is not None:
            body["thinking"] = thinking.config
        if tools:
            body["tools"] = tools
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
        output_config = {
            **({"effort": thinking.effort} if thinking.effort else {}),
            **({"format": output_format} if output_format else {}),
        }
        if output_config:
            body["output_config"] = output_config
        if req.stream:
            body["stream"] = True
        return NativeRequest(body, tuple(warnings), conversation)

    def build_request(self, req: Request) -> Upstream:
        native = self.native_request(req)
        url = self.base_url() + "/v1/messages"
        return Upstream("POST", url, self.request_headers(), native.body, req.stream, native.warnings)

    def answer_plan(self, req: Request) -> AnswerPlan:
        """What the answer parser must add (the prefill) or strip (an instructed prefill)."""
        conversation = self.native_request(req).conversation
        include = model_options(req).include_prefill
        return AnswerPlan(
            emit=conversation.prefill if include and conversation.prefill else None,
            strip=conversation.prefill if conversation.prefill_mode == "instruct" else None,
        )

    def parse_response(self, body: Any, req: Request) -> Iterable[Event]:
        return response_events(body, self.answer_plan(req))

    async def parse_stream(self, frames: AsyncIterator[Frame], req: Request) -> AsyncIterator[Event]:
        async for event in stream_events(frames, self.answer_plan(req), overloaded_retry_after=self.options.overloaded_retry_after):
            yield event

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
        """Anthropic's ``{"type": "error", "error": {"type", "message"}}``; an overload (529)
        becomes a retryable 503 with a Retry-After."""
        error_type: str | None = None
        message = body.decode("utf-8", "replace").strip()[:500]
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            error_type = str(error.get("type")) if error.get("type") else None
            message = str(error.get("message") or message)[:500]
        retry_after = retry_after_of(headers)
        retry_ms = headers.get("retry-after-ms") or headers.get("Retry-After-Ms")
        if retry_ms is not None:
            try:
                retry_after = float(retry_ms) / 1000
            except ValueError:
                pass
        if retry_after is None and (status == 529 or error_type == "overloaded_error"):
            retry_after = self.options.overloaded_retry_after
        return claude_error(status, error_type, message, retry_after=retry_after)

    async def list_models(self, transport: Any) -> list[str]:
        """Model ids from ``GET /v1/models``, all pages. An upstream error raises (the proxy's
        model catalog logs it and keeps its last good list)."""
        headers = {k: v for k, v in self.request_headers().items() if k != "content-type"}
        ids: list[str] = []
        after: str | None = None
        for _ in range(MAX_MODEL_PAGES):
            url = self.base_url() + "/v1/models?limit=1000" + (f"&after_id={quote(after)}" if after else "")
            response = await transport.send(Upstream("GET", url, headers))
            try:
                if response.status >= 400:
                    raise self.parse_error(response.status, await response.read(), response.headers)
                data = parse_json(await response.read(), self.name)
            finally:
                response.close()
            if not isinstance(data, dict) or not isinstance(data.get("data"), list):
                raise UpstreamError("upstream claude model list has no 'data' list", kind="malformed")
            ids += [str(m["id"]) for m in data["data"] if isinstance(m, dict) and m.get("id")]
            after = data.get("last_id")
            if not data.get("has_more") or not after:
                return ids
        return ids
