"""``ollama``: Ollama's native API, ``/api/chat`` for chat and ``/api/generate`` for completions.

Facts (ollama/ollama ``docs/api.md``, ``docs/api/streaming.mdx``, ``docs/api/errors.mdx``,
``docs/openapi.yaml``, ``api/types.go``; shared/protocols/local.md §4):

- Streams are NDJSON: one JSON object per line, no ``[DONE]``; the last object has
  ``"done": true`` with ``done_reason`` (``stop``, ``length``; ``load``/``unload`` only for
  empty requests) and the counts ``prompt_eval_count`` / ``eval_count``. ``stream`` defaults to
  true, so it is always sent. An error mid-stream is a line ``{"error": "..."}``; an error
  before it is an HTTP status with the same body.
- ``/api/generate`` applies the model's template unless ``raw`` is true. An OpenAI completion
  prompt is a raw continuation, so ``raw: true`` is the default (the model option ``raw:
  false`` lets Ollama wrap the prompt as one user turn). A ``suffix`` (fill-in-the-middle)
  only works through the template, so it turns ``raw`` off.
- Ollama cuts a prompt longer than ``num_ctx`` from the front without a word. So ``num_ctx`` is
  always sent when known (client ``num_ctx`` > model option > backend option > the model's
  own context length from ``/api/show``, capped by ``auto_num_ctx_max``), and ``truncate:
  false`` asks servers that know it (``api/types.go`` ChatRequest.Truncate) to answer a prompt
  that does not fit with an error instead; older servers ignore the unknown field.
- Tool calls come back with ``arguments`` as an object (serialized to a JSON string here) and
  usually without an id (one is made from the request id); ``done_reason`` stays ``stop``, so
  a call seen means finish ``tool_calls``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, AsyncIterator, Iterable, Mapping

import orjson
from pydantic import BaseModel, ConfigDict, Field

from .base import Frame, Translator, Transport, Upstream, get_json, retry_after_of
from .errors import Unsupported, UpstreamError, upstream_error
from .events import Event, Meta
from .ollama_answers import AnswerState
from .ollama_chat import chat_messages, chat_tools
from .params import Param, ParamMap
from .request import Request
from .stops import stop_list

# OpenAI names and the SillyTavern / Ollama-native extras; all land in ``options``.
params = ParamMap(
    {
        "temperature": Param("options.temperature"),
        "top_p": Param("options.top_p"),
        "presence_penalty": Param("options.presence_penalty"),
        "frequency_penalty": Param("options.frequency_penalty"),
        "seed": Param("options.seed"),
        "sampler_seed": Param("options.seed"),
        "top_k": Param("options.top_k"),
        "min_p": Param("options.min_p"),
        "typical_p": Param("options.typical_p"),
        "typical": Param("options.typical_p"),
        "repeat_penalty": Param("options.repeat_penalty"),
        "repetition_penalty": Param("options.repeat_penalty"),
        "rep_pen": Param("options.repeat_penalty"),
        "repeat_last_n": Param("options.repeat_last_n"),
        "repetition_penalty_range": Param("options.repeat_last_n"),
        "rep_pen_range": Param("options.repeat_last_n"),
        "mirostat": Param("options.mirostat"),
        "mirostat_mode": Param("options.mirostat"),
        "mirostat_tau": Param("options.mirostat_tau"),
        "mirostat_eta": Param("options.mirostat_eta"),
        "tfs_z": Param("options.tfs_z"),
        "num_keep": Param("options.num_keep"),
        "penalize_newline": Param("options.penalize_newline"),
        "num_ctx": Param("options.num_ctx", range=(1, None)),
        "keep_alive": Param(),
        "think": Param(),
    },
    unsupported={
        "n": "Ollama answers one choice per request",
        "best_of": "Ollama answers one choice per request",
        "logit_bias": "Ollama has no logit bias",
        "echo": "Ollama does not echo the prompt",
        "audio": "Ollama has no audio output",
        "modalities": "Ollama answers with text only",
        "prediction": "Ollama has no predicted outputs",
        "web_search_options": "Ollama's chat API has no web search",
    },
    ignored={
        "user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key",
        "prompt_cache_retention", "parallel_tool_calls", "verbosity",
    },
    handled={
        "model", "messages", "prompt", "suffix", "stream", "stream_options", "stop",
        "stopping_strings", "max_tokens", "max_completion_tokens", "max_new_tokens",
        "n_predict", "num_predict", "tools", "tool_choice", "functions", "function_call",
        "response_format", "reasoning_effort", "logprobs", "top_logprobs",
    },
)


# OpenAI reasoning_effort → Ollama ``think``, as Ollama's own /v1 does (openai/openai.go
# thinkFromReasoningEffort): levels clamp to Ollama's scale.
THINK: dict[str, bool | str] = {
    "none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
    "max": "max", "xhigh": "max",
}
CONTEXT_WORDS = ("context length", "context size", "context window", "exceeds the context")


class Options(BaseModel):
    """``ollama`` backend options."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    num_ctx: int | None = Field(None, ge=1, description="context size for every model (else per model or auto)")
    auto_num_ctx_max: int = Field(32768, ge=1, description="cap on the context size taken from /api/show")
    keep_alive: str | int | None = Field(None, description="how long Ollama keeps the model loaded ('5m', -1, 0)")
    truncate: bool = Field(False, description="let Ollama cut over-long prompts from the front (true) or refuse them")


