"""``llamacpp``: llama.cpp ``llama-server``'s native ``POST /completion``.

One prompt string in: chats are rendered by the instruct template (:class:`TemplatedText`);
with ``template: auto`` that is the model's own Jinja template from ``GET /props``. Facts
(shared/protocols/local.md §3, the README of tools/server, and the captures of
``llama-server`` 0c1e57098 in tests/transcripts/llamacpp/):

- The stream is SSE ``data: {...}`` per token and has no ``[DONE]``: it ends with an event
  whose ``"stop": true`` carries ``stop_type`` (``eos``/``word``/``limit``; older builds the
  booleans ``stopped_*``), ``stopping_word``, ``tokens_evaluated``/``tokens_predicted`` and
  ``timings``. Stop words are never in ``content``. An error after the stream started is an
  SSE line with the field name ``error`` (not ``data``).
- ``n_predict`` defaults to infinity; it is sent whenever the client set a limit (or the
  backend option ``default_max_tokens``). ``cache_prompt`` is sent true.
- The context: ``/props`` gives ``default_generation_settings.n_ctx`` (per slot) and
  ``/tokenize`` counts exactly. A prompt that does not fit with its ``max_tokens`` is a 400
  ``context_length_exceeded`` before anything is generated (older builds would shift the
  prompt silently; newer ones answer ``exceed_context_size_error``, mapped to the same code).
- Closing the connection cancels the generation: the base ``exchange`` does just that.
- ``n`` > 1: newer builds have ``n_cmpl``, but no capture shows its answer; refused.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterable, Mapping

import orjson
from pydantic import Field

from .base import Frame, Translator, Transport, Upstream, parse_json, retry_after_of
from .errors import InvalidRequest, Unsupported, UpstreamError, upstream_error
from .events import Event, Finish, FinishReason, Meta, Progress, TextDelta, Usage
from .params import Param, ParamMap
from .request import Request
from .samplers import alias_conflicts, canonical_last
from .stops import stop_list
from .textgen import TemplatedText, TextModelOptions, TextOptions


def sequence_breakers(value: Any) -> list[str]:
    """DRY sequence breakers as the JSON array llama.cpp demands (SillyTavern sends a string)."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise InvalidRequest("'dry_sequence_breakers' must be a list of strings", param="dry_sequence_breakers") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest("'dry_sequence_breakers' must be a list of strings", param="dry_sequence_breakers")
    return value


def logit_bias(value: Any) -> Any:
    """OpenAI's ``{"token id": bias}`` as llama.cpp's ``[[id, bias], ...]``; -100 (OpenAI's
    "ban") becomes ``false``, llama.cpp's exact ban. A list is llama.cpp's form already."""
    if isinstance(value, Mapping):
        return [[int(k), False if v <= -100 else v] for k, v in value.items()]
    return value


# OpenAI fields, llama.cpp's own names and SillyTavern's (renamed to llama.cpp's).
params = ParamMap(
    {
        "temperature": Param(), "top_p": Param(), "presence_penalty": Param(), "frequency_penalty": Param(),
        "seed": Param(), "logit_bias": Param(convert=logit_bias),
        "top_k": Param(), "min_p": Param(), "typical_p": Param(), "repeat_penalty": Param(), "repeat_last_n": Param(),
        "mirostat": Param(), "mirostat_tau": Param(), "mirostat_eta": Param(),
        "dry_multiplier": Param(), "dry_base": Param(), "dry_allowed_length": Param(), "dry_penalty_last_n": Param(),
        "dry_sequence_breakers": Param(convert=sequence_breakers),
        "xtc_probability": Param(), "xtc_threshold": Param(), "dynatemp_range": Param(), "dynatemp_exponent": Param(),
        "top_n_sigma": Param(), "adaptive_target": Param(), "adaptive_decay": Param(),
        "grammar": Param(), "json_schema": Param(), "ignore_eos": Param(), "n_probs": Param(range=(0, None)),
        "min_keep": Param(), "n_keep": Param(), "samplers": Param(), "cache_prompt": Param(), "n_indent": Param(),
        "t_max_predict_ms": Param(), "id_slot": Param(), "n_cache_reuse": Param(),
        # SillyTavern's names
        "typical": Param("typical_p"), "repetition_penalty": Param("repeat_penalty"), "rep_pen": Param("repeat_penalty"),
        "repetition_penalty_range": Param("repeat_last_n"), "rep_pen_range": Param("repeat_last_n"),
        "mirostat_mode": Param("mirostat"), "sampler_seed": Param("seed"), "grammar_string": Param("grammar"),
        "ban_eos_token": Param("ignore_eos"),
    },
    unsupported={
        "n": "llama.cpp's /completion gives one choice per request here",
        "best_of": "llama.cpp's /completion gives one choice per request",
        "echo": "llama.cpp's /completion does not echo the prompt",
        "suffix": "fill-in-the-middle is llama.cpp's /infill, not /completion",
        "tools": "llama.cpp's /completion has no tool calling",
        "functions": "llama.cpp's /completion has no tool calling",
        "function_call": "llama.cpp's /completion has no tool calling",
        "tool_choice": "llama.cpp's /completion has no tool calling",
        "audio": "llama.cpp answers with text only",
        "modalities": "llama.cpp answers with text only",
        "prediction": "llama.cpp's /completion has no predicted outputs",
        "web_search_options": "llama.cpp has no web search",
    },
    ignored={
        "user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key",
        "prompt_cache_retention", "parallel_tool_calls", "verbosity", "reasoning_effort",
    },
    handled={
        "model", "messages", "prompt", "stream", "stream_options", "stop", "stopping_strings",
        "max_tokens", "max_completion_tokens", "max_new_tokens", "n_predict", "num_predict",
        "logprobs", "top_logprobs", "response_format",
    },
)

