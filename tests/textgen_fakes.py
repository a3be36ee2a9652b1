"""Test doubles for the ``ooba``, ``tabby`` and ``mancer`` translator tests: a Transport that
answers by URL path with recorded bytes and remembers what it was sent, and helpers to turn
captures and SillyTavern request logs into inputs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncGenerator, AsyncIterator, Iterable, Mapping, cast

import orjson

from proxy.decoders import decode_all
from translators.base import Frame, Upstream
from translators.events import Event
from translators.request import Request


class FakeResponse:
    """An UpstreamResponse over fixed bytes; ``hold`` keeps the stream open after them until
    the reader goes away (a generation still running)."""

    def __init__(self, status: int, body: bytes, *, hold: bool = False) -> None:
        self.status = status
        self.headers: Mapping[str, str] = {}
        self._body = body
        self._hold = hold
        self.closed = False

    async def read(self) -> bytes:
        if self._hold:
            await asyncio.Event().wait()
        return self._body

    async def frames(self, framing: str) -> AsyncIterator[Frame]:
        for frame in decode_all(self._body, framing):
            yield frame
        if self._hold:
            await asyncio.Event().wait()

    def close(self) -> None:
        self.closed = True


class FakeTransport:
    """Answers by URL path (``{path: (status, body)}`` or a FakeResponse); records requests."""

    def __init__(self, answers: Mapping[str, tuple[int, bytes] | FakeResponse]) -> None:
        self.answers = dict(answers)
        self.sent: list[Upstream] = []
        self.responses: list[FakeResponse] = []

    async def send(self, upstream: Upstream) -> FakeResponse:
        self.sent.append(upstream)
        path = "/" + upstream.url.split("://", 1)[1].split("/", 1)[1]
        answer = self.answers[path]
        response = answer if isinstance(answer, FakeResponse) else FakeResponse(*answer)
        self.responses.append(response)
        return response

    async def sleep(self, seconds: float) -> None:
        return None

    def now(self) -> float:
        return 0.0

    def paths(self) -> list[str]:
        """The paths requested, in order."""
        return ["/" + u.url.split("://", 1)[1].split("/", 1)[1] for u in self.sent]


def chat(body: dict[str, Any], *, upstream: str = "m", stream: bool = False, options: Any = None, n: int = 1) -> Request:
    """A chat Request as the pipeline makes it from ``body``."""
    full = {"model": "public", **body, **({"stream": True} if stream else {})}
    return Request(
        id="req-1",
        operation="chat",
        model="public",
        upstream_model=upstream,
        body=full,
        stream=stream,
        messages=tuple(body["messages"]),
        stop=_stops(full),
        max_tokens=full.get("max_completion_tokens") or full.get("max_tokens"),
        n=n,
        options=options if options is not None else {},
    )


def completion(body: dict[str, Any], *, upstream: str = "m", stream: bool = False, options: Any = None, n: int = 1) -> Request:
    """A completion Request as the pipeline makes it from ``body``."""
    full = {"model": "public", **body, **({"stream": True} if stream else {})}
    return Request(
        id="req-1",
        operation="completion",
        model="public",
        upstream_model=upstream,
        body=full,
        stream=stream,
        prompt=body.get("prompt") if isinstance(body.get("prompt"), str) else None,
        stop=_stops(full),
        max_tokens=full.get("max_tokens"),
        n=n,
        options=options if options is not None else {},
    )


def _stops(body: Mapping[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def http_body(path: Path) -> bytes:
    """The JSON body of a captured ``.request.http``."""
    return path.read_bytes().split(b"\r\n\r\n", 1)[1]


def captured_request(path: Path) -> Any:
    """The JSON a captured ``.request.http`` sent."""
    return orjson.loads(http_body(path))


def jsonl(path: Path) -> list[dict[str, Any]]:
    """The requests of a SillyTavern capture log (one JSON object per line)."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    """Every event of an async stream."""
    return [event async for event in events]


async def frames_of(raw: bytes, piece: int | None) -> AsyncIterator[Frame]:
    """``raw`` decoded as SSE fed in pieces of ``piece`` bytes, as an async iterator."""
    for frame in decode_all(raw, "sse", piece):
        yield frame


def pieces() -> Iterable[int | None]:
    """The split sizes every stream test runs with (None: all at once)."""
    return (1, 2, 7, 4096, None)


def generator(events: AsyncIterator[Event]) -> AsyncGenerator[Event, None]:
    """``Translator.exchange`` is typed as an iterator but is an async generator (the proxy
    ``aclose()``s it when the client goes away); tests do the same."""
    return cast(AsyncGenerator[Event, None], events)
