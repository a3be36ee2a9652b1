"""``kobold``: KoboldCpp's native API and KoboldAI United/Classic (``/api/v1``).

One prompt string in (chats are rendered by the instruct template, :class:`TemplatedText`),
``POST /api/v1/generate`` or, on KoboldCpp, the SSE stream ``/api/extra/generate/stream``.
What the servers get wrong is done here instead (facts: ../shared/protocols/local.md §1-2 and
the KoboldCpp 1.76 captures; the answers are read in :mod:`translators.kobold_wire`):

- stop strings go with ``trim_stop: false`` so the output shows which one ended it, and are cut
  by Rosetta (United never trims; with trimming a stop hit cannot be told from a length cut);
- the finish reason: KoboldCpp says ``length`` for stop-string hits and aborts; ``length`` is
  ours only when ``max_length`` tokens were produced, counted with ``/api/extra/tokencount``;
- the context: a prompt that cannot fit is a 400, never left-truncated by the server;
- cancel: each request carries its own ``genkey``; a client that goes away gets the generation
  aborted with ``/api/extra/abort`` and that key (a key-less abort can stop another user's).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any, AsyncIterator, ClassVar, Iterable, Literal, Mapping

import orjson
from pydantic import Field

from .base import Frame, Framing, Translator, Transport, Upstream, parse_json, retry_after_of
from .errors import ContextLengthExceeded, InvalidRequest, Unsupported, UpstreamError, upstream_error
from .events import Event, Finish, TextDelta, Usage
from .kobold_params import (
    STOP_LIMIT,
    UNITED_FIELDS,
    UNITED_MAX_LENGTH,
    UNITED_MAX_N,
    ServerKind,
    full_prompt,
    genkey_for,
    params,
    request_stops,
    requested_max_length,
    resolve_aliases,
)
from .kobold_wire import Generation, detail_message, finish_reason, generations_of, server_usage, stream_text
from .params import clamp
from .request import OPENAI_FIELDS, Request
from .textgen import TemplatedText, TextModelOptions, TextOptions


class Options(TextOptions):
    """``kobold`` backend options."""

    # What the server is; "auto" asks /api/extra/version once (KoboldCpp answers, United 404s).
    server: Literal["auto", "koboldcpp", "koboldai"] = "auto"
    # Stream with KoboldCpp's SSE endpoint; off: whole answers (framed as a stream by the proxy).
    stream: bool = True
    # Abort the generation with its genkey when the client goes away.
    abort_on_disconnect: bool = True
    # Exact usage (and finish reasons) with /api/extra/tokencount: two small calls per answer.
    count_usage: bool = True
    # max_length when the client sets none (reduced to the room the context has left).
    default_max_tokens: int = Field(default=512, ge=1)


class ModelOptions(TextModelOptions):
    """``kobold`` per-model options: the instruct template settings."""


class Kobold(TemplatedText, Translator):
    """KoboldCpp (native API, SSE streaming, abort) and KoboldAI United/Classic."""

    name = "kobold"
    framing: ClassVar[Framing] = "sse"
    params = params
    accepts = frozenset({"completion"})
    default_url = "http://127.0.0.1:5001"
    Options = Options
    ModelOptions = ModelOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What the server is and its context size: asked once, then kept.
        self.kind: ServerKind | None = None if self.options.server == "auto" else self.options.server
        self.version: str | None = None
        self.context: int | None = None

    # --- the server -----------------------------------------------------------------------
    @property
    def base(self) -> str:
        """The server root: a configured ``…/api`` or ``…/api/v1`` (SillyTavern style) is cut."""
        url = (self.backend.url or self.default_url).rstrip("/")
        for suffix in ("/api/v1", "/api"):
            if url.endswith(suffix):
                return url[: -len(suffix)]
        return url

    def headers(self, *, json: bool = True) -> dict[str, str]:
        """Request headers: KoboldCpp's ``--password`` goes as a Bearer token."""
        headers = {"Content-Type": "application/json"} if json else {}
        headers.update(self.backend.headers)
        if self.backend.api_key:
            headers["Authorization"] = f"Bearer {self.backend.api_key}"
        return headers

    async def call(self, transport: Transport, method: str, path: str, body: Any = None) -> Any:
        """One small JSON call; None when the server answers with an error status."""
        response = await transport.send(Upstream(method, self.base + path, self.headers(json=body is not None), body))
        try:
            if response.status >= 400:
                return None
            return parse_json(await response.read(), self.name)
        finally:
            response.close()

    async def detect(self, transport: Transport) -> ServerKind:
        """KoboldCpp or KoboldAI, asked once with ``/api/extra/version``."""
        if self.kind is None:
            response = await transport.send(Upstream("GET", self.base + "/api/extra/version", self.headers(json=False)))
            try:
                if response.status >= 400 and response.status not in (404, 405):
                    # a server in trouble, not an answer: ask again next time
                    raise self.parse_error(response.status, await response.read(), response.headers)
                data = None
                if response.status < 400:
                    with contextlib.suppress(UpstreamError):  # a web UI page is not KoboldCpp either
                        data = parse_json(await response.read(), self.name)
            finally:
                response.close()
            if isinstance(data, dict) and data.get("result") == "KoboldCpp":
                self.kind, self.version = "koboldcpp", str(data.get("version") or "") or None
            else:  # KoboldAI United/Classic has no /api/extra
                self.kind = "koboldai"
        return self.kind

    async def context_limit(self, transport: Transport) -> int | None:
        """The loaded context size: KoboldCpp's true one (its ``/api/v1/config`` value is capped
        at the Horde default of 4096), else the configured one. Asked once."""
        if self.context is None:
            paths = ["/api/v1/config/max_context_length"]
            if await self.detect(transport) == "koboldcpp":
                paths.insert(0, "/api/extra/true_max_context_length")
            for path in paths:
                data = await self.call(transport, "GET", path)
                value = data.get("value") if isinstance(data, dict) else None
                if isinstance(value, int) and value > 0:
                    self.context = value
                    break
        return self.context

    async def count_tokens(self, transport: Transport, text: str) -> int | None:
        """Tokens of ``text`` with the loaded model's tokenizer (KoboldCpp only; the count
        includes the BOS token the server adds, as the prompt's does)."""
        if await self.detect(transport) != "koboldcpp":
            return None
        data = await self.call(transport, "POST", "/api/extra/tokencount", {"prompt": text})
        value = data.get("value") if isinstance(data, dict) else None
        return value if isinstance(value, int) and value >= 0 else None

    # --- to the backend -------------------------------------------------------------------
    async def prepare(self, transport: Transport, req: Request) -> Request:
        """Render the chat (template), learn what the server is, and fit the context: a prompt
        that cannot fit with its max_length is a 400; with no client limit the default is
        reduced to the room left."""
        req = await super().prepare(transport, req)
        await self.detect(transport)
        requested = requested_max_length(req)
        max_length = requested or self.options.default_max_tokens
        context = await self.context_limit(transport)
        prompt_tokens = await self.count_tokens(transport, full_prompt(req)) if context else None
        if context is not None and prompt_tokens is not None:
            if requested is None:
                max_length = max(min(max_length, context - prompt_tokens), 1)
            if prompt_tokens + max_length > context:
                raise ContextLengthExceeded(
                    f"This model's maximum context length is {context} tokens. However, you requested "
                    f"{prompt_tokens + max_length} tokens ({prompt_tokens} in the prompt, {max_length} for the "
                    "completion). Please reduce the length of the messages or the completion.",
                    param="messages" if req.operation == "chat" else "prompt",
                )
        return replace(req, max_tokens=max_length)

    def build_request(self, req: Request) -> Upstream:
        kind: ServerKind = self.kind or "koboldcpp"
        body, warnings = resolve_aliases(req.body)
        warnings = [*self.template_warnings(req), *warnings]
        native, more = self.params.apply(body, openai_fields=OPENAI_FIELDS)
        warnings += more
        prompt = req.prompt if req.prompt is not None else req.body.get("prompt")
        if not isinstance(prompt, str):
            raise InvalidRequest("KoboldAI takes one text prompt", param="prompt")
        native["prompt"] = prompt
        max_length = requested_max_length(req) or self.options.default_max_tokens
        if kind == "koboldai":
            max_length = clamp("max_tokens", max_length, (1, UNITED_MAX_LENGTH), warnings)
        native["max_length"] = max_length
        if self.context is not None:
            native["max_context_length"] = self.context
        stops = request_stops(req)
        if stops:
            native["stop_sequence"] = list(stops[: STOP_LIMIT[kind]])
            if len(stops) > STOP_LIMIT[kind]:
                warnings.append(f"the server takes {STOP_LIMIT[kind]} stop strings; Rosetta cuts at the others")
        if req.n > 1:
            if kind == "koboldcpp":  # it answers n=2 with one result (captured with 1.76)
                raise Unsupported("KoboldCpp generates one choice per request; 'n' must be 1", param="n")
            native["n"] = clamp("n", req.n, (1, UNITED_MAX_N), warnings)
        if kind == "koboldcpp":
            native["trim_stop"] = False  # Rosetta cuts, and must see which stop ended the text
            native["genkey"] = genkey_for(req)
        else:
            dropped = sorted(k for k in native if k not in UNITED_FIELDS)
            if dropped:
                warnings.append("KoboldAI United rejects these fields, not sent: " + ", ".join(dropped))
                native = {k: v for k, v in native.items() if k in UNITED_FIELDS}
        stream = req.stream and kind == "koboldcpp" and self.options.stream
        path = "/api/extra/generate/stream" if stream else "/api/v1/generate"
        return Upstream("POST", self.base + path, self.headers(), native, stream, tuple(warnings))

    # --- from the backend -----------------------------------------------------------------
    def parse_response(self, body: Any, req: Request) -> Iterable[Event]:
        gens = generations_of(body, request_stops(req))
        for gen in gens:
            if gen.sent:
                yield TextDelta(gen.sent, gen.index)
            yield Finish(finish_reason(gen, req.max_tokens, gen.completion_tokens), gen.index)
        usage = server_usage(gens)
        if usage is not None:
            yield usage

    async def parse_stream(self, frames: AsyncIterator[Frame], req: Request) -> AsyncIterator[Event]:
        gen = Generation()
        async for event in stream_text(frames, request_stops(req), gen):
            yield event
        yield Finish(finish_reason(gen, req.max_tokens, None), gen.index)

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        message, code = detail_message(data)
        if message is None:
            return super().parse_error(status, body, headers)
        return upstream_error(status, message[:500], backend_type=self.name, code=code, retry_after=retry_after_of(headers))

    # --- the exchange ---------------------------------------------------------------------
    async def exchange(self, transport: Transport, upstream: Upstream, req: Request) -> AsyncIterator[Event]:
        """Send, yield the text, then settle finish reasons and usage with exact counts. A
        generation that did not end (the client went away: the proxy ``aclose()``s us or
        cancels the task) is aborted with its genkey."""
        genkey = upstream.json.get("genkey") if isinstance(upstream.json, dict) else None
        ended = False
        response = None
        try:
            try:
                response = await transport.send(upstream)
            except UpstreamError:
                ended = True  # nothing is running upstream
                raise
            if response.status >= 400:
                ended = True
                raise self.parse_error(response.status, await response.read(), response.headers)
            if upstream.stream:
                gen = Generation()
                async with contextlib.aclosing(stream_text(response.frames(self.framing), request_stops(req), gen)) as events:
                    async for event in events:
                        yield event
                gens = [gen]
                known = upstream.json.get("stop_sequence") or () if isinstance(upstream.json, dict) else ()
                if gen.server_reason is None and gen.stop not in known:
                    # Rosetta cut at a stop string the server was not given (beyond its limit):
                    # it would go on generating for nobody
                    await self.abort(transport, genkey)
            else:
                answer = await response.read()
                ended = True
                gens = generations_of(parse_json(answer, self.name), request_stops(req))
                for gen in gens:
                    if gen.sent:
                        yield TextDelta(gen.sent, gen.index)
            ended = True
            response.close()
            for event in await self.settle(transport, req, gens):
                yield event
        finally:
            if response is not None:
                response.close()
            if not ended and self.options.abort_on_disconnect:
                await self.abort(transport, genkey)

    async def settle(self, transport: Transport, req: Request, gens: list[Generation]) -> list[Event]:
        """Finish events and usage: the server's counts where it gives them, else counted with
        its tokenizer as (prompt + output) − prompt, so the BOS and merges at the join are right.
        A count that fails leaves usage to the proxy's estimate; the answer itself stands."""
        usage = server_usage(gens)
        counts: list[int | None] = [g.completion_tokens for g in gens]
        if usage is None and self.options.count_usage and self.kind == "koboldcpp":
            with contextlib.suppress(UpstreamError):
                counted = await self.count_completions(transport, req, gens)
                if counted is not None:
                    usage, counts = counted
        events: list[Event] = [
            Finish(finish_reason(g, req.max_tokens, c), g.index) for g, c in zip(gens, counts, strict=True)
        ]
        if usage is not None:
            events.append(usage)
        return events

    async def count_completions(
        self, transport: Transport, req: Request, gens: list[Generation]
    ) -> tuple[Usage, list[int | None]] | None:
        """Usage and per-choice completion tokens counted by the server's tokenizer, or None."""
        prompt = full_prompt(req)
        prompt_tokens = await self.count_tokens(transport, prompt)
        if prompt_tokens is None:
            return None
        counts: list[int | None] = []
        for gen in gens:
            total = await self.count_tokens(transport, prompt + gen.raw)
            if total is None:
                return None
            counts.append(max(total - prompt_tokens, 0))
        return Usage(prompt_tokens, sum(c or 0 for c in counts)), counts

    async def abort(self, transport: Transport, genkey: str | None) -> None:
        """Stop the generation with this genkey (KoboldCpp only: United has no abort)."""
        if not genkey or self.kind != "koboldcpp":
            return
        with contextlib.suppress(UpstreamError):
            await self.call(transport, "POST", "/api/extra/abort", {"genkey": genkey})

    async def list_models(self, transport: Transport) -> list[str]:
        """The loaded model (``/api/v1/model``); United says "ReadOnly" when none is loaded."""
        data = await self.call(transport, "GET", "/api/v1/model")
        name = data.get("result") if isinstance(data, dict) else None
        return [name] if isinstance(name, str) and name and name != "ReadOnly" else []
