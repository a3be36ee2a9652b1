"""``ooba``: text-generation-webui's OpenAI-style API with its sampler extras.

Facts (oobabooga/text-generation-webui @ 1dcde41d, May 2026: ``modules/api/script.py``,
``typing.py``, ``completions.py``, ``models.py``, ``modules/text_generation.py``,
``modules/chat.py``; captures in ``tests/transcripts/ooba/``; shared/protocols/local.md §5):

- Auth is ``Authorization: Bearer <--api-key>`` compared as a whole string; else 401
  ``{"detail": "Unauthorized"}``. Unless started with ``--listen`` the server answers 400
  ``{"detail": "Invalid host header"}`` to a ``Host`` that is not localhost.
- Chat goes to ``/v1/chat/completions``: the server renders the model's instruction template.
  Completions go to ``/v1/completions``. ``model`` is accepted and unused (one model is loaded).
- ``truncation_length`` silently cuts the prompt from the front to ``truncation_length -
  max_new_tokens`` tokens (chat drops the oldest messages instead), and 0 means the UI's value.
  So the configured context size is sent, and ``prepare`` counts the prompt
  (``/v1/internal/token-count``; for chat the prompt the server renders,
  ``/v1/internal/chat-prompt``) and answers 400 ``context_length_exceeded`` where the server
  would have cut.
- Streams end with ``data: [DONE]`` only since 2026-03 (commit 5a017aa3); older servers close
  after the chunk with ``finish_reason`` and use ``\\r\\n`` line ends and ``: ping`` comments.
  A stream that ends after a finish is complete; one that ends before any is cut (the OpenAI
  parser decides that).
- ``finish_reason`` is computed from token counts (``length`` when the answer reached
  ``max_tokens`` or the context), not from why generation stopped.
- ``POST /v1/internal/stop-generation`` (answer ``"OK"``) stops every generation on the server.
  Current servers also stop when the connection drops; older non-stream ones ran to the end. It
  is called when the client goes away before the answer finished (option, on by default).
- ``/v1/models`` lists dummy OpenAI names on 2024 builds; ``/v1/internal/model/info`` names the
  loaded model on every version (SillyTavern reads it too).
- Type traps (pydantic 422 otherwise): ``dry_sequence_breakers`` is a string (JSON array text),
  ``custom_token_bans`` a comma-separated string. ``n`` > 1 works only for non-stream
  completions (chat ignores it); ``functions``/``function_call`` are rejected.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncGenerator, AsyncIterator, cast

import orjson
from pydantic import BaseModel, ConfigDict, Field

from .base import Transport, Upstream, get_json, parse_json
from .errors import ContextLengthExceeded, Unsupported, UpstreamError, upstream_error
from .events import Event, Finish
from .openai import OpenAI
from .params import Param, ParamMap, clamp
from .request import Request
from .samplers import model_option, native_fields, openai_style_request, server_root, token_string

# What the server uses when max_tokens is absent (CompletionRequestParams / chat_completions_common).
DEFAULT_MAX_NEW_TOKENS = 512
# Sent to /v1/internal/chat-prompt so the server renders the whole chat without dropping messages.
NO_TRUNCATION = 2**31 - 1


def breakers_text(value: Any) -> Any:
    """``dry_sequence_breakers`` as the server's string type (a JSON array becomes its text)."""
    if isinstance(value, (list, tuple)):
        return orjson.dumps(list(value)).decode()
    return value