STOP_TYPES: dict[str, FinishReason] = {"eos": "stop", "word": "stop", "limit": "length"}
MAX_TOKENS_NAMES = ("max_new_tokens", "n_predict", "num_predict")  # SillyTavern sends them all
PROPS_SECONDS = 60.0  # /props is asked again after this long (the server may load another model)


class Options(TextOptions):
    """``llamacpp`` backend options."""

    # n_predict when the client sets no limit (None: llama.cpp's own, unlimited).
    default_max_tokens: int | None = Field(default=None, ge=1)
    # Reuse the slot's KV cache for a common prompt prefix.
    cache_prompt: bool = True
    # Count the prompt with /tokenize and refuse one that cannot fit (one call per request).
    check_context: bool = True


class ModelOptions(TextModelOptions):
    """``llamacpp`` per-model options (the instruct template settings)."""


def requested_max_tokens(req: Request) -> int | None:
    """The client's limit: OpenAI's, else one of SillyTavern's names for it."""
    if req.max_tokens is not None:
        return req.max_tokens
    for name in MAX_TOKENS_NAMES:
        value = req.body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def native_prompt(req: Request) -> Any:
    """The prompt: the rendered/validated string, or one token-id array (llama.cpp takes it)."""
    if req.prompt is not None:
        return req.prompt
    prompt = req.body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str) or (isinstance(prompt, list) and all(isinstance(t, int) for t in prompt)):
        return prompt
    raise Unsupported("llama.cpp answers one prompt per request: several prompts are not supported", param="prompt")


