"""Helpers for the ``kobold`` translator tests: captures of real KoboldCpp 1.76 and SillyTavern
requests (tests/transcripts/kobold/), requests built from them, and a fake transport replaying them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncIterator, Mapping
from urllib.parse import urlsplit

import orjson

from proxy.decoders import decode_all
from translators.base import Backend, Frame, Framing, Upstream
from translators.events import Event
from translators.kobold import Kobold
from translators.request import Request

HERE = Path(__file__).parent / "transcripts" / "kobold"
URL = "http://127.0.0.1:5001"
CHATML = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


def body_of(name: str) -> bytes:
    """The de-chunked body of a capture."""
    return (HERE / f"{name}.response.body").read_bytes()


def status_of(name: str) -> int:
    """The status code in a capture's wire bytes."""
    return int((HERE / f"{name}.response.wire").read_bytes().split(b" ", 2)[1])


def request_json(name: str) -> Any:
    """The JSON body of a capture's request."""
    return orjson.loads((HERE / f"{name}.request.http").read_bytes().split(b"\r\n\r\n", 1)[1])


def openai_request(body: dict[str, Any], *, rid: str = "cmpl-test0001", **kw: Any) -> Request:
    """A completion Request the way the pipeline builds it from an OpenAI body."""
    stop = body.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    fields: dict[str, Any] = dict(
        id=rid,
        operation="completion",
        model="smol",
        upstream_model="koboldcpp",
        body=body,
        stream=bool(body.get("stream")),
        prompt=body.get("prompt"),
        stop=stops,
        max_tokens=body.get("max_tokens", body.get("max_completion_tokens")),
        n=body.get("n") or 1,
    )
    fields.update(kw)
    return Request(**fields)


def translator(**options: Any) -> Kobold:
    return Kobold(Backend(name="kcpp", type="kobold", url=URL, options=options))


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in events]


class FakeResponse:
    def __init__(self, status: int, body: bytes, piece: int | None = None) -> None:
        self.status = status
        self.headers: Mapping[str, str] = {}
        self.body = body
        self.piece = piece
        self.closed = False

    async def read(self) -> bytes:
        return self.body

    async def frames(self, framing: Framing) -> AsyncIterator[Frame]:
        for frame in decode_all(self.body, framing, self.piece):
            yield frame

    def close(self) -> None:
        self.closed = True


class FakeTransport:
    """Answers by path from a queue per path (the last answer repeats); records what was sent."""

    def __init__(self, routes: dict[str, list[tuple[int, bytes]]], piece: int | None = None) -> None:
        self.routes = routes
        self.piece = piece
        self.sent: list[Upstream] = []
        self.hold: dict[str, asyncio.Event] = {}

    async def send(self, upstream: Upstream) -> FakeResponse:
        self.sent.append(upstream)
        path = urlsplit(upstream.url).path
        if path in self.hold:
            await self.hold[path].wait()
        queue = self.routes.get(path)
        if not queue:
            return FakeResponse(404, body_of("get_unknown_path"))
        status, body = queue.pop(0) if len(queue) > 1 else queue[0]
        return FakeResponse(status, body, self.piece)

    def paths(self) -> list[str]:
        return [urlsplit(u.url).path for u in self.sent]

    async def sleep(self, seconds: float) -> None:
        return None

    def now(self) -> float:
        return 0.0


def capture(name: str) -> tuple[int, bytes]:
    return status_of(name), body_of(name)


def tokencount(value: int) -> tuple[int, bytes]:
    """A tokencount answer in the captured shape ({"value", "ids"}) with a chosen count."""
    return 200, orjson.dumps({"value": value, "ids": list(range(value))})


KOBOLDCPP = {
    "/api/extra/version": [capture("get_api_extra_version")],
    "/api/extra/true_max_context_length": [capture("get_api_extra_true_max_context_length")],
    "/api/extra/abort": [capture("post_api_extra_abort")],
}
