"""One generation request from validated body to OpenAI answer.

parse + validate → route → adapt to what the translator accepts → ``prepare`` →
``build_request`` → ``exchange`` (events) → render (stream or aggregate). The first event is
awaited before any header goes out, so an upstream failure up to then is an ordinary error
response with its mapped status; after it, an error becomes one in-stream error chunk.
"""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import replace
from typing import Any, AsyncGenerator, AsyncIterator, Iterable, Mapping, cast

import orjson
from aiohttp import web

from translators.errors import (
    InvalidRequest,
    RosettaError,
    UpstreamError,
)
from translators.events import Cost, Event, Meta, Progress, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from translators.request import Operation, Request

from .errors import error_response, header_safe, unexpected
from .intake import read_json, request_from_body
from .log import mask, needles_of
from .observe import Observer, RequestRecord
from .render import Aggregate, StreamRenderer, comment
from .router import Route, Router
from .tokens import TokenCounter
from .validate import PARSERS

# The first wait before a retry when the backend gave no Retry-After (doubles each time).
FIRST_RETRY_WAIT = 0.5
# Above this many characters token counting moves off the event loop (~1 ms of tiktoken).
INLINE_COUNT_CHARS = 64 * 1024


class Pipeline:
    """Runs generation requests; one per app."""

    def __init__(
        self,
        router: Router,
        counter: TokenCounter,
        observers: Iterable[Observer],
        *,
        keepalive: float,
        max_body: int,
        log: Any,
        secrets: Iterable[str] = (),
    ) -> None:
        self.router = router
        self.needles = needles_of(secrets)
        self.max_body = max_body
        self.counter = counter
        self.observers = tuple(observers)
        self.keepalive = keepalive
        self.log = log

    async def handle(self, request: web.Request, operation: Operation, record: RequestRecord) -> web.StreamResponse:
        """Answer one request; never raises (errors become OpenAI error responses)."""
        for observer in self.observers:
            observer.started(record)
        try:
            body = await read_json(request, self.max_body)
            return await self._handle(request, body, operation, record)
        except RosettaError as error:
            self._fail(record, error)
            return error_response(self.scrub(error), record.request_id)
        except asyncio.CancelledError:
            record.client_disconnected = True
            record.status = 499
            raise
        except Exception as exc:  # a bug: log it whole here, show the client nothing of it
            failure = unexpected(exc, record.request_id, self.log)
            self._fail(record, failure)
            return error_response(failure, record.request_id)
        finally:
            record.finished_at = time.perf_counter()
            for observer in self.observers:
                observer.finished(record)

    def scrub(self, error: RosettaError) -> RosettaError:
        """``error`` with any configured secret masked in its message: a backend may repeat
        the key it was sent ("Incorrect API key provided: sk-...") and the client must not
        see it."""
        masked = mask(error.message, self.needles)
        if masked == error.message:
            return error
        clean = copy.copy(error)
        clean.message = masked
        return clean

    def _fail(self, record: RequestRecord, error: RosettaError) -> None:
        record.status = error.status
        record.error_type = error.type
        record.error_kind = getattr(error, "kind", None)

    async def _handle(self, request: web.Request, body: Any, operation: Operation, record: RequestRecord) -> web.StreamResponse:
        if not isinstance(body, dict):
            raise InvalidRequest("the request body must be a JSON object", param=None)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            PARSERS[operation](body)  # raises the precise error about 'model'
            raise InvalidRequest("'model' must be a non-empty string", param="model")
        route, req, events, first = await self._open(self.router.resolve(model), body, operation, record)
        try:
            if req.stream:
                return await self._stream(request, route, req, events, first, record)
            return await self._collect(route, req, events, first, record)
        finally:
            await events.aclose()

    def _request(self, route: Route, body: Mapping[str, Any], operation: Operation, record: RequestRecord) -> Request:
        """The validated Request for ``body`` on ``route`` (defaults merged, input adapted)."""
        record.route, record.backend = route.public_name, route.backend.name
        record.backend_type, record.upstream_model = route.backend.type, route.upstream_model
        req = request_from_body(
            body,
            operation,
            request_id=record.request_id,
            model=route.public_name,
            upstream_model=route.upstream_model,
            translator=route.backend.translator,
            options=route.options,
            defaults=route.params,
        )
        record.stream = req.stream
        return req

    async def _open(
        self, route: Route, body: Mapping[str, Any], operation: Operation, record: RequestRecord
    ) -> tuple[Route, Request, AsyncGenerator[Event, None], Event | None]:
        """Start the exchange and wait for its first event (None: it ended without any).

        Nothing has reached the client yet, so a retryable failure (429, 502, 503, 504) is
        tried again on the same backend (``retries``, waiting Retry-After up to
        ``retry_max_wait``), then on the model's ``fallbacks`` in order. The answer's
        ``model`` stays the name the client asked for."""
        public = route.public_name
        candidates = [route, *(self.router.resolve(name) for name in route.fallbacks)]
        failure: UpstreamError | None = None
        for number, candidate in enumerate(candidates):
            if number:
                record.fallbacks += 1
                self.log.info("fallback", request_id=record.request_id, to=candidate.public_name, after=str(failure))
            wait = FIRST_RETRY_WAIT
            for attempt in range(candidate.backend.retries + 1):
                if attempt:
                    record.retries += 1
                    pause = min(failure.retry_after if failure and failure.retry_after is not None else wait, candidate.backend.retry_max_wait)
                    wait *= 2
                    await asyncio.sleep(pause)
                req = replace(self._request(candidate, body, operation, record), model=public)
                events = await self._exchange(candidate, req, record)
                try:
                    first: Event | None = await self._next(events, record)
                except StopAsyncIteration:
                    first = None
                except UpstreamError as error:
                    await events.aclose()
                    if not error.retryable:
                        raise
                    failure = error
                    continue
                return candidate, req, events, first
        assert failure is not None
        raise failure

    async def _exchange(self, route: Route, req: Request, record: RequestRecord) -> AsyncGenerator[Event, None]:
        """``prepare`` and ``build_request`` on the route's translator; the exchange generator."""
        translator = route.backend.translator
        transport = route.backend.transport
        started = time.perf_counter()
        req = await translator.prepare(transport, req)  # may ask the backend (template, context)
        record.upstream_wait += time.perf_counter() - started
        upstream = translator.build_request(req)
        record.warnings = upstream.warnings
        if upstream.warnings:
            self.log.info("request_adjusted", request_id=req.id, warnings=list(upstream.warnings))
        # exchange is an async generator: aclose() runs its cleanup (a cancel call) at once
        return cast(AsyncGenerator[Event, None], translator.exchange(transport, upstream, req))

    async def _next(self, events: AsyncIterator[Event], record: RequestRecord) -> Event:
        started = time.perf_counter()
        try:
            return await events.__anext__()
        finally:
            record.upstream_wait += time.perf_counter() - started

    def _observe(self, record: RequestRecord, event: Event) -> None:
        record.see(event)
        if isinstance(event, (Progress, Cost)):
            for observer in self.observers:
                observer.progress(record, event)

    async def estimate(self, req: Request, text: str) -> Usage:
        """Usage counted with tiktoken, for backends that report none (in a worker thread
        when the texts are large, so one huge prompt does not stall every other stream)."""
        await self.counter.load()

        def count() -> Usage:
            prompt = self.counter.count(req.prompt) if req.prompt is not None else self.counter.count_chat(req.messages)
            return Usage(prompt, self.counter.count(text), source="estimated")

        size = len(text) + (len(req.prompt) if req.prompt is not None else sum(len(str(m.get("content") or "")) for m in req.messages))
        return await asyncio.to_thread(count) if size > INLINE_COUNT_CHARS else count()

    def _headers(self, req: Request, route: Route, record: RequestRecord, meta: Meta | None) -> dict[str, str]:
        headers = {"x-request-id": req.id, "x-rosetta-backend": route.backend.name}
        if record.warnings:
            headers["x-rosetta-warning"] = header_safe("; ".join(record.warnings))
        if meta is not None:
            headers.update({k: header_safe(v) for k, v in meta.headers.items()})
        return headers

    async def _collect(
        self, route: Route, req: Request, events: AsyncIterator[Event], first: Event | None, record: RequestRecord
    ) -> web.Response:
        aggregate = Aggregate()
        meta_headers: dict[str, str] = {}
        event = first
        while event is not None:
            self._observe(record, event)
            if isinstance(event, Meta):
                meta_headers.update(event.headers)
            aggregate.add(event)
            try:
                event = await self._next(events, record)
            except StopAsyncIteration:
                event = None
        usage = aggregate.usage or await self.estimate(req, aggregate.text())
        record.use(usage)
        answer = aggregate.render(req.operation, req.id, req.model, int(time.time()), usage)
        headers = self._headers(req, route, record, Meta(headers=meta_headers))
        headers["x-rosetta-usage-source"] = usage.source
        headers["x-rosetta-overhead-ms"] = f"{(time.perf_counter() - record.started - record.upstream_wait) * 1000:.3f}"
        return web.Response(body=orjson.dumps(answer), content_type="application/json", headers=headers)

    async def _stream(
        self,
        request: web.Request,
        route: Route,
        req: Request,
        events: AsyncIterator[Event],
        first: Event | None,
        record: RequestRecord,
    ) -> web.StreamResponse:
        event = first
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                **self._headers(req, route, record, event if isinstance(event, Meta) else None),
                "x-rosetta-overhead-ms": f"{(time.perf_counter() - record.started - record.upstream_wait) * 1000:.3f}",
            }
        )
        await response.prepare(request)
        renderer = StreamRenderer(req.operation, req.id, req.model, int(time.time()), req.include_usage)
        first = event
        pieces: list[str] = []
        ticker = KeepAlive(response, self.keepalive)
        try:
            while event is not None:
                self._observe(record, event)
                if isinstance(event, (TextDelta, ReasoningDelta)):
                    pieces.append(event.text)
                elif isinstance(event, ToolCallDelta):
                    pieces.append((event.name or "") + event.arguments)
                data = renderer.render(event)
                if isinstance(event, Meta) and event.headers and event is not first:
                    # headers that come after the response started (Horde's worker, known
                    # only at the end) reach streaming clients as an SSE comment
                    data = comment(None, None, event.headers)
                if data:
                    await response.write(data)
                    ticker.last = time.monotonic()
                try:
                    event = await self._next(events, record)
                except StopAsyncIteration:
                    event = None
            usage = renderer.usage or await self.estimate(req, "".join(pieces))
            record.use(usage)
            # the headers left before usage was known: say where the counts came from in-band
            await response.write(comment(None, None, {"x-rosetta-usage-source": usage.source}) + renderer.end(usage))
        except RosettaError as error:
            self._fail(record, error)
            self.log.warning("stream_failed", request_id=req.id, error=error.message, kind=getattr(error, "kind", None))
            await self._write_quietly(response, renderer.error(self.scrub(error)))
        except (ConnectionResetError, ConnectionError):
            record.client_disconnected = True
            record.status = 499
            return response
        except Exception as exc:
            failure = unexpected(exc, req.id, self.log)
            self._fail(record, failure)
            await self._write_quietly(response, renderer.error(failure))
        finally:
            ticker.stop()
        await self._write_quietly(response, None)
        return response

    @staticmethod
    async def _write_quietly(response: web.StreamResponse, data: bytes | None) -> None:
        try:
            if data is None:
                await response.write_eof()
            else:
                await response.write(data)
        except ConnectionError:
            pass


class KeepAlive:
    """Writes an SSE comment whenever the stream has been silent for ``every`` seconds, so
    clients and proxies with idle timeouts keep the connection."""

    __slots__ = ("response", "every", "last", "task")

    def __init__(self, response: web.StreamResponse, every: float) -> None:
        self.response = response
        self.every = every
        self.last = time.monotonic()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(max(self.every - (time.monotonic() - self.last), 0.01))
            if time.monotonic() - self.last >= self.every:
                try:
                    await self.response.write(b": keep-alive\n\n")
                except ConnectionError:
                    return
                self.last = time.monotonic()

    def stop(self) -> None:
        """Stop writing comments."""
        self.task.cancel()


