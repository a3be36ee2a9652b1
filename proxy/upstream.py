"""HTTP to the backends: the :class:`Transport` the translators are given.

One ``aiohttp.ClientSession`` per process. Transport failures become ``UpstreamError`` with a
kind (``timeout`` → 504, ``refused`` → 502, ``cut_mid_stream``) so every caller maps them the
same way. Stream bodies are decoded here, so translators only see frames.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Mapping
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

from translators.base import Frame, Framing, Upstream
from translators.errors import UpstreamError

from .config import TimeoutConfig
from .decoders import NDJSONDecoder, SSEDecoder


def _shown(url: str) -> str:
    """``url`` as a client may see it: no query string and no ``user:password@`` (either may
    hold a credential)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # aiohttp refused it too: say nothing of it
        return "an invalid URL"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _failure(exc: BaseException, backend: str, url: str) -> UpstreamError:
    """The UpstreamError for a transport exception (the URL without its credentials)."""
    where = _shown(url)
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamError(f"upstream {backend} timed out ({where})", kind="timeout", status=504, type="timeout_error", code="upstream_timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError(f"upstream {backend} refused the connection ({where})", kind="refused", status=502, code="upstream_unreachable")
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
        return UpstreamError(f"upstream {backend} closed the connection mid-answer", kind="cut_mid_stream", status=502)
    return UpstreamError(f"upstream {backend} failed: {type(exc).__name__}", kind="refused", status=502)


class HttpResponse:
    """An upstream response (implements ``translators.base.UpstreamResponse``)."""

    __slots__ = ("_response", "status", "headers", "_backend", "_url", "waited")

    def __init__(self, response: aiohttp.ClientResponse, backend: str, url: str) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self._backend = backend
        self._url = url
        self.waited = 0.0

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise _failure(exc, self._backend, self._url) from None

    async def frames(self, framing: Framing) -> AsyncIterator[Frame]:
        decoder: SSEDecoder | NDJSONDecoder = SSEDecoder() if framing == "sse" else NDJSONDecoder()
        content = self._response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                for frame in decoder.feed(chunk):
                    yield frame
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise _failure(exc, self._backend, self._url) from None
        for frame in decoder.close():
            yield frame

    def close(self) -> None:
        self._response.close()


class HttpTransport:
    """Sends one backend's requests with its timeouts."""

    def __init__(self, session: aiohttp.ClientSession, backend: str, timeout: TimeoutConfig) -> None:
        self.session = session
        self.backend = backend
        self.timeout = aiohttp.ClientTimeout(total=timeout.total, connect=timeout.connect, sock_read=timeout.read)

    async def send(self, upstream: Upstream) -> HttpResponse:
        data = orjson.dumps(upstream.json) if upstream.json is not None else None
        headers = dict(upstream.headers)
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        try:
            response = await self.session.request(
                upstream.method, upstream.url, data=data, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise _failure(exc, self.backend, upstream.url) from None
        return HttpResponse(response, self.backend, upstream.url)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def now(self) -> float:
        return asyncio.get_running_loop().time()
