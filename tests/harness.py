"""Test harness: a raw fake upstream that replays captured wire bytes, and the real Rosetta
app on a loopback port.

``ReplayUpstream`` is a plain asyncio TCP server, so it can send exactly what a real server
sent (HTTP/1.0 close-delimited streams, chunked framing, odd headers) and notice when the
gateway drops the connection. Every request it receives is recorded for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Union

import orjson

TRANSCRIPTS = Path(__file__).parent / "transcripts"


@dataclass
class Received:
    """One request as the fake upstream received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float = 0.0
    # set when the gateway closed the connection before the response was fully sent
    disconnected_at: float | None = None

    @property
    def json(self) -> Any:
        """The body parsed as JSON (None if empty)."""
        return orjson.loads(self.body) if self.body else None


class Writer:
    """What a scripted handler gets to answer with."""

    def __init__(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
        self._writer = writer
        self._reader = reader

    async def send(self, data: bytes) -> None:
        """Write bytes and flush them."""
        self._writer.write(data)
        await self._writer.drain()

    async def wait_closed_by_peer(self, timeout: float = 5.0) -> bool:
        """Wait until the gateway closes the connection; True if it did within ``timeout``."""
        try:
            await asyncio.wait_for(self._reader.read(), timeout)
            return True
        except asyncio.TimeoutError:
            return False


Handler = Callable[[Received, Writer], Awaitable[None]]
Response = Union[bytes, Handler]


def http_response(
    status: int,
    body: bytes | str | Any,
    *,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
    reason: str = "",
) -> bytes:
    """Wire bytes for a simple Content-Length response (``body`` JSON-encoded unless bytes/str)."""
    if isinstance(body, str):
        data = body.encode()
    elif isinstance(body, bytes):
        data = body
    else:
        data = orjson.dumps(body)
    head = [f"HTTP/1.1 {status} {reason or 'X'}", f"Content-Type: {content_type}", f"Content-Length: {len(data)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def sse_body(events: list[Any], *, done: bool = True) -> bytes:
    """An OpenAI-style SSE body from JSON-able events (``[DONE]`` appended)."""
    out = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
    return out + (b"data: [DONE]\n\n" if done else b"")


def stream_response(body: bytes, *, content_type: str = "text/event-stream") -> bytes:
    """A close-delimited stream response (HTTP/1.0 style, like KoboldCpp)."""
    return f"HTTP/1.0 200 OK\r\nContent-Type: {content_type}\r\n\r\n".encode() + body


def capture_wire(path: str | Path) -> bytes:
    """The ``.response.wire`` bytes of a transcript copied from a real server."""
    return Path(path).read_bytes()


def _keeps_alive(head: bytes) -> bool:
    text = head.decode("latin-1").lower()
    if "connection: close" in text:
        return False
    if text.startswith("http/1.0") and "connection: keep-alive" not in text:
        return False
    return "content-length:" in text or "transfer-encoding: chunked" in text


class ReplayUpstream:
    """A fake upstream server on 127.0.0.1.

    ``add(method, path, response)`` queues answers for a route: bytes are sent as they are
    (whole wire responses), a coroutine ``handler(received, writer)`` scripts anything else
    (delays, cuts, waiting for the gateway to hang up). Several answers for one route are
    used in order, the last one repeatedly. Unknown routes get a 404.
    """

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Response]] = {}
        self.received: list[Received] = []
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def add(self, method: str, path: str, *responses: Response) -> None:
        """Queue answers for ``method path`` (the query string is not part of the match)."""
        self.routes.setdefault((method.upper(), path), []).extend(responses)

    def requests(self, path: str | None = None) -> list[Received]:
        """What was received (for ``path`` only, when given)."""
        return [r for r in self.received if path is None or r.path == path]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = b""
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await self._read_chunked(reader)
                path, _, query = target.partition("?")
                received = Received(method, path, query, headers, body, asyncio.get_running_loop().time())
                self.received.append(received)
                queue = self.routes.get((method, path))
                if not queue:
                    writer.write(http_response(404, {"error": f"no route {method} {path}"}, headers={"Connection": "close"}))
                    await writer.drain()
                    return
                response = queue.pop(0) if len(queue) > 1 else queue[0]
                if callable(response):
                    try:
                        await response(received, Writer(writer, reader))
                    except (ConnectionError, asyncio.CancelledError):
                        received.disconnected_at = asyncio.get_running_loop().time()
                    return
                writer.write(response)
                await writer.drain()
                if not _keeps_alive(response.split(b"\r\n\r\n", 1)[0]):
                    return
        except ConnectionError:
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        out = b""
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return out
            out += await reader.readexactly(size)
            await reader.readline()


@contextlib.asynccontextmanager
async def replay_upstream() -> AsyncIterator[ReplayUpstream]:
    """A started :class:`ReplayUpstream`, closed afterwards."""
    upstream = ReplayUpstream()
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.close()


@dataclass
class RunningRosetta:
    """The real app serving on a loopback port."""

    url: str
    app: Any
    logs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        """The ``/v1`` base URL to give an OpenAI client."""
        return self.url + "/v1"


@contextlib.asynccontextmanager
async def run_rosetta(config: dict[str, Any], env: dict[str, str] | None = None) -> AsyncIterator[RunningRosetta]:
    """Start Rosetta from a config mapping (as the YAML would give) on 127.0.0.1:0."""
    from aiohttp import web

    from proxy.app import create_app
    from proxy.config import load_settings

    settings = load_settings(config, env=env or {})
    app = create_app(settings)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield RunningRosetta(f"http://127.0.0.1:{port}", app)
    finally:
        await runner.cleanup()


async def post_then_hang_up(running: RunningRosetta, path: str, body: Any, *, after: bytes | asyncio.Event) -> float:
    """POST ``body`` to Rosetta over a raw socket and close the connection as soon as ``after``
    happens (those bytes arrived, or the event is set); returns the loop time of the hang-up."""
    port = int(running.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = orjson.dumps(body)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    await writer.drain()
    if isinstance(after, asyncio.Event):
        await asyncio.wait_for(after.wait(), 5)
    else:
        received = b""
        while after not in received:
            chunk = await asyncio.wait_for(reader.read(4096), 5)
            if not chunk:
                raise AssertionError(f"Rosetta closed before sending {after!r}: {received!r}")
            received += chunk
    writer.close()
    return asyncio.get_running_loop().time()


async def eventually(check: Callable[[], bool], timeout: float = 1.0) -> bool:
    """Poll ``check`` every 5 ms until it is true or ``timeout`` passes."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True