SAME = Param()
params = ParamMap(
    {
        # OpenAI fields the server takes under the same name.
        **{
            name: SAME
            for name in (
                "temperature", "top_p", "frequency_penalty", "presence_penalty", "seed", "stop",
                "max_tokens", "logit_bias", "logprobs", "top_logprobs", "tools", "tool_choice",
                "reasoning_effort", "user", "echo", "suffix", "n",
            )
        },
        "max_completion_tokens": Param("max_tokens"),
        # GenerationOptions: the server's sampler extras, same names.
        **{
            name: SAME
            for name in (
                "preset", "dynatemp_low", "dynatemp_high", "dynatemp_exponent", "smoothing_factor",
                "smoothing_curve", "min_p", "top_k", "typical_p", "xtc_threshold", "xtc_probability",
                "epsilon_cutoff", "eta_cutoff", "tfs", "top_a", "top_n_sigma", "adaptive_target",
                "adaptive_decay", "dry_multiplier", "dry_allowed_length", "dry_base",
                "repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size",
                "repetition_penalty_range", "penalty_alpha", "guidance_scale", "mirostat_mode",
                "mirostat_tau", "mirostat_eta", "prompt_lookup_num_tokens", "max_tokens_second",
                "do_sample", "dynamic_temperature", "temperature_last", "auto_max_new_tokens",
                "ban_eos_token", "add_bos_token", "enable_thinking", "preserve_thinking",
                "skip_special_tokens", "static_cache", "sampler_priority", "negative_prompt",
                "grammar_string",
                # chat-only fields (instruction template, character, continue)
                "mode", "instruction_template", "instruction_template_str", "character", "context",
                "greeting", "user_bio", "chat_template_str", "chat_instruct_command", "continue_",
                "name1", "name2",
            )
        },
        "custom_token_bans": Param(convert=token_string),
        "dry_sequence_breakers": Param(convert=breakers_text),
        # SillyTavern's, the legacy API's and TabbyAPI's names for the same fields.
        "max_new_tokens": Param("max_tokens"),
        "max_length": Param("max_tokens"),
        "stopping_strings": Param("stop"),
        "stop_sequence": Param("stop"),
        "sampler_seed": Param("seed"),
        "rep_pen": Param("repetition_penalty"),
        "repeat_penalty": Param("repetition_penalty"),
        "rep_pen_range": Param("repetition_penalty_range"),
        "typical": Param("typical_p"),
        "tfs_z": Param("tfs"),
        "mirostat": Param("mirostat_mode"),
        "ignore_eos": Param("ban_eos_token"),
        "banned_tokens": Param("custom_token_bans", convert=token_string),
        "min_temp": Param("dynatemp_low"),
        "max_temp": Param("dynatemp_high"),
        "temp_exponent": Param("dynatemp_exponent"),
        "user_name": Param("name1"),
        "bot_name": Param("name2"),
    },
    unsupported={
        "functions": "text-generation-webui rejects 'functions'; use 'tools'",
        "function_call": "text-generation-webui rejects 'function_call'; use 'tool_choice'",
        "response_format": "text-generation-webui has no JSON mode (use 'grammar_string')",
        "audio": "text only",
        "modalities": "text only",
        "web_search_options": "no web search",
        "best_of": "text-generation-webui does not use 'best_of'",
    },
    ignored={
        "metadata", "store", "service_tier", "parallel_tool_calls", "prediction", "verbosity",
        "prompt_cache_key", "prompt_cache_retention", "safety_identifier",
    },
    handled={
        "model", "messages", "prompt", "stream", "stream_options",
        "truncation_length", "max_context_length",
    },
    forward_unknown=True,
)


class Options(BaseModel):
    """``ooba`` backend options."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    context_length: int | None = Field(
        default=None, ge=1, description="the loaded model's context in tokens, sent as truncation_length"
    )
    check_context: bool = Field(
        default=True, description="count the prompt first and answer 400 where the server would cut it"
    )
    stop_generation_on_disconnect: bool = Field(
        default=True, description="call /v1/internal/stop-generation (global!) when a client goes away"
    )
    forward_unknown: bool = Field(default=True, description="send fields Rosetta does not know as they are")


class ModelOptions(BaseModel):
    """``ooba`` per-model options."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    context_length: int | None = Field(default=None, ge=1, description="overrides the backend's context_length")


def truncation_length(req: Request, options: Options, warnings: list[str]) -> int | None:
    """The ``truncation_length`` to send: the client's (or route's) value capped by the
    configured context, else the configured context. None when neither is known."""
    configured = model_option(req, "context_length") or options.context_length
    asked = req.get("truncation_length", req.get("max_context_length"))
    if asked is not None and configured is not None:
        return int(clamp("truncation_length", asked, (1, configured), warnings))
    if asked is not None:
        return int(asked)
    if configured is None:
        warnings.append(
            "context_length is not configured for this text-generation-webui backend; "
            "the server may cut the prompt from the front"
        )
    return configured


def check_n(req: Request) -> None:
    """``n`` > 1 only where the server honours it: non-stream completions."""
    if req.n <= 1:
        return
    if req.operation == "chat":
        raise Unsupported("text-generation-webui ignores 'n' for chat completions", param="n")
    if req.stream:
        raise Unsupported("text-generation-webui supports 'n' > 1 only without streaming", param="n")