class ModelOptions(BaseModel):
    """``ollama`` per-model options."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    num_ctx: int | None = Field(None, ge=1)
    keep_alive: str | int | None = None
    raw: bool = Field(True, description="completions: send the prompt verbatim (false: Ollama applies the template)")


def is_alias(name: str) -> bool:
    """Whether ``name`` is another server's name for one of Ollama's options (``rep_pen``)."""
    spec = params.mapped.get(name)
    return spec is not None and spec.to is not None and spec.to.rsplit(".", 1)[-1] != name


def own_names_last(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with Ollama's own option names after their aliases: ``ParamMap.apply`` writes
    in order, so the own name wins when a client (SillyTavern) sends several."""
    return {**{k: v for k, v in body.items() if is_alias(k)}, **{k: v for k, v in body.items() if not is_alias(k)}}


def alias_conflicts(body: Mapping[str, Any]) -> list[str]:
    """Warnings for names of one option that carry different values (reported, not guessed)."""
    by_target: dict[str, list[tuple[str, Any]]] = {}
    for name, value in own_names_last(body).items():
        spec = params.mapped.get(name)
        if spec is not None and value is not None:
            by_target.setdefault(spec.to or name, []).append((name, value))
    return [
        f"{' and '.join(n for n, _ in pairs)} disagree; sent {target}={pairs[-1][1]!r} (from {pairs[-1][0]})"
        for target, pairs in by_target.items()
        if any(v != pairs[0][1] for _, v in pairs[1:])
    ]


def model_options(req: Request) -> ModelOptions:
    """The request's model options as this translator's model (config gives a ModelOptions)."""
    if isinstance(req.options, ModelOptions):
        return req.options
    return ModelOptions.model_validate(dict(req.options or {}))


def response_format(body: Mapping[str, Any]) -> Any:
    """Ollama's ``format``: ``"json"`` for json_object, the schema for json_schema."""
    value = body.get("response_format") or {}
    match value.get("type"):
        case "json_object":
            return "json"
        case "json_schema":
            return (value.get("json_schema") or {}).get("schema") or "json"
        case _:
            return None