def response_format(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """``json_schema`` for OpenAI's response_format (llama.cpp turns it into a grammar)."""
    value = body.get("response_format") or {}
    match value.get("type"):
        case "json_object":
            return {"type": "object"}
        case "json_schema":
            return (value.get("json_schema") or {}).get("schema") or {"type": "object"}
        case _:
            return None


def requested_logprobs(req: Request) -> int | None:
    """How many alternatives per token a chat asked for (``None``: no logprobs). Legacy
    completions want ``text_offset`` and per-position dicts, which cannot be rebuilt exactly."""
    if req.body.get("logprobs") in (None, False, 0):
        return None
    if req.operation == "completion":
        raise Unsupported("llama.cpp's token probabilities cannot be given in the legacy completions shape", param="logprobs")
    return int(req.body.get("top_logprobs") or 0)


def chat_logprobs(entries: Any, top: int) -> dict[str, Any] | None:
    """``completion_probabilities`` in OpenAI's chat shape, ``top`` alternatives kept."""
    if not entries:
        return None

    def token(e: Mapping[str, Any]) -> dict[str, Any]:
        return {"token": e.get("token", ""), "logprob": e.get("logprob"), "bytes": e.get("bytes")}

    return {"content": [{**token(e), "top_logprobs": [token(t) for t in (e.get("top_logprobs") or [])[:top]]} for e in entries]}


def finish_reason(result: Mapping[str, Any]) -> FinishReason:
    """The OpenAI finish reason of a final result: ``stop_type``, else the older booleans."""
    stop_type = result.get("stop_type")
    if isinstance(stop_type, str) and stop_type in STOP_TYPES:
        return STOP_TYPES[stop_type]
    if result.get("stopped_limit"):
        return "length"
    return "stop"


def usage_of(result: Mapping[str, Any]) -> Usage:
    """Usage of a final result (``timings.cache_n``: prompt tokens served from the KV cache)."""
    timings = result.get("timings")
    cached = timings.get("cache_n") if isinstance(timings, Mapping) else None
    return Usage(
        int(result.get("tokens_evaluated") or 0),
        int(result.get("tokens_predicted") or 0),
        cached_tokens=int(cached) if isinstance(cached, int) else None,
    )


def error_of(error: Any, status: int | None = None, retry_after: float | None = None) -> UpstreamError:
    """The UpstreamError for llama.cpp's ``{"code", "message", "type"}`` error object (``status``:
    the HTTP status it came with; mid-stream, its ``code``; ``retry_after``: the response's
    ``Retry-After``)."""
    if not isinstance(error, Mapping):
        return UpstreamError(f"upstream llamacpp failed: {error}", kind="5xx")
    message = str(error.get("message") or "")[:500]
    code = error.get("code")
    if status is None:
        status = code if isinstance(code, int) and code >= 400 else 500
    if error.get("type") == "exceed_context_size_error":
        return upstream_error(status, message, backend_type="llamacpp", code="context_length_exceeded")
    return upstream_error(status, message, backend_type="llamacpp", retry_after=retry_after)


class LlamaCpp(TemplatedText, Translator):
    """llama.cpp server's native completion endpoint."""

    name = "llamacpp"
    framing = "sse"
    params = params
    accepts = frozenset({"completion"})
    multi_prompt = True  # a token-id array is a prompt llama.cpp takes as it is
    default_url = "http://127.0.0.1:8080"
    Options = Options
    ModelOptions = ModelOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # GET /props and when it was asked (transport clock); per instance, refreshed
        self._props: dict[str, Any] | None = None
        self._props_at = 0.0

    @property
    def base(self) -> str:
        """The server root (a configured ``…/v1`` is cut: the native API is at the root)."""
        url = (self.backend.url or self.default_url).rstrip("/")
        return url[:-3] if url.endswith("/v1") else url

    def headers(self) -> dict[str, str]:
        """JSON plus the ``--api-key`` as a Bearer token."""
        headers = {"Content-Type": "application/json", **self.backend.headers}
        if self.backend.api_key:
            headers["Authorization"] = f"Bearer {self.backend.api_key}"
        return headers

    async def call(self, transport: Transport, method: str, path: str, body: Any = None) -> Any:
        """One small JSON call; None when the server answers with an error status."""
        response = await transport.send(Upstream(method, self.base + path, self.headers(), body))
        try:
            if response.status >= 400:
                return None
            return parse_json(await response.read(), self.name)
        finally:
            response.close()

    # --- what the server knows (TemplatedText asks these) -----------------------------------
    async def props(self, transport: Transport) -> dict[str, Any]:
        """``GET /props``, kept for a minute."""
        if self._props is None or transport.now() - self._props_at > PROPS_SECONDS:
            data = await self.call(transport, "GET", "/props")
            self._props = data if isinstance(data, dict) else {}
            self._props_at = transport.now()
        return self._props

    async def chat_template(self, transport: Transport) -> tuple[str, str, str] | None:
        """The model's Jinja chat template with its BOS and EOS tokens (``template: auto``)."""
        props = await self.props(transport)
        template = props.get("chat_template")
        if not isinstance(template, str) or not template:
            return None
        return template, str(props.get("bos_token") or ""), str(props.get("eos_token") or "")

    async def context_limit(self, transport: Transport) -> int | None:
        """Tokens per slot: ``default_generation_settings.n_ctx``."""
        settings = (await self.props(transport)).get("default_generation_settings")
        value = settings.get("n_ctx") if isinstance(settings, dict) else None
        return value if isinstance(value, int) and value > 0 else None

    async def count_tokens(self, transport: Transport, text: str) -> int | None:
        """Exact tokens of a prompt as ``/completion`` will see it (BOS added when the model
        wants one, special tokens parsed)."""
        data = await self.call(transport, "POST", "/tokenize", {"content": text, "add_special": True})
        tokens = data.get("tokens") if isinstance(data, dict) else None
        return len(tokens) if isinstance(tokens, list) else None

    # --- to the backend -------------------------------------------------------------------
    def completion_budget(self, req: Request) -> int:
        """``n_predict`` as it will be sent: the client's limit under any of its names, else
        the backend's default."""
        return requested_max_tokens(req) or self.options.default_max_tokens or 0

    async def prepare(self, transport: Transport, req: Request) -> Request:
        """Render the chat (template), then refuse a prompt the slot's context cannot hold
        with its ``max_tokens`` (the shared rule, :meth:`TemplatedText.check_context`)."""
        req = await super().prepare(transport, req)
        if self.options.check_context:
            await self.check_context(transport, req)
        return req

    def build_request(self, req: Request) -> Upstream:
        warnings = [*self.template_warnings(req), *alias_conflicts(self.params, req.body)]
        native, more = self.params.apply(canonical_last(self.params, req.body), openai_fields=frozenset())
        warnings += more
        native = {"prompt": native_prompt(req), **native, "stream": req.stream}
        max_tokens = requested_max_tokens(req) or self.options.default_max_tokens
        if max_tokens is not None:
            native["n_predict"] = max_tokens
        stops = stop_list(req.stop, req.get("stopping_strings"))
        if stops:
            native["stop"] = list(stops)
        native.setdefault("cache_prompt", self.options.cache_prompt)
        schema = response_format(req.body)
        if schema is not None:
            native["json_schema"] = schema
            native.pop("grammar", None)  # the README: don't send both
        top = requested_logprobs(req)
        if top is not None:
            native["n_probs"] = max(top, 1)  # n_probs 0 gives no probabilities at all
        return Upstream("POST", self.base + "/completion", self.headers(), native, req.stream, tuple(warnings))

    # --- from the backend -----------------------------------------------------------------
    def parse_response(self, body: Any, req: Request) -> Iterable[Event]:
        if not isinstance(body, dict) or "content" not in body:
            raise UpstreamError("upstream llamacpp answer has no 'content'", kind="malformed")
        yield Meta(model=body.get("model"))
        top = requested_logprobs(req)
        logprobs = chat_logprobs(body.get("completion_probabilities"), top) if top is not None else None
        if body["content"] or logprobs:
            yield TextDelta(str(body["content"]), 0, logprobs)
        yield Finish(finish_reason(body))
        yield usage_of(body)

    async def parse_stream(self, frames: AsyncIterator[Frame], req: Request) -> AsyncIterator[Event]:
        top = requested_logprobs(req)
        async for frame in frames:
            match frame.event:
                case "error":  # `error: {...}` lines, when the decoder passes them on
                    raise error_of(self.decode(frame.data))
                case None | "message":
                    data = self.decode(frame.data)
                case _:  # llama.cpp names no other events
                    continue
            match data:
                case {"error": error}:
                    raise error_of(error)
                case {"prompt_progress": dict(progress)} if not data.get("content") and not data.get("stop"):
                    yield Progress(detail={"prompt_processed": progress.get("processed"), "prompt_total": progress.get("total")})
                case {"stop": bool(stop)}:
                    logprobs = chat_logprobs(data.get("completion_probabilities"), top) if top is not None else None
                    if data.get("content") or logprobs:
                        yield TextDelta(str(data.get("content") or ""), 0, logprobs)
                    if stop:  # the final result: how it ended and what it cost
                        yield Meta(model=data.get("model"))
                        yield Finish(finish_reason(data))
                        yield usage_of(data)
                        return
                case _:
                    raise UpstreamError("upstream llamacpp sent a stream event without 'stop'", kind="malformed")
        raise UpstreamError("upstream llamacpp stream ended before its final event", kind="cut_mid_stream")

    @staticmethod
    def decode(data: str) -> Any:
        """One event's JSON."""
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError("upstream llamacpp sent a malformed stream event", kind="malformed") from None

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
        """llama.cpp errors are ``{"error": {"code", "message", "type"}}``."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            return super().parse_error(status, body, headers)
        return error_of(error, status, retry_after_of(headers))

    async def list_models(self, transport: Transport) -> list[str]:
        """The loaded model's id(s) from ``GET /v1/models``."""
        data = await self.call(transport, "GET", "/v1/models")
        models = data.get("data") if isinstance(data, dict) else None
        return [str(m["id"]) for m in models or () if isinstance(m, dict) and "id" in m]
