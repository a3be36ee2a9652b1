"""The load generator's client (bench/load.py): request bodies as the SDKs send them, and one
request read to its end with its timings (time to first token, gaps between reads) and checks
(status, end-of-stream marker, event count)."""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

# The first event carrying generated text: a non-empty "content" (OpenAI chat), "text" (legacy
# completions, Anthropic text_delta) or "token" (KoboldCpp); role chunks and the empty text of
# Anthropic's content_block_start do not match.
FIRST_TEXT = re.compile(rb'"(?:content|text|token)":\s*"(?!")')
PATHS = {
    ("openai", False): "/v1/chat/completions",
    ("openai", True): "/v1/chat/completions",
    ("anthropic", False): "/v1/messages",
    ("anthropic", True): "/v1/messages",
    ("kobold", False): "/api/v1/generate",
    ("kobold", True): "/api/extra/generate/stream",
}
OK_MARKERS = {"openai": b'"choices"', "anthropic": b'"content"', "kobold": b'"results"'}


def request_body(protocol: str, model: str, tokens: int, stream: bool) -> bytes:
    """The JSON body the client sends."""
    if protocol == "openai":
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi"}],
            "max_tokens": tokens,
            "temperature": 0.2,
        }
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
    elif protocol == "anthropic":
        body = {"model": model, "max_tokens": tokens, "system": "You are terse.",
                "messages": [{"role": "user", "content": "Say hi"}], "temperature": 0.2}
        if stream:
            body["stream"] = True
    else:
        body = {"prompt": "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n",
                "max_length": tokens, "max_context_length": 2048, "temperature": 0.2, "rep_pen": 1.1,
                "stop_sequence": ["<|im_end|>"], "trim_stop": True}
    return orjson.dumps(body)


def request_headers(protocol: str) -> dict[str, str]:
    """Headers as the protocol's SDK sends them (no real key: loopback fakes only)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if protocol == "openai":
        headers["Authorization"] = "Bearer sk-bench-not-a-key"
    elif protocol == "anthropic":
        headers["x-api-key"] = "sk-ant-bench-not-a-key"
        headers["anthropic-version"] = "2023-06-01"
    return headers


def end_ok(protocol: str, last_event: bytes) -> bool:
    """Whether the last event is the protocol's proper end of stream."""
    if protocol == "openai":
        return last_event.startswith(b"data: [DONE]")
    if protocol == "anthropic":
        return b"message_stop" in last_event
    return b'"finish_reason": "null"' not in last_event and b"finish_reason" in last_event


@dataclass(slots=True)
class Outcome:
    """One request as the client saw it."""

    started: float
    ended: float = 0.0
    ok: bool = False
    error: str | None = None
    ttft: float | None = None
    events: int = 0
    max_gap: float | None = None
    overhead: float | None = None
    gaps: list[float] = field(default_factory=list)


class Client:
    """Sends one kind of request and measures it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.protocol = args.protocol
        self.stream = args.stream
        self.tokens = args.tokens
        self.expect_events = args.expect_events
        self.url = args.url.rstrip("/") + PATHS[(args.protocol, args.stream)]
        self.body = request_body(args.protocol, args.model, args.tokens, args.stream)
        self.headers = request_headers(args.protocol)
        self.keep_gaps = args.mode != "closed" or args.keep_gaps
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, enable_cleanup_closed=False)
        self.session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_connect=30)
        )
        self.opened: asyncio.Event | None = None

    async def close(self) -> None:
        await self.session.close()

    async def one(self, on_open: Any = None) -> Outcome:
        """One request, read to its end; ``on_open`` is called when a 200 status arrives (a
        gateway may hold back the role chunk until the first token)."""
        out = Outcome(time.perf_counter())
        try:
            async with self.session.post(self.url, data=self.body, headers=self.headers) as response:
                if response.status != 200:
                    text = (await response.read())[:200]
                    out.error = f"HTTP {response.status}: {text.decode(errors='replace')}"
                    return out
                if on_open is not None:
                    on_open()
                overhead = response.headers.get("x-rosetta-overhead-ms")
                if overhead:
                    out.overhead = float(overhead) / 1000
                if not self.stream:
                    data = await response.read()
                    out.ended = time.perf_counter()
                    out.ttft = out.ended - out.started
                    if OK_MARKERS[self.protocol] in data:
                        out.ok = True
                    else:
                        out.error = "answer without the expected content"
                    return out
                await self._read_stream(response, out)
        except asyncio.CancelledError:
            out.error = "cancelled"
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            out.error = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            if not out.ended:
                out.ended = time.perf_counter()
        return out

    async def _read_stream(self, response: aiohttp.ClientResponse, out: Outcome) -> None:
        buffer = b""
        last_event = b""
        last_time = 0.0
        events = 0
        gaps = out.gaps
        max_gap = 0.0
        first_seen = False
        async for chunk in response.content.iter_any():
            now = time.perf_counter()
            buffer += chunk
            if b"\n\n" not in buffer:
                continue
            parts = buffer.split(b"\n\n")
            buffer = parts.pop()
            got = 0
            for part in parts:
                part = part.lstrip(b"\r\n")
                if not part or part[0] == 58:  # ":" comment (keep-alive)
                    continue
                got += 1
                last_event = part
            if not got:
                continue
            events += got
            if first_seen:
                gap = now - last_time
                if gap > max_gap:
                    max_gap = gap
                if self.keep_gaps:
                    gaps.append(gap)
            else:
                for part in parts:
                    if FIRST_TEXT.search(part):
                        first_seen = True
                        out.ttft = now - out.started
                        break
            last_time = now
        if buffer.strip():  # a final event with no blank line (Kobold closes the socket)
            events += 1
            last_event = buffer.strip()
        out.ended = time.perf_counter()
        out.events = events
        out.max_gap = max_gap if first_seen else None
        if not first_seen:
            out.error = "stream without the first token"
        elif not end_ok(self.protocol, last_event):
            out.error = f"stream did not end properly (last event {last_event[:80]!r})"
        elif events < self.expect_events:
            out.error = f"stream had {events} events, expected at least {self.expect_events}"
        else:
            out.ok = True