class Ooba(OpenAI):
    """text-generation-webui (oobabooga), OpenAI-style endpoints plus its samplers."""

    name = "ooba"
    framing = "sse"
    params = params
    Options = Options  # type: ignore[assignment]  # openai.py infers its own Options type here
    ModelOptions = ModelOptions
    default_url = "http://127.0.0.1:5000"

    def root(self) -> str:
        """The server's root URL (config may give it with or without ``/v1``)."""
        return server_root(self.backend.url or self.default_url, "/v1")

    def auth_headers(self) -> dict[str, str]:
        """Config headers plus the API key the way the server compares it."""
        headers = dict(self.backend.headers)
        if self.backend.api_key:
            headers["Authorization"] = f"Bearer {self.backend.api_key}"
        return headers

    def build_request(self, req: Request) -> Upstream:
        check_n(req)
        native, warnings = native_fields(self.params, req, forward_unknown=self.options.forward_unknown)
        limit = truncation_length(req, self.options, warnings)
        if limit is not None:
            native["truncation_length"] = limit
        return openai_style_request(req, native, self.root() + "/v1", self.auth_headers(), warnings)

    async def prepare(self, transport: Transport, req: Request) -> Request:
        """Refuse a prompt the server would cut: it keeps only ``truncation_length -
        max_new_tokens`` prompt tokens."""
        if not self.options.check_context:
            return req
        native = self.build_request(req).json
        limit = native.get("truncation_length")
        if limit is None:
            return req
        prompt = await self.rendered_prompt(transport, req, native)
        if prompt is None:
            return req
        counted = await self.post(transport, "/v1/internal/token-count", {"text": prompt})
        tokens = int(counted.get("length", 0)) if isinstance(counted, dict) else 0
        answer = int(native.get("max_tokens") or DEFAULT_MAX_NEW_TOKENS)
        if tokens + answer > limit:
            raise ContextLengthExceeded(
                f"The prompt is {tokens} tokens and {answer} are reserved for the answer, more than the "
                f"{limit}-token context of this model (text-generation-webui would cut the prompt)",
                param="messages" if req.operation == "chat" else "prompt",
            )
        return req

    async def rendered_prompt(self, transport: Transport, req: Request, native: dict[str, Any]) -> str | None:
        """The text the model will read: the prompt, or the chat as the server renders it."""
        if req.operation != "chat":
            return req.prompt
        body = {k: v for k, v in native.items() if k not in ("stream", "stream_options")}
        body["truncation_length"] = NO_TRUNCATION
        rendered = await self.post(transport, "/v1/internal/chat-prompt", body)
        prompt = rendered.get("prompt") if isinstance(rendered, dict) else None
        return prompt if isinstance(prompt, str) else None

    async def post(self, transport: Transport, path: str, body: Any) -> Any:
        """POST a JSON body to one of the server's internal endpoints and read the answer."""
        headers = {"Content-Type": "application/json", **self.auth_headers()}
        response = await transport.send(Upstream("POST", self.root() + path, headers, body))
        try:
            data = await response.read()
            if response.status >= 400:
                raise self.parse_error(response.status, data, response.headers)
            return parse_json(data, self.name)
        finally:
            response.close()

    async def exchange(self, transport: Transport, upstream: Upstream, req: Request) -> AsyncIterator[Event]:
        """The plain exchange, plus the server's stop call when the client leaves mid-answer."""
        # an async generator: closed here so its connection is released before the stop call
        inner = cast(AsyncGenerator[Event, None], super().exchange(transport, upstream, req))
        unfinished = set(range(max(req.n, 1)))
        gone = False
        try:
            async for event in inner:
                if isinstance(event, Finish):
                    unfinished.discard(event.index)
                yield event
        except (GeneratorExit, asyncio.CancelledError):
            gone = True
            raise
        finally:
            await inner.aclose()
            if gone and unfinished and self.options.stop_generation_on_disconnect:
                await self.stop_generation(transport)

    async def stop_generation(self, transport: Transport) -> None:
        """``POST /v1/internal/stop-generation``; best effort (the client is gone already)."""
        headers = {"Content-Type": "application/json", **self.auth_headers()}
        with contextlib.suppress(UpstreamError):
            response = await transport.send(Upstream("POST", self.root() + "/v1/internal/stop-generation", headers, {}))
            response.close()

    async def list_models(self, transport: Any) -> list[str]:
        data = await get_json(transport, self.root() + "/v1/internal/model/info", self.auth_headers())
        name = data.get("model_name") if isinstance(data, dict) else None
        # "None" is how the server spells "no model loaded"
        return [name] if isinstance(name, str) and name and name != "None" else []

    def parse_error(self, status: int, body: bytes, headers: Any) -> UpstreamError:
        error = super().parse_error(status, body, headers)
        if status == 400 and b"Invalid host header" in body:
            return upstream_error(
                status,
                "Invalid host header: text-generation-webui accepts only a localhost Host unless started "
                "with --listen (or set this backend's headers: {Host: localhost})",
                backend_type=self.name,
            )
        return error