def logprobs_fields(req: Request) -> dict[str, Any]:
    """``logprobs``/``top_logprobs`` for a chat that asks for them. Legacy completions want
    ``text_offset`` and per-position dicts, which cannot be rebuilt exactly: refused."""
    asked = req.body.get("logprobs")
    if asked in (None, False, 0):
        return {}
    if req.operation == "completion":
        raise Unsupported("Ollama's token probabilities cannot be given in the legacy completions shape", param="logprobs")
    out: dict[str, Any] = {"logprobs": True}
    if req.body.get("top_logprobs"):
        out["top_logprobs"] = req.body["top_logprobs"]
    return out


def is_context_error(message: str) -> bool:
    """Whether an Ollama error message says the prompt does not fit the context."""
    lowered = message.lower()
    return any(word in lowered for word in CONTEXT_WORDS)


class Ollama(Translator):
    """Ollama's native chat and generate endpoints."""

    name = "ollama"
    framing = "ndjson"
    params = params
    Options = Options
    ModelOptions = ModelOptions
    default_url = "http://127.0.0.1:11434"

    def __init__(self, backend: Any) -> None:
        super().__init__(backend)
        # model → context length from /api/show; per instance, not global
        self._context: dict[str, int] = {}

    def _url(self, path: str) -> str:
        # the server root, also when config gave the OpenAI-compatible ``/v1`` or ``/api`` URL
        root = (self.backend.url or self.default_url).rstrip("/")
        for suffix in ("/v1", "/api"):
            if root.endswith(suffix):
                root = root[: -len(suffix)]
        return root + path

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.backend.headers}
        if self.backend.api_key:  # Ollama Cloud and authenticating reverse proxies
            headers["Authorization"] = f"Bearer {self.backend.api_key}"
        return headers

    # --- to the backend -------------------------------------------------------------------
    async def prepare(self, transport: Transport, req: Request) -> Request:
        """Fill in ``num_ctx`` from ``/api/show`` when neither the client nor config set it."""
        options = model_options(req)
        if req.body.get("num_ctx") is not None or options.num_ctx or self.options.num_ctx:
            return req
        found = self._context.get(req.upstream_model)
        if found is None:  # unknown sizes are asked again: the model may be pulled meanwhile
            found = await self.show_context(transport, req.upstream_model)
            if found is None:
                return req
            self._context[req.upstream_model] = found
        return replace(req, options={**options.model_dump(), "num_ctx": min(found, self.options.auto_num_ctx_max)})

    async def show_context(self, transport: Transport, model: str) -> int | None:
        """The model's trained context length (``model_info["<arch>.context_length"]``)."""
        response = await transport.send(Upstream("POST", self._url("/api/show"), self._headers(), {"model": model}))
        try:
            if response.status >= 400:
                return None
            data = orjson.loads(await response.read())
        except orjson.JSONDecodeError:
            return None
        finally:
            response.close()
        info = data.get("model_info") if isinstance(data, dict) else None
        if not isinstance(info, dict):
            return None
        arch = info.get("general.architecture")
        value = info.get(f"{arch}.context_length")
        return int(value) if isinstance(value, (int, float)) and value > 0 else None

    def build_request(self, req: Request) -> Upstream:
        native, warnings = self.params.apply(own_names_last(req.body), openai_fields=frozenset())
        warnings[:0] = alias_conflicts(req.body)
        options = model_options(req)
        native = {"model": req.upstream_model, **native, "stream": req.stream}
        opts: dict[str, Any] = native.pop("options", {})
        limit = req.max_tokens or req.get("max_new_tokens") or req.get("n_predict") or req.get("num_predict")
        if limit:
            opts["num_predict"] = limit
        stops = stop_list(req.stop, req.get("stopping_strings"))
        if stops:
            opts["stop"] = list(stops)
        num_ctx = opts.get("num_ctx") or options.num_ctx or self.options.num_ctx
        if num_ctx:
            opts["num_ctx"] = num_ctx
        else:
            warnings.append("the model's context size is unknown: Ollama may cut a long prompt from the front")
        if opts:
            native["options"] = opts
        keep_alive = native.get("keep_alive", options.keep_alive if options.keep_alive is not None else self.options.keep_alive)
        if keep_alive is not None:
            native["keep_alive"] = keep_alive
        if not self.options.truncate:
            native["truncate"] = False
        fmt = response_format(req.body)
        if fmt is not None:
            native["format"] = fmt
        effort = req.get("reasoning_effort")
        if effort is not None and "think" not in native:
            if effort not in THINK:
                raise Unsupported(f"reasoning_effort {effort!r} has no Ollama equivalent", param="reasoning_effort")
            native["think"] = THINK[effort]
        native.update(logprobs_fields(req))
        if req.operation == "chat":
            native["messages"] = chat_messages(req.messages)
            tools = chat_tools(req.body)
            if tools:
                native["tools"] = tools
            path = "/api/chat"
        else:
            native["prompt"] = req.prompt if req.prompt is not None else req.body.get("prompt")
            suffix = req.get("suffix")
            if suffix:
                native["suffix"] = suffix
            native["raw"] = options.raw and not suffix
            path = "/api/generate"
        return Upstream("POST", self._url(path), self._headers(), native, req.stream, tuple(warnings))

    # --- from the backend -----------------------------------------------------------------
    def parse_response(self, body: Any, req: Request) -> Iterable[Event]:
        match body:
            case {"error": error}:
                raise self.stream_error(error)
            case {"done": _}:
                yield Meta(model=body.get("model"))
                state = AnswerState(req)
                yield from state.chunk(body)
                if not state.finished:
                    raise UpstreamError("upstream ollama answer is not done", kind="malformed")
            case _:
                raise UpstreamError("upstream ollama answer has no 'done' field", kind="malformed")

    async def parse_stream(self, frames: AsyncIterator[Frame], req: Request) -> AsyncIterator[Event]:
        state = AnswerState(req)
        async for frame in frames:
            try:
                chunk = orjson.loads(frame.data)
            except orjson.JSONDecodeError:
                raise UpstreamError("upstream ollama sent a line that is not JSON", kind="malformed") from None
            match chunk:
                case {"error": error}:
                    raise self.stream_error(error)
                case {"done": bool()}:
                    if not state.started:
                        yield Meta(model=chunk.get("model"))
                    for event in state.chunk(chunk):
                        yield event
                    if state.finished:
                        return
                case _:
                    raise UpstreamError("upstream ollama sent an object without 'done'", kind="malformed")
        raise UpstreamError("upstream ollama stream ended before its 'done' line", kind="cut_mid_stream")

    def stream_error(self, error: Any) -> UpstreamError:
        """The error for an ``{"error": ...}`` object (mid-stream or in a 200 body)."""
        message = error if isinstance(error, str) else orjson.dumps(error).decode()
        if is_context_error(message):
            return UpstreamError(
                f"upstream ollama: {message}", kind="4xx", status=400, type="invalid_request_error",
                code="context_length_exceeded",
            )
        return UpstreamError(f"upstream ollama failed: {message}", kind="5xx")

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
        """Ollama errors are ``{"error": "message"}`` (``docs/api/errors.mdx``)."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        error = data.get("error") if isinstance(data, dict) else None
        message = error if isinstance(error, str) else body.decode("utf-8", "replace").strip()[:500]
        if is_context_error(message):
            return upstream_error(400, message, backend_type=self.name, code="context_length_exceeded")
        code = "model_not_found" if status == 404 and "not found" in message else None
        return upstream_error(status, message, backend_type=self.name, code=code, retry_after=retry_after_of(headers))

    async def list_models(self, transport: Transport) -> list[str]:
        """Local models from ``GET /api/tags``."""
        data = await get_json(transport, self._url("/api/tags"), self._headers())
        models = data.get("models") if isinstance(data, dict) else None
        return [str(m.get("model") or m["name"]) for m in models or () if isinstance(m, dict) and ("name" in m or "model" in m)]


