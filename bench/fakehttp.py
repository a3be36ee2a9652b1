"""The HTTP/1.x plumbing of the fake upstream (bench/upstream.py): a raw asyncio protocol that
parses requests (Content-Length bodies, keep-alive, pipelining) and hands them to a server
object, with the counters ``/bench/stats`` reports and the small helpers streaming answers use.
A raw protocol rather than aiohttp so the fake costs the benchmark little CPU and can answer
exactly as the real servers do (HTTP/1.0 close-delimited streams included)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Protocol

import orjson


class Server(Protocol):
    """What a connection needs from the server behind it."""

    stats: "Stats"

    def dispatch(self, conn: "Connection", method: str, target: str, headers: dict[str, str], body: bytes, keep_alive: bool) -> None:
        """Answer one request (write the response through ``conn``)."""


class Stats:
    """Counters for ``/bench/stats``."""

    def __init__(self) -> None:
        self.requests = 0
        self.streams_open = 0
        self.streams_open_peak = 0
        self.streams_done = 0
        self.streams_dropped = 0
        self.connections_open = 0
        self.connections_peak = 0
        self.aborts = 0

    def as_json(self) -> bytes:
        return orjson.dumps(self.__dict__)


class Connection(asyncio.Protocol):
    """One client connection: parses HTTP/1.1 requests (Content-Length bodies, keep-alive,
    pipelining) and answers them one at a time."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.processing = False
        self.task: asyncio.Task[None] | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed = False

    # asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        stats = self.server.stats
        stats.connections_open += 1
        stats.connections_peak = max(stats.connections_peak, stats.connections_open)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.stats.connections_open -= 1
        self.writable.set()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self.process()

    # requests ---------------------------------------------------------------------------
    def process(self) -> None:
        """Answer every complete request in the buffer (the next waits while one streams)."""
        self.processing = True
        try:
            self._process()
        finally:
            self.processing = False

    def _process(self) -> None:
        while not self.busy and not self.closed:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536:
                    self.fail(431, b"headers too large")
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            try:
                method, target, version = head[0].split(" ", 2)
            except ValueError:
                self.fail(400, b"bad request line")
                return
            headers: dict[str, str] = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if "chunked" in headers.get("transfer-encoding", ""):
                self.fail(501, b"chunked request bodies are not supported by the fake")
                return
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            self.server.stats.requests += 1
            self.server.dispatch(self, method, target, headers, body, keep_alive)

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def finish(self, keep_alive: bool) -> None:
        """The current response is complete: close, or go on with the next request."""
        if not keep_alive:
            if self.transport is not None:
                self.transport.close()
            self.closed = True
            return
        self.busy = False
        if self.buffer and not self.processing:
            self.process()

    def respond(self, status: bytes, content_type: bytes, body: bytes, keep_alive: bool, extra: bytes = b"") -> None:
        """A whole Content-Length response."""
        version = b"HTTP/1.1 " if keep_alive else b"HTTP/1.0 "
        self.write(
            version + status + b"\r\n" + extra + b"content-type: " + content_type
            + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.finish(keep_alive)

    def fail(self, status: int, message: bytes) -> None:
        body = orjson.dumps({"error": {"message": message.decode(), "type": "invalid_request_error", "param": None, "code": None}})
        self.respond(str(status).encode() + b" Error", b"application/json", body, False)

    def stream(self, run: Callable[["Connection"], Any]) -> None:
        """Run a streaming answer as a task; the connection takes no other request meanwhile."""
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(run(self))


def chunked(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


async def pace(started: float, due_after: float, conn: Connection | None = None) -> None:
    """Wait until ``started + due_after`` (absolute, so lateness does not accumulate); also wait
    while the client's socket buffer is full."""
    if due_after > 0:
        wait = started + due_after - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
    if conn is not None:
        if conn.closed:
            raise asyncio.CancelledError()
        if not conn.writable.is_set():
            await conn.writable.wait()


def run_now(coro: Any) -> None:
    """Run a coroutine that never suspends to completion without a task (the fast path for
    answers with no delay)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    raise RuntimeError("the coroutine suspended")
