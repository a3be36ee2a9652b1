"""``tabby``: TabbyAPI (exllamav2/v3), OpenAI-style endpoints with its sampler extras.

Facts (theroyallab/tabbyAPI @ e632af41, Aug 2026: ``common/auth.py``, ``common/sampling.py``,
``common/networking.py``, ``common/errors.py``, ``endpoints/OAI/router.py``,
``endpoints/OAI/types/*.py``, ``endpoints/OAI/utils/{completion,chat_completion,common_}.py``,
``endpoints/core/router.py``, ``docs/03.-Usage.md``; shared/protocols/local.md §6):

- Auth: ``x-api-key: <key>`` or ``Authorization: Bearer <key>`` (``check_api_key`` reads
  ``x-api-key`` first); both are sent, as SillyTavern does. The admin key is valid everywhere;
  with it ``/v1/models`` lists every model folder instead of the loaded model, and a request
  whose ``model`` names another folder loads it ("inline model loading", when the server's
  ``inline_model_loading`` is on; with an API key that is a 401). So the admin key is used only
  when the ``inline_model_loading`` option says so.
- The sampler fields have aliases on the server (``AliasChoices``: the first name present wins);
  Rosetta sends only the canonical names, so what the server reads is what the table says.
  There is no ``seed``.
- Completion stream chunks name the model ``model_name`` (not ``model``) and carry an id
  ``chatcmpl-…``; chat chunks use ``model``. With ``include_usage`` the last content chunk has
  no finish; the usage chunk that follows carries it in ``choices[0].finish_reason``. Streams end
  with ``data: [DONE]``; sse_starlette sends ``: ping`` comments and ``\\r\\n`` line ends.
- A prompt that does not fit is refused before streaming: 400 with OpenAI's
  ``context_length_exceeded`` error object. Errors after the 200 arrive as a ``data:`` event
  ``{"error": {"message": ..., "trace": ...}}``. No model loaded: 503.
- ``usage`` comes only with ``stream_options.include_usage``, on non-stream answers too
  (``generate_completion``: ``return_usage``), so it is always sent.
- A trailing assistant message is continued with ``continue_final_message: true`` and
  ``add_generation_prompt: false`` (the server refuses the pair otherwise).
- Closing the connection cancels the generation (``DisconnectHandler``).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any, AsyncGenerator, AsyncIterator

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from .base import Frame, NoOptions, Upstream
from .events import Event, Meta
from .openai import OpenAI
from .params import Param, ParamMap
from .request import Request
from .samplers import list_openai_models, native_fields, openai_style_request, server_root, token_list

SAME = Param()
params = ParamMap(
    {
        # OpenAI fields the server takes under the same name.
        **{
            name: SAME
            for name in (
                "temperature", "top_p", "frequency_penalty", "presence_penalty", "stop", "max_tokens",
                "logit_bias", "logprobs", "top_logprobs", "n", "response_format", "tools", "tool_choice",
                "parallel_tool_calls", "functions", "reasoning_effort", "verbosity", "user",
            )
        },
        "max_completion_tokens": Param("max_tokens"),
        # BaseSamplerRequest (common/sampling.py), canonical names.
        **{
            name: SAME
            for name in (
                "min_tokens", "banned_strings", "token_healing", "temperature_last", "smoothing_factor",
                "top_k", "top_a", "min_p", "tfs", "typical", "skew", "xtc_probability", "xtc_threshold",
                "repetition_penalty", "penalty_range", "repetition_decay", "dry_multiplier", "dry_base",
                "dry_allowed_length", "dry_range", "dry_sequence_breakers", "mirostat_mode",
                "mirostat_tau", "mirostat_eta", "add_bos_token", "ban_eos_token", "json_schema",
                "regex_pattern", "grammar_string", "max_temp", "min_temp", "temp_exponent",
                "adaptive_target", "adaptive_decay", "loop_detect_window",
                # ChatCompletionRequest extras
                "prompt_template", "add_generation_prompt", "template_vars", "response_prefix",
                "enable_thinking", "reasoning", "reasoning_budget_tokens", "reasoning_budget_message",
                "continue_final_message",
            )
        },
        "banned_tokens": Param(convert=token_list),
        "allowed_tokens": Param(convert=token_list),
        # The server's own aliases and SillyTavern's / other servers' names.
        "max_length": Param("max_tokens"),
        "max_new_tokens": Param("max_tokens"),
        "min_length": Param("min_tokens"),
        "stop_sequence": Param("stop"),
        "stopping_strings": Param("stop"),
        "custom_token_bans": Param("banned_tokens", convert=token_list),
        "allowed_token_ids": Param("allowed_tokens", convert=token_list),
        "typical_p": Param("typical"),
        "tfs_z": Param("tfs"),
        "rep_pen": Param("repetition_penalty"),
        "repeat_penalty": Param("repetition_penalty"),
        "repetition_range": Param("penalty_range"),
        "repetition_penalty_range": Param("penalty_range"),
        "rep_pen_range": Param("penalty_range"),
        "dry_penalty_last_n": Param("dry_range"),
        "mirostat": Param("mirostat_mode"),
        "ignore_eos": Param("ban_eos_token"),
        "dynatemp_high": Param("max_temp"),
        "dynatemp_low": Param("min_temp"),
        "dynatemp_exponent": Param("temp_exponent"),
        "chat_template_kwargs": Param("template_vars"),
        "reasoning_budget": Param("reasoning_budget_tokens"),
        "thinking_budget": Param("reasoning_budget_tokens"),
        "thinking_token_budget": Param("reasoning_budget_tokens"),
    },
    unsupported={
        # accepted by the server "only for OAI compliance" and not parsed: ignoring would lie
        "echo": "TabbyAPI does not echo the prompt",
        "suffix": "TabbyAPI does not take a suffix",
        "best_of": "TabbyAPI does not use 'best_of'",
        "function_call": "use 'tool_choice'",
        "audio": "text only",
        "modalities": "text only",
        "web_search_options": "no web search",
    },
    ignored={
        "seed", "sampler_seed", "metadata", "store", "service_tier", "prediction",
        "prompt_cache_key", "prompt_cache_retention", "safety_identifier",
    },
    handled={"model", "messages", "prompt", "stream", "stream_options"},
    forward_unknown=True,
)


class Options(BaseModel):
    """``tabby`` backend options."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    admin_key: SecretStr | None = Field(default=None, description="TabbyAPI's admin key (api_tokens.yml)")
    inline_model_loading: bool = Field(
        default=False,
        description="authenticate with the admin key so a request's model is loaded on demand and "
        "/v1/models lists every model folder (the server's inline_model_loading must be on)",
    )
    forward_unknown: bool = Field(default=True, description="send fields Rosetta does not know as they are")

    @model_validator(mode="after")
    def _admin_key_for_inline_loading(self) -> "Options":
        if self.inline_model_loading and self.admin_key is None:
            raise ValueError("inline_model_loading needs admin_key")
        return self


