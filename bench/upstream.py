"""A fast fake LLM server for benchmarks: OpenAI-compatible, Anthropic Messages and KoboldCpp
native, on one loopback port.

It is a raw asyncio protocol (on uvloop when installed) rather than an aiohttp app, so that it
costs the benchmark as little CPU as possible and can answer exactly the way the real servers
do: OpenAI and Anthropic answer HTTP/1.1 with keep-alive and chunked SSE; KoboldCpp 1.76 answers
HTTP/1.0 and ends every response (a stream included) by closing the socket.

The answer shapes are the real ones:
- OpenAI: the documented ``chat.completion`` / ``chat.completion.chunk`` objects
  (../shared/protocols/cloud.md §1.2-1.3, the same field order as the llama.cpp captures): a role
  chunk, one chunk per token, a finish chunk, a usage chunk with empty ``choices`` when
  ``stream_options.include_usage`` is set, then ``data: [DONE]``.
- Anthropic: the documented event sequence (cloud.md §2.5; tests/transcripts/claude/
  sdk_basic_response.sse): message_start, content_block_start, ping, content_block_delta per
  token, content_block_stop, message_delta, message_stop.
- KoboldCpp: ``{"results": [{"text", "finish_reason"}]}`` and ``event: message`` SSE with
  ``{"token", "finish_reason": "null"}`` events, the last token carrying ``"length"``
  (captures koboldcpp/post_api_v1_generate_minimal, post_api_extra_generate_stream_len).

How much to generate comes from the request, the way a real server decides it: the token
count is ``max_tokens`` (OpenAI, Anthropic) or ``max_length`` (Kobold); timing comes from the
model name, so one server serves every workload: ``<anything>@d50`` waits 50 ms before each
token, ``@h30000`` holds the stream 30 s after the preamble before the first token (an idle
stream). The pacing is absolute (token i is due at start + hold + i * delay), so a late wake-up
shows as one late token, not as drift. Kobold requests carry no model: they use ``--delay-ms``.

``GET /bench/stats`` answers counters (requests, streams open now, streams the client dropped),
which the runner uses to check that a gateway releases upstream connections.

Run: ``python bench/upstream.py --port 18000`` (loopback only; exits by itself after
``--max-lifetime`` seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import time
from typing import Any, Callable

import orjson
from fakehttp import Connection, Stats, chunked, pace, run_now

# The generated text, one word (or punctuation) per token.
WORDS = (
    "Once", " upon", " a", " time", ",", " in", " a", " quiet", " village", " by", " the", " sea",
    ",", " there", " lived", " an", " old", " lighthouse", " keeper", " who", " told", " stories",
    " to", " anyone", " who", " would", " listen", ".",
)
DEFAULT_TOKENS = 16
MAX_TOKENS = 100_000
MAX_HOLD_MS = 3_600_000
TIMING = re.compile(r"@([dh])(\d+)")

KOBOLD_HEADERS = (
    b"Server: ConcedoLlamaForKoboldServer \r\n"
    b"access-control-allow-origin: *\r\n"
    b"access-control-allow-methods: *\r\n"
    b"access-control-allow-headers: *, Accept, Content-Type, Content-Length, Cache-Control, Accept-Encoding, "
    b"X-CSRF-Token, Client-Agent, X-Fields, Content-Type, Authorization, X-Requested-With, "
    b"X-HTTP-Method-Override, apikey, genkey\r\n"
)


def token(i: int) -> str:
    """The i-th generated token."""
    return WORDS[i % len(WORDS)]


def text_of(n: int) -> str:
    """The first n tokens as one string."""
    return "".join(token(i) for i in range(n))


class Timing:
    """Per-token delay and initial hold (seconds), parsed from a model name (cached: the
    benchmark uses a handful of names)."""

    cache: dict[str, tuple[float, float]] = {}

    @classmethod
    def of(cls, model: str, default_delay: float) -> tuple[float, float]:
        found = cls.cache.get(model)
        if found is None:
            delay, hold = default_delay, 0.0
            for kind, value in TIMING.findall(model):
                if kind == "d":
                    delay = min(int(value), 60_000) / 1000
                else:
                    hold = min(int(value), MAX_HOLD_MS) / 1000
            found = (delay, hold)
            if len(cls.cache) < 1000:
                cls.cache[model] = found
        return found


class FakeServer:
    """Routes requests to the three fake protocols."""

    def __init__(self, default_delay: float) -> None:
        self.default_delay = default_delay
        self.stats = Stats()
        self.counter = 0
        self.created = int(time.time())

    def next_id(self) -> int:
        self.counter += 1
        return self.counter

    def dispatch(self, conn: Connection, method: str, target: str, headers: dict[str, str], body: bytes, keep_alive: bool) -> None:
        path = target.split("?", 1)[0]
        try:
            if method == "POST":
                data = orjson.loads(body) if body else {}
                if not isinstance(data, dict):
                    raise ValueError("body is not an object")
                if path in ("/v1/chat/completions", "/v1/completions"):
                    return self.openai(conn, data, path == "/v1/chat/completions", keep_alive)
                if path == "/v1/messages":
                    return self.anthropic(conn, data, keep_alive)
                if path == "/api/v1/generate":
                    return self.kobold(conn, data, stream=False)
                if path == "/api/extra/generate/stream":
                    return self.kobold(conn, data, stream=True)
                if path == "/api/extra/tokencount":
                    # KoboldCpp counts with the model's tokenizer; a word-ish count will do
                    n = max(1, len(str(data.get("prompt", "")).split()))
                    return conn.respond(b"200 OK", b"application/json", orjson.dumps({"value": n, "ids": list(range(1, n + 1))}), False, KOBOLD_HEADERS)
                if path == "/api/extra/abort":
                    self.stats.aborts += 1
                    return conn.respond(b"200 OK", b"application/json", b'{"success": "true", "done": "true"}', False, KOBOLD_HEADERS)
            elif method == "GET":
                if path == "/bench/stats":
                    return conn.respond(b"200 OK", b"application/json", self.stats.as_json(), keep_alive)
                if path == "/health":
                    return conn.respond(b"200 OK", b"application/json", b'{"status":"ok"}', keep_alive)
                if path == "/v1/models":
                    if "anthropic-version" in headers:
                        models = {"data": [{"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5 (fake)",
                                            "created_at": "2025-09-29T00:00:00Z"}], "has_more": False,
                                  "first_id": "claude-sonnet-4-5", "last_id": "claude-sonnet-4-5"}
                    else:
                        models = {"object": "list", "data": [{"id": "fake", "object": "model", "created": self.created, "owned_by": "bench"}]}
                    return conn.respond(b"200 OK", b"application/json", orjson.dumps(models), keep_alive)
                kobold_get = {
                    "/api/extra/version": b'{"result": "KoboldCpp", "version": "1.76", "protected": false, "txt2img": false, "vision": false, "transcribe": false}',
                    "/api/extra/true_max_context_length": b'{"value": 2048}',
                    "/api/v1/config/max_context_length": b'{"value": 2048}',
                    "/api/v1/model": b'{"result": "koboldcpp/SmolLM2-135M-Instruct.Q4_1"}',
                }.get(path)
                if kobold_get is not None:
                    return conn.respond(b"200 OK", b"application/json", kobold_get, False, KOBOLD_HEADERS)
            conn.respond(b"404 Not Found", b"application/json", b'{"error": {"message": "not found", "type": "not_found"}}', keep_alive)
        except (ValueError, TypeError) as exc:
            conn.fail(400, str(exc).encode())

    # OpenAI -------------------------------------------------------------------------------
    def openai(self, conn: Connection, data: dict[str, Any], chat: bool, keep_alive: bool) -> None:
        model = str(data.get("model", "fake"))
        n = _count(data.get("max_completion_tokens") or data.get("max_tokens"))
        delay, hold = Timing.of(model, self.default_delay)
        prompt_tokens = max(1, len(orjson.dumps(data.get("messages") or data.get("prompt") or "")) // 4)
        usage = {
            "prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }
        rid = ("chatcmpl-bench" if chat else "cmpl-bench") + str(self.next_id())
        if not data.get("stream"):
            async def whole(c: Connection) -> None:
                await pace(time.perf_counter(), hold + n * delay)
                if chat:
                    choice = {"index": 0, "message": {"role": "assistant", "content": text_of(n), "refusal": None, "annotations": []},
                              "logprobs": None, "finish_reason": "length"}
                    obj = "chat.completion"
                else:
                    choice = {"text": text_of(n), "index": 0, "logprobs": None, "finish_reason": "length"}
                    obj = "text_completion"
                answer = {"id": rid, "object": obj, "created": int(time.time()), "model": model, "choices": [choice],
                          "usage": usage, "service_tier": "default", "system_fingerprint": "fp_bench"}
                c.respond(b"200 OK", b"application/json", orjson.dumps(answer), keep_alive, b"x-request-id: req_" + rid.encode() + b"\r\n")

            if delay == 0 and hold == 0:  # answer at once, no task
                run_now(whole(conn))
                return
            return conn.stream(whole)

        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        obj = b"chat.completion.chunk" if chat else b"text_completion"
        tail = b',"usage":null}' if include_usage else b"}"
        prefix = (b'data: {"id":"' + rid.encode() + b'","object":"' + obj + b'","created":' + str(int(time.time())).encode()
                  + b',"model":' + orjson.dumps(model) + b',"system_fingerprint":"fp_bench","choices":[')

        def event(choice: bytes, finish: bytes = b"null") -> bytes:
            if chat:
                return prefix + b'{"index":0,"delta":' + choice + b',"logprobs":null,"finish_reason":' + finish + b"}]" + tail + b"\n\n"
            return prefix + b'{"text":' + choice + b',"index":0,"logprobs":null,"finish_reason":' + finish + b"}]" + tail + b"\n\n"

        async def run(c: Connection) -> None:
            started = time.perf_counter()
            chunks = [event(b'{"role":"assistant","content":"","refusal":null}')] if chat else []
            head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\ncache-control: no-cache\r\nx-request-id: req_" + rid.encode() + b"\r\n\r\n"
            c.write(head + b"".join(chunked(e) for e in chunks))
            for i in range(n):
                piece = orjson.dumps(token(i))
                await pace(started, hold + (i + 1) * delay, c)
                c.write(chunked(event(b'{"content":' + piece + b"}" if chat else piece)))
            last = [event(b"{}" if chat else b'""', b'"length"')]
            if include_usage:
                last.append(prefix + b'],"usage":' + orjson.dumps(usage) + b"}\n\n")
            last.append(b"data: [DONE]\n\n")
            c.write(b"".join(chunked(e) for e in last) + b"0\r\n\r\n")

        conn.stream(self._tracked(run, keep_alive))

    # Anthropic ----------------------------------------------------------------------------
    def anthropic(self, conn: Connection, data: dict[str, Any], keep_alive: bool) -> None:
        model = str(data.get("model", "claude-sonnet-4-5"))
        n = _count(data.get("max_tokens"))
        delay, hold = Timing.of(model, self.default_delay)
        input_tokens = max(1, len(orjson.dumps(data.get("messages") or "")) // 4)
        mid = "msg_bench" + str(self.next_id())
        extra = b"request-id: req_" + mid.encode() + b"\r\nanthropic-organization-id: 00000000-0000-0000-0000-000000000000\r\n"
        if not data.get("stream"):
            async def whole(c: Connection) -> None:
                await pace(time.perf_counter(), hold + n * delay)
                answer = {"id": mid, "type": "message", "role": "assistant", "model": model,
                          "content": [{"type": "text", "text": text_of(n)}], "stop_reason": "max_tokens", "stop_sequence": None,
                          "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                                    "output_tokens": n, "service_tier": "standard"}}
                c.respond(b"200 OK", b"application/json", orjson.dumps(answer), keep_alive, extra)

            if delay == 0 and hold == 0:
                run_now(whole(conn))
                return
            return conn.stream(whole)

        def event(name: bytes, payload: Any) -> bytes:
            return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

        async def run(c: Connection) -> None:
            started = time.perf_counter()
            head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n"
                    b"cache-control: no-cache\r\n" + extra + b"\r\n")
            start = {"type": "message_start", "message": {"id": mid, "type": "message", "role": "assistant", "model": model,
                     "content": [], "stop_reason": None, "stop_sequence": None,
                     "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                               "output_tokens": 1, "service_tier": "standard"}}}
            c.write(head + chunked(event(b"message_start", start))
                    + chunked(event(b"content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}))
                    + chunked(b'event: ping\ndata: {"type": "ping"}\n\n'))
            for i in range(n):
                await pace(started, hold + (i + 1) * delay, c)
                c.write(chunked(b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'
                                 + orjson.dumps(token(i)) + b"}}\n\n"))
            c.write(chunked(b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n')
                    + chunked(event(b"message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                                                        "usage": {"output_tokens": n}}))
                    + chunked(b'event: message_stop\ndata: {"type":"message_stop"}\n\n') + b"0\r\n\r\n")

        conn.stream(self._tracked(run, keep_alive))

    # KoboldCpp ----------------------------------------------------------------------------
    def kobold(self, conn: Connection, data: dict[str, Any], stream: bool) -> None:
        """KoboldCpp 1.76 is an HTTP/1.0 server: every answer ends by closing the connection."""
        n = _count(data.get("max_length"))
        delay = self.default_delay
        if not stream:
            async def whole(c: Connection) -> None:
                await pace(time.perf_counter(), n * delay)
                body = orjson.dumps({"results": [{"text": text_of(n), "finish_reason": "length"}]})
                c.respond(b"200 OK", b"application/json", body, False, KOBOLD_HEADERS + b"cache-control: no-store\r\n")

            if delay == 0:
                run_now(whole(conn))
                return
            return conn.stream(whole)

        async def run(c: Connection) -> None:
            started = time.perf_counter()
            c.write(b"HTTP/1.0 200 OK\r\n" + KOBOLD_HEADERS + b"cache-control: no-cache\r\nconnection: keep-alive\r\n"
                    b"cache-control: no-store\r\ncontent-type: text/event-stream\r\n\r\n")
            for i in range(n):
                await pace(started, (i + 1) * delay, c)
                reason = b'"length"' if i == n - 1 else b'"null"'
                c.write(b'event: message\ndata: {"token": ' + orjson.dumps(token(i)) + b', "finish_reason": ' + reason + b"}\n\n")

        conn.stream(self._tracked(run, False))

    # --------------------------------------------------------------------------------------
    def _tracked(self, run: Callable[[Connection], Any], keep_alive: bool) -> Callable[[Connection], Any]:
        """A streaming answer with its open/dropped bookkeeping and the end of the response."""
        stats = self.stats

        async def tracked(c: Connection) -> None:
            stats.streams_open += 1
            stats.streams_open_peak = max(stats.streams_open_peak, stats.streams_open)
            try:
                await run(c)
            except asyncio.CancelledError:
                stats.streams_dropped += 1
                return
            finally:
                stats.streams_open -= 1
            stats.streams_done += 1
            c.finish(keep_alive)

        return tracked


def _count(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return min(value, MAX_TOKENS)
    return DEFAULT_TOKENS


async def serve(host: str, port: int, delay: float, lifetime: float, ready_file: str | None) -> None:
    loop = asyncio.get_running_loop()
    fake = FakeServer(delay)
    server = await loop.create_server(lambda: Connection(fake), host, port, backlog=8192, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"fake upstream listening on http://{host}:{bound} (pid {os.getpid()})", file=sys.stderr, flush=True)
    if ready_file:
        with open(ready_file, "w") as f:
            f.write(str(bound))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), lifetime)
    except asyncio.TimeoutError:
        print("fake upstream: max lifetime reached, exiting", file=sys.stderr)
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18000)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="per-token delay when the model name sets none (Kobold)")
    parser.add_argument("--max-lifetime", type=float, default=3600.0, help="exit after this many seconds")
    parser.add_argument("--ready-file", help="write the bound port here once listening")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("the fake upstream only binds to loopback")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port, args.delay_ms / 1000, args.max_lifetime, args.ready_file))


if __name__ == "__main__":
    main()