def prefill_fields(req: Request) -> dict[str, Any]:
    """A trailing assistant message is continued, not closed, unless the client said otherwise."""
    if req.operation != "chat" or not req.messages or req.messages[-1].get("role") != "assistant":
        return {}
    if req.get("continue_final_message") is not None or req.get("add_generation_prompt") is not None:
        return {}
    return {"continue_final_message": True, "add_generation_prompt": False}


def model_name_of(frame: Frame) -> str | None:
    """The ``model_name`` a completion stream chunk carries (TabbyAPI's name for ``model``)."""
    try:
        chunk = orjson.loads(frame.data)
    except orjson.JSONDecodeError:
        return None
    name = chunk.get("model_name") if isinstance(chunk, dict) else None
    return name if isinstance(name, str) else None


class Tabby(OpenAI):
    """TabbyAPI: OpenAI-style endpoints plus its samplers."""

    name = "tabby"
    framing = "sse"
    params = params
    Options = Options  # type: ignore[assignment]  # openai.py infers its own Options type here
    ModelOptions = NoOptions
    default_url = "http://127.0.0.1:5000"

    def root(self) -> str:
        """The server's root URL (config may give it with or without ``/v1``)."""
        return server_root(self.backend.url or self.default_url, "/v1")

    def auth_headers(self) -> dict[str, str]:
        """Config headers plus the key in both headers the server reads."""
        headers = dict(self.backend.headers)
        key = self.backend.api_key
        if self.options.inline_model_loading:
            key = self.options.admin_key.get_secret_value()
        if key:
            headers["x-api-key"] = key
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def build_request(self, req: Request) -> Upstream:
        native, warnings = native_fields(self.params, req, forward_unknown=self.options.forward_unknown)
        native.update(prefill_fields(req))
        up = openai_style_request(req, native, self.root() + "/v1", self.auth_headers(), warnings)
        if not req.stream:
            # the server reports usage on non-stream answers only when this asks for it
            up = replace(up, json={**up.json, "stream_options": {"include_usage": True}})
        return up

    async def parse_stream(self, frames: AsyncIterator[Frame], req: Request) -> AsyncIterator[Event]:
        names: list[str] = []

        async def watched() -> AsyncGenerator[Frame, None]:
            async for frame in frames:
                if not names and frame.data != "[DONE]":
                    names.append(model_name_of(frame) or "")
                yield frame

        source = watched()
        async with contextlib.aclosing(source):
            async for event in super().parse_stream(source, req):
                if isinstance(event, Meta) and event.model is None and names and names[0]:
                    event = replace(event, model=names[0])
                yield event

    async def list_models(self, transport: Any) -> list[str]:
        return await list_openai_models(transport, self.root() + "/v1/models", self.auth_headers())
