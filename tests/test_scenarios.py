"""End-to-end scenarios across features: what a demanding user does that per-backend tests do not.

The real app (``run_rosetta`` through the ``rosetta`` fixture), a fake upstream that replays only
bytes captured from real servers or copied from the providers' documentation
(tests/transcripts/<backend>/, see each folder's SOURCES/README), and the official ``openai``
client, or raw aiohttp where wire details matter. Every answer is validated with the openai
SDK's own pydantic models (``ChatCompletion``, ``ChatCompletionChunk``, ``Completion``): the SDK
itself only ``construct``s them, which checks nothing.

Scripted faults (a status, a hang, a cut) reuse the backend's captured error bodies and stream
bytes; only the status line or the cut point is chosen by the test.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import aiohttp
import openai
import orjson
import pytest
from harness import TRANSCRIPTS, Received, ReplayUpstream, RunningRosetta, Writer, http_response, stream_response
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from translators.base import Backend
from translators.mock import Mock
from translators.request import Request

Install = Callable[[ReplayUpstream], None]


# --- transcripts --------------------------------------------------------------------------------
def raw(path: str) -> bytes:
    """The bytes of a transcript file."""
    return (TRANSCRIPTS / path).read_bytes()


def sillytavern(name: str) -> dict[str, Any]:
    """The body SillyTavern 1.12.6 sent (tests/transcripts/clients/<name>.jsonl, first line)."""
    line = raw(f"clients/{name}.jsonl").splitlines()[0]
    return dict(orjson.loads(line)["body_json"])


def horde_wire(name: str) -> bytes:
    """A recorded AI Horde answer (status, headers, exact body) as HTTP bytes."""
    data = json.loads(raw(f"horde/{name}.json"))
    headers = {k: v for k, v in data["headers"].items() if k.lower() not in ("content-length", "content-type")}
    kind = data["headers"].get("Content-Type", "application/json")
    return http_response(data["status"], data["body_raw"], headers={**headers, "Connection": "close"}, content_type=kind)


def kobold_tokencount(value: int) -> bytes:
    """KoboldCpp's captured /api/extra/tokencount answer with a chosen count (same shape)."""
    head, _ = raw("kobold/post_api_extra_tokencount.response.wire").split(b"\r\n\r\n", 1)
    body = orjson.dumps({"value": value, "ids": list(range(value))})
    return head.replace(b"content-length: 59", b"content-length: %d" % len(body)) + b"\r\n\r\n" + body


def by_stream(whole: bytes, streamed: bytes) -> Callable[[Received, Writer], Awaitable[None]]:
    """A handler answering with ``streamed`` when the request asked to stream, else ``whole``."""

    async def answer(received: Received, writer: Writer) -> None:
        await writer.send(streamed if (received.json or {}).get("stream") else whole)

    return answer


def with_status(wire: bytes, status: int, reason: str = "X", extra: bytes = b"") -> bytes:
    """A captured response with another status line (a scripted fault; the body stays captured)."""
    head, body = wire.split(b"\r\n\r\n", 1)
    first, rest = head.split(b"\r\n", 1)
    version = first.split(b" ", 1)[0]
    return version + b" %d %s\r\n" % (status, reason.encode()) + rest + extra + b"\r\n\r\n" + body


# --- the backends, each faked with its own captured bytes ------------------------------------------
HORDE_MODEL = "koboldcpp/SmolLM2-135M"
HORDE_JOB = "4ccd956e-bfc1-40e9-9d9e-dfb82dd06ea1"
CLAUDE_STREAM = stream_response(raw("claude/sdk_basic_response.sse"))
CLAUDE_WHOLE = http_response(200, raw("claude/spec_message.json"))


@dataclass(frozen=True)
class Fake:
    """One backend type as a user configures it, and how its fake upstream answers."""

    type: str
    model: str
    options: dict[str, Any]
    install: Install
    generate: str  # the path of the generation call
    text: tuple[str, str]  # the answer text (non-stream, stream) the captures give
    source: str  # x-rosetta-usage-source of a non-stream answer
    path_of: Callable[[bool, str], str] = lambda stream, op: ""
    url_suffix: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def backend(self, url: str, **options: Any) -> dict[str, Any]:
        return {"type": self.type, "url": url + self.url_suffix, **self.options, **options}


def install_kobold(up: ReplayUpstream) -> None:
    up.add("GET", "/api/extra/version", raw("kobold/get_api_extra_version.response.wire"))
    up.add("GET", "/api/extra/true_max_context_length", raw("kobold/get_api_extra_true_max_context_length.response.wire"))
    # the prompt (prepare), the prompt again and prompt + answer (exact usage after the answer)
    up.add("POST", "/api/extra/tokencount", kobold_tokencount(40), kobold_tokencount(40), kobold_tokencount(47))
    up.add("POST", "/api/extra/generate/stream", raw("kobold/post_api_extra_generate_stream_short.response.wire"))
    up.add("POST", "/api/v1/generate", raw("kobold/post_api_v1_generate_minimal.response.wire"))
    up.add("POST", "/api/extra/abort", raw("kobold/post_api_extra_abort.response.wire"))


def install_llamacpp(up: ReplayUpstream) -> None:
    up.add("GET", "/props", raw("llamacpp/get_props.response.wire"))
    up.add("POST", "/tokenize", raw("llamacpp/post_tokenize_add_special.response.wire"))
    up.add("POST", "/completion", by_stream(raw("llamacpp/post_completion.response.wire"),
                                            raw("llamacpp/post_completion_stream.response.wire")))


def install_ollama(up: ReplayUpstream) -> None:
    up.add("POST", "/api/show", http_response(200, raw("ollama/show.json")))
    ndjson = "application/x-ndjson"
    up.add("POST", "/api/chat", by_stream(http_response(200, raw("ollama/chat_nonstream.json"), headers={"Connection": "close"}),
                                          stream_response(raw("ollama/chat_stream.ndjson"), content_type=ndjson)))
    up.add("POST", "/api/generate", by_stream(http_response(200, raw("ollama/generate_nonstream.json"), headers={"Connection": "close"}),
                                              stream_response(raw("ollama/generate_stream.ndjson"), content_type=ndjson)))


def install_ooba(up: ReplayUpstream) -> None:
    up.add("POST", "/v1/internal/chat-prompt", http_response(200, raw("ooba/chat_prompt.json"), headers={"Connection": "close"}))
    up.add("POST", "/v1/internal/token-count", raw("ooba/post_v1_internal_token_count.response.wire"))
    up.add("POST", "/v1/chat/completions", by_stream(raw("ooba/post_v1_chat_completions.response.wire"),
                                                     raw("ooba/post_v1_chat_completions_stream.response.wire")))
    up.add("POST", "/v1/completions", by_stream(raw("ooba/post_v1_completions.response.wire"),
                                                raw("ooba/post_v1_completions_stream.response.wire")))
    up.add("POST", "/v1/internal/stop-generation", raw("ooba/post_v1_internal_stop_generation.response.wire"))


def install_horde(up: ReplayUpstream) -> None:
    up.add("GET", "/api/v2/workers", horde_wire("42_workers_text"))
    up.add("POST", "/api/v2/generate/text/async", horde_wire("20_submit_async_user"))
    up.add("GET", f"/api/v2/generate/text/status/{HORDE_JOB}", horde_wire("22_status_3_done"))
    up.add("DELETE", f"/api/v2/generate/text/status/{HORDE_JOB}", horde_wire("24_cancel_after_done"))


def install_tabby(up: ReplayUpstream) -> None:  # completions only: no chat answer is recorded
    up.add("POST", "/v1/completions", by_stream(http_response(200, raw("tabby/completion.json")),
                                                stream_response(raw("tabby/completion_stream.sse"))))


def install_mancer(up: ReplayUpstream) -> None:  # completions only (OpenAI's documented shapes)
    up.add("POST", "/oai/v1/completions", by_stream(http_response(200, raw("mancer/completion.json")),
                                                    stream_response(raw("mancer/completion_stream.sse"))))


def install_claude(up: ReplayUpstream) -> None:
    up.add("POST", "/v1/messages", by_stream(CLAUDE_WHOLE, CLAUDE_STREAM))


HORDE_ECHO = "[echo:koboldcpp/SmolLM2-135M] The quick brown fox jumps over the lazy dog. Then the fox"
FAKES: dict[str, Fake] = {
    "kobold": Fake("kobold", "koboldcpp/SmolLM2-135M", {"template": "chatml"}, install_kobold,
                   "", (" your best friend, but one of the", "The capital of France is Paris."), "provider",
                   lambda stream, op: "/api/extra/generate/stream" if stream else "/api/v1/generate"),
    "llamacpp": Fake("llamacpp", "gemma-3-270m", {}, install_llamacpp, "/completion",
                     (" the capital of the country of France. It is the largest city in France. It is located in the department of the",
                      " the capital of the country of France. It is the largest"), "provider"),
    "ollama": Fake("ollama", "llama3.2", {}, install_ollama, "",
                   ("Hello! How are you today?", "The"), "provider",
                   lambda stream, op: "/api/chat" if op == "chat" else "/api/generate"),
    "ooba": Fake("ooba", "gemma-3-270m-q4_k_m.gguf", {"context_length": 2048}, install_ooba, "",
                 ("What is the capital of France?\nWhat is the capital of France?", "What is the capital of France?"),
                 "provider", lambda stream, op: "/v1/chat/completions" if op == "chat" else "/v1/completions"),
    "horde": Fake("horde", HORDE_MODEL, {"template": "chatml", "poll_interval": 1, "max_poll_interval": 1}, install_horde,
                  "/api/v2/generate/text/async", (HORDE_ECHO, HORDE_ECHO), "estimated", url_suffix="/api"),
    "tabby": Fake("tabby", "Llama-3.2-1B-Instruct-exl3", {"api_key": "backend-secret-key"}, install_tabby, "/v1/completions",
                  (" Paris. It is the capital", " Paris. It is the capital"), "provider"),
    "mancer": Fake("mancer", "mytholite", {"api_key": "backend-secret-key"}, install_mancer, "/oai/v1/completions",
                   ("\n\nThis is indeed a test", "This is a test"), "provider"),
    "claude": Fake("claude", "claude-3-5-sonnet-20241022", {"api_key": "sk-ant-scenario-secret"}, install_claude,
                   "/v1/messages", ("Hi! My name is Claude.", "Hello there!"), "provider"),
}
TEXT_BACKENDS = ("kobold", "llamacpp", "ollama", "ooba", "horde")
COMPLETION_ONLY = ("tabby", "mancer")  # recorded completion answers only


def generate_path(fake: Fake, stream: bool, operation: str = "chat") -> str:
    return fake.generate or fake.path_of(stream, operation)


def config_for(kind: str, url: str, *, backend: dict[str, Any] | None = None, **model: Any) -> dict[str, Any]:
    fake = FAKES[kind]
    return {
        "backends": {"be": fake.backend(url, **(backend or {}))},
        "models": [{"name": "rp", "backend": "be", "model": fake.model, **model}],
    }


# --- what Rosetta sent: the text the model reads, the limit, the stops, a sampler -------------------
def native_text(kind: str, sent: dict[str, Any]) -> str:
    """Everything of the conversation the model will read, as one string."""
    if kind in ("kobold", "llamacpp", "horde"):
        return str(sent["prompt"])
    if kind == "claude":
        system = "".join(b["text"] for b in sent.get("system") or ())
        return system + "".join(b.get("text", "") for m in sent["messages"] for b in m["content"])
    if "prompt" in sent:
        return str(sent["prompt"])
    return "".join(
        m["content"] if isinstance(m["content"], str) else "".join(p.get("text", "") for p in m["content"])
        for m in sent["messages"]
    )


def native_limit(kind: str, sent: dict[str, Any]) -> Any:
    return {
        "kobold": lambda: sent.get("max_length"),
        "llamacpp": lambda: sent.get("n_predict"),
        "ollama": lambda: sent.get("options", {}).get("num_predict"),
        "ooba": lambda: sent.get("max_tokens"),
        "tabby": lambda: sent.get("max_tokens"),
        "mancer": lambda: sent.get("max_tokens"),
        "horde": lambda: sent["params"].get("max_length"),
        "claude": lambda: sent.get("max_tokens"),
    }[kind]()


def native_stops(kind: str, sent: dict[str, Any]) -> list[str]:
    return list({
        "kobold": lambda: sent.get("stop_sequence"),
        "llamacpp": lambda: sent.get("stop"),
        "ollama": lambda: sent.get("options", {}).get("stop"),
        "ooba": lambda: sent.get("stop"),
        "tabby": lambda: sent.get("stop"),
        "mancer": lambda: sent.get("stop"),
        "horde": lambda: sent["params"].get("stop_sequence"),
        "claude": lambda: sent.get("stop_sequences"),
    }[kind]() or ())


def native_repetition_penalty(kind: str, sent: dict[str, Any]) -> Any:
    return {
        "kobold": lambda: sent.get("rep_pen"),
        "llamacpp": lambda: sent.get("repeat_penalty"),
        "ollama": lambda: sent.get("options", {}).get("repeat_penalty"),
        "ooba": lambda: sent.get("repetition_penalty"),
        "horde": lambda: sent["params"].get("rep_pen"),
        "claude": lambda: sent.get("repetition_penalty"),
    }[kind]()


# --- the OpenAI side, checked strictly ------------------------------------------------------------
@dataclass
class Streamed:
    """A streamed answer read off the wire."""

    status: int
    headers: Any
    chunks: list[dict[str, Any]]
    comments: list[str]
    done: bool
    body: bytes

    @property
    def text(self) -> str:
        out = ""
        for chunk in self.chunks:
            for choice in chunk.get("choices") or ():
                out += choice.get("text") or (choice.get("delta") or {}).get("content") or ""
        return out

    @property
    def finishes(self) -> list[str]:
        return [c["finish_reason"] for chunk in self.chunks for c in chunk.get("choices") or () if c.get("finish_reason")]


async def post_stream(running: RunningRosetta, path: str, body: dict[str, Any]) -> Streamed:
    """POST with ``stream: true`` and read the SSE answer event by event."""
    async with aiohttp.ClientSession() as http:
        async with http.post(running.base_url + path, json={**body, "stream": True}) as response:
            data = await response.read()
            status, headers = response.status, response.headers
    chunks: list[dict[str, Any]] = []
    comments: list[str] = []
    done = False
    if headers.get("Content-Type", "").startswith("text/event-stream"):
        assert data.endswith(b"\n\n"), data[-200:]
        for event in data.decode().split("\n\n")[:-1]:
            for line in event.split("\n"):
                assert not done, f"an event after [DONE]: {event!r}"
                if line.startswith(":"):
                    comments.append(line)
                elif line == "data: [DONE]":
                    done = True
                else:
                    assert line.startswith("data: {"), line
                    chunks.append(orjson.loads(line[6:]))
    return Streamed(status, headers, chunks, comments, done, data)


def check_stream(streamed: Streamed, *, model: str, operation: str = "chat", include_usage: bool = False) -> Streamed:
    """The stream is OpenAI's: valid chunks, one id, role first, one finish per choice, the usage
    chunk last and only when asked, ``[DONE]``."""
    assert streamed.status == 200, streamed.body[:500]
    assert streamed.done, streamed.body[-500:]
    chunks = streamed.chunks
    assert chunks
    assert not [c for c in chunks if "error" in c], chunks
    for chunk in chunks:
        if operation == "chat":
            ChatCompletionChunk.model_validate(chunk)
        else:
            # OpenAI streams legacy completions with "finish_reason": null until the last chunk,
            # which the SDK's Completion type (made for whole answers) does not allow
            Completion.model_validate({**chunk, "choices": [{**c, "finish_reason": c["finish_reason"] or "stop"} for c in chunk["choices"]]})
        assert chunk["object"] == ("chat.completion.chunk" if operation == "chat" else "text_completion")
        assert chunk["model"] == model
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    with_choices = [c for c in chunks if c["choices"]]
    if operation == "chat":
        assert with_choices[0]["choices"][0]["delta"].get("role") == "assistant"
    indexes = {choice["index"] for c in with_choices for choice in c["choices"]}
    for index in indexes:
        reasons = [ch["finish_reason"] for c in with_choices for ch in c["choices"] if ch["index"] == index and ch["finish_reason"]]
        assert len(reasons) == 1, (index, reasons)
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] is not None
        usage = chunks[-1]["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert all(c.get("usage", "absent") is None for c in chunks[:-1])
    else:
        assert all(c["choices"] for c in chunks) and all(c.get("usage") is None for c in chunks)
    return streamed


def check_answer(data: dict[str, Any], *, model: str, operation: str = "chat") -> dict[str, Any]:
    """A whole answer is OpenAI's, with usage."""
    (ChatCompletion if operation == "chat" else Completion).model_validate(data)
    assert data["object"] == ("chat.completion" if operation == "chat" else "text_completion")
    assert data["model"] == model
    usage = data["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    return data


def check_error(data: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's error envelope, nothing else."""
    assert set(data) == {"error"}, data
    assert set(data["error"]) == {"message", "type", "param", "code"}, data
    assert isinstance(data["error"]["message"], str) and data["error"]["message"]
    assert "Traceback" not in data["error"]["message"]
    return data["error"]


async def post_json(running: RunningRosetta, path: str, body: Any) -> tuple[int, Any, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(running.base_url + path, json=body) as response:
            return response.status, response.headers, orjson.loads(await response.read())


def client(running: RunningRosetta) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=running.base_url, api_key="sk-client", max_retries=0)


def split_body(body: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """A SillyTavern body as the openai client's messages and everything else (sent as is)."""
    rest = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
    return body["messages"], rest


# --- 1. SillyTavern's real Chat Completion requests against every backend ----------------------------
ST_REQUESTS = ("cc_custom_nonstream", "cc_custom_stream", "cc_custom_include_exclude")
ST_SYSTEMS = ("Write Seraphina's next reply in a fictional chat between Seraphina and User.", "[Start a new Chat]")
ST_GREETING = "*Seraphina smiles.* Welcome, traveller."
ST_USER = "Hi Seraphina, where am I?"


@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, "claude"])
@pytest.mark.parametrize("capture", ST_REQUESTS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_sillytavern_chat_to_every_backend(upstream: ReplayUpstream, rosetta: Any, kind: str, capture: str, stream: bool) -> None:
    fake = FAKES[kind]
    fake.install(upstream)
    running = await rosetta(config_for(kind, upstream.url))
    body = sillytavern(capture)
    body["model"] = "rp"
    if stream:
        streamed = check_stream(await post_stream(running, "/chat/completions", body), model="rp")
        assert streamed.text == fake.text[1]
    else:
        messages, rest = split_body(body)
        async with client(running) as oa:
            answer = await oa.chat.completions.with_raw_response.create(model="rp", messages=messages, extra_body=rest)
        data = check_answer(orjson.loads(answer.http_response.content), model="rp")
        assert data["choices"][0]["message"]["content"] == fake.text[0]
        assert answer.headers["x-rosetta-usage-source"] == fake.source
        assert answer.headers["x-rosetta-backend"] == "be"
    [sent] = upstream.requests(generate_path(fake, stream))
    text = native_text(kind, sent.json)
    # both system messages, the assistant-first greeting and the user turn, in that order
    where = [text.find(part) for part in (*ST_SYSTEMS, ST_GREETING, ST_USER)]
    assert -1 not in where and where == sorted(where), (where, text)
    assert native_limit(kind, sent.json) == 300
    if "stop" in body:
        assert "\nUser:" in native_stops(kind, sent.json)
    if capture == "cc_custom_include_exclude":  # sampler extras reach the backends that take them
        expected = None if kind == "claude" else 1.1
        assert native_repetition_penalty(kind, sent.json) == expected


# --- 2. legacy completions everywhere; OpenAI's knobs on every backend ------------------------------
COMPLETION_TEXT: dict[str, tuple[str, str]] = {
    "ollama": ("The sky is blue because it is the color of the sky.", "That's a fantastic question!"),
    "ooba": (" the capital of the country of France. It is the largest", " the capital of the country of France. It is the largest"),
}


@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, *COMPLETION_ONLY, "claude"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_legacy_completion_to_every_backend(upstream: ReplayUpstream, rosetta: Any, kind: str, stream: bool) -> None:
    fake = FAKES[kind]
    fake.install(upstream)
    running = await rosetta(config_for(kind, upstream.url))
    prompt = "The capital of France is"
    expected = COMPLETION_TEXT.get(kind, fake.text)[1 if stream else 0]
    body: dict[str, Any] = {"model": "rp", "prompt": prompt, "max_tokens": 24, "stop": ["\n\n", "###"]}
    if stream:
        streamed = check_stream(await post_stream(running, "/completions", {**body, "stream_options": {"include_usage": True}}),
                                model="rp", operation="completion", include_usage=True)
        assert streamed.text == expected
    else:
        async with client(running) as oa:
            answer = await oa.completions.with_raw_response.create(model="rp", prompt=prompt, max_tokens=24, stop=body["stop"])
        data = check_answer(orjson.loads(answer.http_response.content), model="rp", operation="completion")
        assert data["choices"][0]["text"] == expected
        assert answer.headers["x-rosetta-usage-source"] == fake.source
    [sent] = upstream.requests(generate_path(fake, stream, "completion"))
    if kind == "claude":  # a chat-only backend: the prompt is one user turn
        assert sent.json["messages"] == [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
    else:  # a text backend: the prompt as it is, no template around it
        assert sent.json["prompt"] == prompt
    assert native_limit(kind, sent.json) == 24
    # Claude rejects whitespace-only stop sequences: not sent, and said so
    assert native_stops(kind, sent.json) == (["###"] if kind == "claude" else ["\n\n", "###"])


@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, "claude"])
async def test_max_completion_tokens_stop_and_usage_chunk(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    fake = FAKES[kind]
    fake.install(upstream)
    # a route default max_tokens the client's max_completion_tokens must beat
    running = await rosetta(config_for(kind, upstream.url, params={"max_tokens": 50}))
    body = {
        "model": "rp", "messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 7,
        "stop": ["\nUser:", "END"], "stream_options": {"include_usage": True},
    }
    streamed = check_stream(await post_stream(running, "/chat/completions", body), model="rp", include_usage=True)
    assert streamed.text == fake.text[1]
    [sent] = upstream.requests(generate_path(fake, True))
    if kind == "horde":  # the Horde's schema minimum is 16 tokens: clamped, and said so
        assert native_limit(kind, sent.json) == 16
        assert "max_tokens=7 is below this backend's minimum 16" in streamed.headers["x-rosetta-warning"]
    else:
        assert native_limit(kind, sent.json) == 7
    assert {"\nUser:", "END"} <= set(native_stops(kind, sent.json))


@pytest.mark.parametrize("kind", ["kobold", "llamacpp", "ollama", "ooba", "claude"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_n_above_one_is_refused_where_it_cannot_be_honoured(
    upstream: ReplayUpstream, rosetta: Any, kind: str, stream: bool
) -> None:
    FAKES[kind].install(upstream)
    running = await rosetta(config_for(kind, upstream.url))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], "n": 2, "stream": stream}
    status, headers, data = await post_json(running, "/chat/completions", body)
    assert status == 400
    error = check_error(data)
    assert (error["param"], error["code"], error["type"]) == ("n", "unsupported_parameter", "invalid_request_error")
    assert headers["x-request-id"].startswith("chatcmpl-")
    assert not upstream.requests(generate_path(FAKES[kind], stream))


N2_JOB = "ca89b223-8134-4cdf-aaae-9338156674fb"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_horde_n_2_gives_two_choices(upstream: ReplayUpstream, rosetta: Any, stream: bool) -> None:
    upstream.add("GET", "/api/v2/workers", horde_wire("42_workers_text"))
    upstream.add("POST", "/api/v2/generate/text/async", horde_wire("30_submit_async_anon_n2"))
    upstream.add("GET", f"/api/v2/generate/text/status/{N2_JOB}", horde_wire("31_status_done_n2"))
    running = await rosetta(config_for("horde", upstream.url))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], "n": 2, "max_tokens": 32}
    if stream:
        streamed = check_stream(await post_stream(running, "/chat/completions", {**body, "stream_options": {"include_usage": True}}),
                                model="rp", include_usage=True)
        by_index: dict[int, str] = {}
        for chunk in streamed.chunks:
            for choice in chunk["choices"]:
                by_index[choice["index"]] = by_index.get(choice["index"], "") + (choice["delta"].get("content") or "")
        assert by_index == {0: HORDE_ECHO, 1: HORDE_ECHO}
    else:
        status, headers, data = await post_json(running, "/chat/completions", body)
        assert status == 200
        check_answer(data, model="rp")
        assert [(c["index"], c["message"]["content"]) for c in data["choices"]] == [(0, HORDE_ECHO), (1, HORDE_ECHO)]
        assert headers["x-rosetta-usage-source"] == "estimated"
    [sent] = upstream.requests("/api/v2/generate/text/async")
    assert sent.json["params"]["n"] == 2


# --- 3. upstream failures, per backend --------------------------------------------------------------
def generation_routes(kind: str) -> list[tuple[str, str]]:
    """Every route a chat generation may use on this backend (the fault goes on all of them)."""
    return {
        "kobold": [("POST", "/api/extra/generate/stream"), ("POST", "/api/v1/generate")],
        "llamacpp": [("POST", "/completion")],
        "ollama": [("POST", "/api/chat")],
        "ooba": [("POST", "/v1/chat/completions")],
        "horde": [("POST", "/api/v2/generate/text/async")],
        "tabby": [("POST", "/v1/completions")],
        "mancer": [("POST", "/oai/v1/completions")],
        "claude": [("POST", "/v1/messages")],
    }[kind]


def simple_request(kind: str, stream: bool) -> tuple[str, dict[str, Any]]:
    """A small chat (a prompt for the backends with completion recordings only)."""
    if kind in COMPLETION_ONLY:
        return "/completions", {"model": "rp", "prompt": "Hi", "stream": stream}
    return "/chat/completions", {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], "stream": stream}


def replace_route(upstream: ReplayUpstream, kind: str, response: Any) -> None:
    for route in generation_routes(kind):
        upstream.routes[route] = [response]


def empty(status: int, reason: str, **headers: str) -> bytes:
    """A status with no body (what a reverse proxy in front of any backend may answer)."""
    head = [f"HTTP/1.1 {status} {reason}", "Content-Length: 0", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


async def hang(received: Received, writer: Writer) -> None:
    """Accept the request and never answer."""
    await writer.wait_closed_by_peer(10)


# status the backend answers → status, type and code the client gets
STATUS_FAULTS = {
    "429": (empty(429, "Too Many Requests", **{"Retry-After": "7"}), 429, "rate_limit_error", "7"),
    "500": (empty(500, "Internal Server Error"), 502, "upstream_error", None),
    "503": (empty(503, "Service Unavailable"), 503, "upstream_error", None),
    "529": (empty(529, "Overloaded"), 503, "upstream_error", None),
}
SECRETS = ("sk-ant-scenario-secret", "backend-secret-key")


@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, *COMPLETION_ONLY, "claude"])
@pytest.mark.parametrize("fault", sorted(STATUS_FAULTS))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_upstream_status_becomes_the_openai_status(
    upstream: ReplayUpstream, rosetta: Any, kind: str, fault: str, stream: bool
) -> None:
    wire, status, etype, retry_after = STATUS_FAULTS[fault]
    FAKES[kind].install(upstream)
    replace_route(upstream, kind, wire)
    key = {} if kind == "claude" else {"api_key": "backend-secret-key"}
    running = await rosetta(config_for(kind, upstream.url, backend=key))
    got, headers, data = await post_json(running, *simple_request(kind, stream))
    # failed before the first event: an ordinary error response, also for a stream
    assert got == status, data
    error = check_error(data)
    assert error["type"] == etype
    if kind == "claude" and fault == "529":
        retry_after = "2"  # an overloaded Claude that names no wait gets the configured one
    assert headers.get("Retry-After") == retry_after
    assert not any(secret in json.dumps(data) for secret in SECRETS)
    if kind == "kobold" and stream:
        assert not upstream.requests("/api/extra/abort")  # nothing runs upstream: nothing to abort


@pytest.mark.parametrize(
    "kind, wire, status, message",
    [
        # captured / documented error bodies of each backend
        ("claude", http_response(529, raw("claude/error_529_overloaded.json")), 503, "Overloaded"),
        ("horde", horde_wire("83_err_async_rate_limited"), 429, "2 per 1 second"),
        ("kobold", raw("kobold/post_api_v1_generate_bad_json.response.wire"), 502, "Error parsing input."),
        ("llamacpp", raw("llamacpp/get_unknown_path.response.wire"), 404, "File Not Found"),
        ("ollama", http_response(500, raw("ollama/generate_stream_error.ndjson").splitlines()[-1]), 502,
         "an error was encountered while running the model"),
    ],
)
async def test_captured_error_bodies_are_passed_on(
    upstream: ReplayUpstream, rosetta: Any, kind: str, wire: bytes, status: int, message: str
) -> None:
    FAKES[kind].install(upstream)
    replace_route(upstream, kind, wire)
    running = await rosetta(config_for(kind, upstream.url))
    async with client(running) as oa:
        with pytest.raises(openai.APIStatusError) as caught:
            await oa.chat.completions.create(model="rp", messages=[{"role": "user", "content": "Hi"}], max_tokens=16)
    assert caught.value.status_code == status
    assert message in caught.value.message
    check_error(caught.value.response.json())


@pytest.mark.parametrize(
    "kind, wire",
    [
        # each backend's own error body, answered with 429 and a Retry-After (a scripted status)
        ("kobold", with_status(raw("kobold/post_api_v1_generate_bad_json.response.wire"), 429, extra=b"\r\nRetry-After: 7")),
        ("llamacpp", with_status(raw("llamacpp/get_unknown_path.response.wire"), 429, extra=b"\r\nRetry-After: 7")),
        ("ollama", http_response(429, raw("ollama/generate_stream_error.ndjson").splitlines()[-1], headers={"Retry-After": "7"})),
        ("claude", http_response(429, raw("claude/error_529_overloaded.json"), headers={"Retry-After": "7"})),
        ("horde", with_status(horde_wire("83_err_async_rate_limited"), 429, extra=b"\r\nRetry-After: 7").replace(b"Retry-After: 1\r\n", b"")),
    ],
)
async def test_retry_after_survives_every_error_body(upstream: ReplayUpstream, rosetta: Any, kind: str, wire: bytes) -> None:
    FAKES[kind].install(upstream)
    replace_route(upstream, kind, wire)
    running = await rosetta(config_for(kind, upstream.url))
    status, headers, data = await post_json(running, "/chat/completions", {"model": "rp", "messages": [{"role": "user", "content": "Hi"}]})
    assert status == 429, data
    assert check_error(data)["type"] == "rate_limit_error"
    assert headers.get("Retry-After") == "7"


@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, *COMPLETION_ONLY, "claude"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_upstream_timeout_is_504(upstream: ReplayUpstream, rosetta: Any, kind: str, stream: bool) -> None:
    FAKES[kind].install(upstream)
    replace_route(upstream, kind, hang)
    running = await rosetta(config_for(kind, upstream.url, backend={"timeout": {"read": 0.3}}))
    status, _, data = await post_json(running, *simple_request(kind, stream))
    assert status == 504, data
    error = check_error(data)
    assert (error["type"], error["code"]) == ("timeout_error", "upstream_timeout")


@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, *COMPLETION_ONLY, "claude"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_upstream_refused_is_502(rosetta: Any, kind: str, stream: bool) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # no api_key: aiohttp refuses a URL's user:password together with an Authorization header
    running = await rosetta(config_for(kind, f"http://user:url-password@127.0.0.1:{port}", backend={"api_key": None}))
    status, _, data = await post_json(running, *simple_request(kind, stream))
    assert status == 502, data
    error = check_error(data)
    assert error["code"] == "upstream_unreachable"
    # a URL's credentials never reach the client
    assert "url-password" not in error["message"] and "user:" not in error["message"]


def cut_after(wire: bytes, marker: bytes, count: int) -> bytes:
    """A captured stream response up to the ``count``-th ``marker`` of its body."""
    head, body = wire.split(b"\r\n\r\n", 1)
    at = 0
    for _ in range(count):
        at = body.index(marker, at) + len(marker)
    return head + b"\r\n\r\n" + body[:at]


CUTS: dict[str, tuple[bytes, str]] = {
    # the first events of a captured stream, then the connection closes
    "kobold": (cut_after(raw("kobold/post_api_extra_generate_stream_short.response.wire"), b"\n\n", 3), "The capital of"),
    "llamacpp": (cut_after(raw("llamacpp/post_completion_stream_disconnected.partial.wire"), b"\n\n\r\n", 3), "I know that"),
    "ollama": (cut_after(stream_response(raw("ollama/chat_stream.ndjson"), content_type="application/x-ndjson"), b"\n", 1), "The"),
    "ooba": (cut_after(raw("ooba/post_v1_chat_completions_stream.response.wire"), b"\n\n\r\n", 3), "What is"),
    "claude": (cut_after(CLAUDE_STREAM, b"\n\n", 4), "Hello"),
}


@pytest.mark.parametrize("kind", sorted(CUTS))
async def test_stream_cut_mid_answer_ends_with_one_error_chunk(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    wire, text = CUTS[kind]

    async def cut(received: Received, writer: Writer) -> None:
        await writer.send(wire)

    FAKES[kind].install(upstream)
    replace_route(upstream, kind, cut)
    running = await rosetta(config_for(kind, upstream.url))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 64,
            "stream_options": {"include_usage": True}}
    streamed = await post_stream(running, "/chat/completions", body)
    assert streamed.status == 200 and streamed.done
    *answer, last = streamed.chunks
    assert "".join((c["choices"][0]["delta"].get("content") or "") for c in answer if c["choices"]) == text
    assert all("error" not in c for c in answer)
    assert last["choices"] == [] and set(last) >= {"id", "object", "created", "model", "error"}
    check_error({"error": last["error"]})
    for chunk in answer:
        ChatCompletionChunk.model_validate(chunk)
    assert not any(c["choices"] and c["choices"][0]["finish_reason"] for c in answer)  # it did not finish


@pytest.mark.parametrize("kind", sorted(CUTS))
async def test_openai_sdk_raises_the_in_stream_error(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    wire, text = CUTS[kind]

    async def cut(received: Received, writer: Writer) -> None:
        await writer.send(wire)

    FAKES[kind].install(upstream)
    replace_route(upstream, kind, cut)
    running = await rosetta(config_for(kind, upstream.url))
    got = ""
    async with client(running) as oa:
        stream = await oa.chat.completions.create(model="rp", messages=[{"role": "user", "content": "Hi"}], stream=True)
        with pytest.raises(openai.APIError):
            async for chunk in stream:
                got += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert got == text


@pytest.mark.parametrize("kind", ["kobold", "llamacpp", "ollama", "ooba", "claude"])
async def test_stream_cut_before_the_first_token_is_an_http_error(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    wire, _ = CUTS[kind]
    head = wire.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"

    async def cut(received: Received, writer: Writer) -> None:
        await writer.send(head)

    FAKES[kind].install(upstream)
    replace_route(upstream, kind, cut)
    running = await rosetta(config_for(kind, upstream.url))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    status, _, data = await post_json(running, "/chat/completions", body)
    assert status == 502, data
    check_error(data)


@pytest.mark.parametrize("kind", ["kobold", "llamacpp", "ollama", "ooba", "claude"])
async def test_stream_stalling_mid_answer_times_out_in_stream(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    wire, text = CUTS[kind]

    async def stall(received: Received, writer: Writer) -> None:
        await writer.send(wire)
        await writer.wait_closed_by_peer(10)

    FAKES[kind].install(upstream)
    replace_route(upstream, kind, stall)
    running = await rosetta(config_for(kind, upstream.url, backend={"timeout": {"read": 0.3}}))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 64}
    streamed = await post_stream(running, "/chat/completions", body)
    assert streamed.status == 200 and streamed.done
    *answer, last = streamed.chunks
    assert "".join((c["choices"][0]["delta"].get("content") or "") for c in answer if c["choices"]) == text
    assert last["choices"] == [] and check_error({"error": last["error"]})["code"] == "upstream_timeout"


MALFORMED = http_response(200, "<html><body>502 Bad Gateway</body></html>", content_type="text/html")


@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, *COMPLETION_ONLY, "claude"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_malformed_answer_is_502(upstream: ReplayUpstream, rosetta: Any, kind: str, stream: bool) -> None:
    FAKES[kind].install(upstream)
    replace_route(upstream, kind, MALFORMED)
    running = await rosetta(config_for(kind, upstream.url))
    status, _, data = await post_json(running, *simple_request(kind, stream))
    assert status == 502, data
    check_error(data)


# --- 4. a config with per-model params defaults and per-model translator options ---------------------
async def test_kobold_model_template_and_params_defaults(upstream: ReplayUpstream, rosetta: Any) -> None:
    FAKES["kobold"].install(upstream)
    config = config_for("kobold", upstream.url, template="alpaca",
                        params={"max_tokens": 120, "temperature": 0.3, "rep_pen": 1.15, "stop": ["###"]})
    config["models"].append({"name": "plain", "backend": "be", "model": "x"})  # the backend's chatml
    running = await rosetta(config)
    # langchain sends explicit nulls: a null must not erase a route default
    body = {"model": "rp", "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
            "temperature": 0.9, "max_tokens": None, "stop": None, "top_p": None, "n": None, "stream": False}
    status, headers, data = await post_json(running, "/chat/completions", body)
    assert status == 200, data
    check_answer(data, model="rp")
    [sent] = upstream.requests("/api/v1/generate")
    assert sent.json["prompt"] == "Be terse.\n\n### Instruction:\nHi\n\n### Response:\n"
    assert (sent.json["max_length"], sent.json["temperature"], sent.json["rep_pen"]) == (120, 0.9, 1.15)
    assert sent.json["stop_sequence"] == ["###", "\n### Instruction:", "\n### Response:"]
    # the other model on the same backend keeps the backend's template and no defaults
    upstream.routes[("POST", "/api/extra/tokencount")] = [kobold_tokencount(10)]
    status, _, data = await post_json(running, "/chat/completions", {**body, "model": "plain"})
    assert status == 200, data
    sent = upstream.requests("/api/v1/generate")[-1]
    assert sent.json["prompt"] == "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert "rep_pen" not in sent.json and sent.json["temperature"] == 0.9


async def test_claude_model_prefill_and_params_defaults(upstream: ReplayUpstream, rosetta: Any) -> None:
    FAKES["claude"].install(upstream)
    running = await rosetta(config_for("claude", upstream.url, prefill="*Seraphina ", include_prefill=True,
                                       params={"max_tokens": 100, "temperature": 0.5}))
    body = sillytavern("cc_custom_stream")
    body.update(model="rp", max_tokens=None, temperature=None)  # nulls keep the route's values
    streamed = check_stream(await post_stream(running, "/chat/completions", {**body, "stream_options": {"include_usage": True}}),
                            model="rp", include_usage=True)
    assert streamed.text == "*SeraphinaHello there!"  # the prefill (trailing space stripped), then the answer
    [sent] = upstream.requests("/v1/messages")
    assert (sent.json["max_tokens"], sent.json["temperature"]) == (100, 0.5)
    assert sent.json["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": "*Seraphina"}]}
    assert sent.json["messages"][0]["role"] == "user"  # SillyTavern's assistant-first chat got a user turn first
    assert [b["text"] for b in sent.json["system"]] == list(ST_SYSTEMS)
    # a client value beats the default
    status, _, data = await post_json(running, "/chat/completions", {**body, "max_tokens": 42, "stream": False})
    assert status == 200 and check_answer(data, model="rp")["choices"][0]["message"]["content"] == "*SeraphinaHi! My name is Claude."
    assert upstream.requests("/v1/messages")[-1].json["max_tokens"] == 42


async def test_llamacpp_model_template_overrides_the_models_own(upstream: ReplayUpstream, rosetta: Any) -> None:
    FAKES["llamacpp"].install(upstream)
    config = config_for("llamacpp", upstream.url, template="alpaca", params={"top_k": 20, "min_p": 0.1})
    config["models"].append({"name": "auto", "backend": "be", "model": "gemma-3-270m"})
    running = await rosetta(config)
    messages = [{"role": "user", "content": "Hi"}]
    for name in ("rp", "auto"):
        status, _, data = await post_json(running, "/chat/completions", {"model": name, "messages": messages, "max_tokens": 8})
        assert status == 200, data
    alpaca, auto = (r.json for r in upstream.requests("/completion"))
    assert alpaca["prompt"] == "### Instruction:\nHi\n\n### Response:\n"
    assert alpaca["stop"] == ["\n### Instruction:", "\n### Response:"]
    assert (alpaca["top_k"], alpaca["min_p"]) == (20, 0.1)
    # the model's own template from /props (the captured model's is ChatML)
    assert auto["prompt"] == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert "top_k" not in auto


async def test_ollama_model_options(upstream: ReplayUpstream, rosetta: Any) -> None:
    FAKES["ollama"].install(upstream)
    running = await rosetta(config_for("ollama", upstream.url, num_ctx=4096, keep_alive="10m", raw=False,
                                       params={"top_k": 30, "repeat_penalty": 1.2}))
    status, _, data = await post_json(running, "/completions", {"model": "rp", "prompt": "Why is the sky blue?", "max_tokens": 20})
    assert status == 200 and check_answer(data, model="rp", operation="completion")
    [sent] = upstream.requests("/api/generate")
    assert sent.json["raw"] is False and sent.json["keep_alive"] == "10m"
    assert sent.json["options"] == {"top_k": 30, "repeat_penalty": 1.2, "num_predict": 20, "num_ctx": 4096}
    assert not upstream.requests("/api/show")  # num_ctx came from the model's options


async def test_horde_model_options(upstream: ReplayUpstream, rosetta: Any) -> None:
    FAKES["horde"].install(upstream)
    running = await rosetta(config_for("horde", upstream.url, models=[HORDE_MODEL, "koboldcpp/other"], max_context_length=2048,
                                       template="alpaca", params={"max_tokens": 64}))
    status, headers, data = await post_json(running, "/chat/completions", {"model": "rp", "messages": [{"role": "user", "content": "Hi"}]})
    assert status == 200 and check_answer(data, model="rp")
    [sent] = upstream.requests("/api/v2/generate/text/async")
    assert sent.json["models"] == [HORDE_MODEL, "koboldcpp/other"]
    assert sent.json["params"]["max_context_length"] == 2048 and sent.json["params"]["max_length"] == 64
    assert sent.json["prompt"] == "### Instruction:\nHi\n\n### Response:\n"
    assert headers["x-rosetta-horde-worker"] == "lab-capture-worker"


# --- 5. what odd clients send --------------------------------------------------------------------------
ALL_NULLS = {
    # every optional field as an explicit null, the way langchain and pydantic clients send them
    name: None
    for name in (
        "temperature", "top_p", "n", "stream", "stop", "max_tokens", "max_completion_tokens", "presence_penalty",
        "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "seed", "tools", "tool_choice",
        "response_format", "stream_options", "user", "parallel_tool_calls", "reasoning_effort", "metadata",
        "store", "service_tier", "modalities", "audio", "prediction", "functions", "function_call",
    )
}
ODD_TEXT = "Ünïcödé 😀 𝔘𝔫𝔦 \u202eRTL\u202c \u0000NUL \ufeffBOM 中文 \"quotes\" \\back\\slash </s> <|im_end|>"


@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, "claude"])
async def test_langchain_nulls_and_content_parts(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    FAKES[kind].install(upstream)
    running = await rosetta(config_for(kind, upstream.url))
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}], "name": None},
        {"role": "user", "content": [{"type": "text", "text": ODD_TEXT}, {"type": "text", "text": " and more"}], "name": None},
    ]
    status, headers, data = await post_json(running, "/chat/completions", {"model": "rp", "messages": messages, **ALL_NULLS})
    assert status == 200, data
    check_answer(data, model="rp")
    [sent] = upstream.requests(generate_path(FAKES[kind], False))
    assert ODD_TEXT + " and more" in native_text(kind, sent.json)
    assert "Be brief." in native_text(kind, sent.json)


@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, "claude"])
async def test_empty_stop_and_a_huge_max_tokens(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    FAKES[kind].install(upstream)
    running = await rosetta(config_for(kind, upstream.url))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], "stop": "", "max_tokens": 2**31}
    status, headers, data = await post_json(running, "/chat/completions", body)
    if kind in ("kobold", "llamacpp", "ooba"):  # they know the context: the request cannot fit
        assert status == 400 and check_error(data)["code"] == "context_length_exceeded"
        return
    assert status == 200, data
    check_answer(data, model="rp")
    [sent] = upstream.requests(generate_path(FAKES[kind], False))
    assert native_stops(kind, sent.json) == [s for s in native_stops(kind, sent.json) if s]  # no empty stop string sent
    assert "whitespace" not in headers.get("x-rosetta-warning", "")  # nothing was dropped: "" is no stop at all


async def test_models_with_slashes_route_and_list(upstream: ReplayUpstream, rosetta: Any) -> None:
    FAKES["ollama"].install(upstream)
    upstream.add("GET", "/api/tags", http_response(200, raw("ollama/tags.json")))
    config = config_for("ollama", upstream.url)
    config["models"].append({"name": "team/rp-model/v2", "backend": "be", "model": "llama3.2"})
    running = await rosetta(config)
    for name, upstream_model in (("team/rp-model/v2", "llama3.2"), ("be/library/llama3.2:latest", "library/llama3.2:latest")):
        status, _, data = await post_json(running, "/chat/completions", {"model": name, "messages": [{"role": "user", "content": "Hi"}]})
        assert status == 200 and check_answer(data, model=name)
        assert upstream.requests("/api/chat")[-1].json["model"] == upstream_model
    async with client(running) as oa:
        ids = [m.id async for m in oa.models.list()]
        assert "team/rp-model/v2" in ids and "be/llama3.2:latest" in ids
        assert (await oa.models.retrieve("team/rp-model/v2")).owned_by == "be"
        with pytest.raises(openai.NotFoundError):
            await oa.models.retrieve("nobody/x")


async def test_concurrent_streams_do_not_mix(rosetta: Any) -> None:
    running = await rosetta({"backends": {"m": {"type": "mock", "tokens_per_second": 0}},
                             "models": [{"name": "echo", "backend": "m", "model": "echo"}]})

    async def one(i: int) -> tuple[int, str, Streamed]:
        words = " ".join(f"w{i}x{j}" for j in range(20))
        body = {"model": "echo", "messages": [{"role": "user", "content": words}], "max_tokens": 100}
        return i, words, await post_stream(running, "/chat/completions", body)

    results = await asyncio.gather(*(one(i) for i in range(40)))
    ids = set()
    for _, words, streamed in results:
        check_stream(streamed, model="echo")
        assert streamed.text == words
        ids.add(streamed.chunks[0]["id"])
    assert len(ids) == 40


@pytest.mark.parametrize("kind, marker", [("ollama", b'"content":"The"'), ("claude", b'"content":"Hello"')])
async def test_client_gone_mid_stream_closes_the_upstream(upstream: ReplayUpstream, rosetta: Any, kind: str, marker: bytes) -> None:
    from harness import eventually, post_then_hang_up

    wire, _ = CUTS[kind]
    seen: list[Received] = []

    async def generating(received: Received, writer: Writer) -> None:
        seen.append(received)
        await writer.send(wire)
        await writer.wait_closed_by_peer(5)
        received.disconnected_at = asyncio.get_running_loop().time()

    FAKES[kind].install(upstream)
    replace_route(upstream, kind, generating)
    running = await rosetta(config_for(kind, upstream.url))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Tell me a long story"}], "stream": True}
    gone = await post_then_hang_up(running, "/v1/chat/completions", body, after=marker)
    assert await eventually(lambda: bool(seen) and seen[0].disconnected_at is not None, timeout=2)
    assert seen[0].disconnected_at is not None and seen[0].disconnected_at - gone < 0.5


async def test_client_gone_before_generation_starts_generates_nothing(upstream: ReplayUpstream, rosetta: Any) -> None:
    from harness import eventually, post_then_hang_up

    counting = asyncio.Event()
    held: list[Received] = []

    async def slow_count(received: Received, writer: Writer) -> None:  # KoboldCpp busy counting the prompt
        held.append(received)
        counting.set()
        await writer.wait_closed_by_peer(5)
        received.disconnected_at = asyncio.get_running_loop().time()

    FAKES["kobold"].install(upstream)
    upstream.routes[("POST", "/api/extra/tokencount")] = [slow_count]
    running = await rosetta(config_for("kobold", upstream.url))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    await post_then_hang_up(running, "/v1/chat/completions", body, after=counting)
    assert await eventually(lambda: held[0].disconnected_at is not None, timeout=2)
    assert not upstream.requests("/api/extra/generate/stream") and not upstream.requests("/api/v1/generate")


# --- the mock must not be a way to take the gateway down ----------------------------------------------
def test_mock_caps_max_tokens_with_a_warning() -> None:
    # max_tokens 2**31 made the mock build a list of 2**31 words (24 GB: the OOM killer took the gateway)
    mock = Mock(Backend("mock", "mock", "mock://local"))
    body: dict[str, Any] = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2**31}
    req = Request("chatcmpl-x", "chat", "mock", "lorem", body, messages=tuple(body["messages"]), max_tokens=2**31)
    upstream = mock.build_request(req)
    assert upstream.json["max_tokens"] <= 32768
    assert any("max_tokens" in w for w in upstream.warnings)


async def test_mock_with_a_huge_max_tokens_answers(rosetta: Any) -> None:
    running = await rosetta({"backends": {"m": {"type": "mock", "tokens_per_second": 0}},
                             "models": [{"name": "mock", "backend": "m", "model": "lorem"}]})
    body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 2**62}
    status, headers, data = await post_json(running, "/chat/completions", body)
    assert status == 200 and check_answer(data, model="mock")["choices"][0]["finish_reason"] == "length"
    assert "above this backend's maximum" in headers["x-rosetta-warning"]


@pytest.mark.parametrize("kind", ["kobold", "llamacpp", "horde"])
async def test_an_image_a_text_template_cannot_carry_is_reported(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    FAKES[kind].install(upstream)
    running = await rosetta(config_for(kind, upstream.url))
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"}, image]}]
    status, headers, data = await post_json(running, "/chat/completions", {"model": "rp", "messages": messages, "max_tokens": 16})
    assert status == 200, data
    assert "image_url" in headers.get("x-rosetta-warning", "")


# A route default must lose to the client's value also when the two name the field differently
# (SillyTavern's repetition_penalty for a default written as llama.cpp's repeat_penalty; OpenAI's
# max_tokens for a default written as max_completion_tokens).
@pytest.mark.parametrize("kind", ["kobold", "llamacpp", "ollama", "ooba", "horde"])
async def test_a_client_value_beats_a_default_under_another_name(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    own = {"kobold": "rep_pen", "llamacpp": "repeat_penalty", "ollama": "repeat_penalty", "ooba": "repetition_penalty",
           "horde": "rep_pen"}[kind]
    client_name = "rep_pen" if own == "repetition_penalty" else "repetition_penalty"
    FAKES[kind].install(upstream)
    running = await rosetta(config_for(kind, upstream.url, params={own: 1.3, "max_completion_tokens": 50}))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], client_name: 1.1, "max_tokens": 20}
    status, headers, data = await post_json(running, "/chat/completions", body)
    assert status == 200, data
    [sent] = upstream.requests(generate_path(FAKES[kind], False))
    assert native_repetition_penalty(kind, sent.json) == 1.1
    assert native_limit(kind, sent.json) == 20
    assert "disagree" not in headers.get("x-rosetta-warning", "") and "was not sent" not in headers.get("x-rosetta-warning", "")


async def test_claude_max_tokens_beats_a_max_completion_tokens_default(upstream: ReplayUpstream, rosetta: Any) -> None:
    FAKES["claude"].install(upstream)
    running = await rosetta(config_for("claude", upstream.url, params={"max_completion_tokens": 50}))
    status, _, data = await post_json(running, "/chat/completions", {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20})
    assert status == 200, data
    assert upstream.requests("/v1/messages")[0].json["max_tokens"] == 20


def test_merge_params_nulls_and_other_names() -> None:
    from proxy.pipeline import merge_params
    from translators.llamacpp import params

    defaults = {"repeat_penalty": 1.3, "temperature": 0.5, "max_completion_tokens": 50}
    # a null keeps the default; a value under any name of the field replaces it
    assert merge_params(defaults, {"temperature": None}, params)["temperature"] == 0.5
    merged = merge_params(defaults, {"repeat_penalty": None, "rep_pen": 1.1, "max_tokens": 9}, params)
    assert {k: v for k, v in merged.items() if v is not None} == {"temperature": 0.5, "rep_pen": 1.1, "max_tokens": 9}
    assert merge_params(defaults, {}, params) == defaults


# --- 6. tool calls and log probabilities through the shared renderer ---------------------------------
async def test_ollama_streamed_tool_call_is_valid_openai(upstream: ReplayUpstream, rosetta: Any) -> None:
    upstream.add("POST", "/api/show", http_response(200, raw("ollama/show.json")))
    upstream.add("POST", "/api/chat", stream_response(raw("ollama/chat_stream_tools.ndjson"), content_type="application/x-ndjson"))
    running = await rosetta(config_for("ollama", upstream.url))
    tools = sillytavern("cc_custom_tools")["tools"]
    body = {"model": "rp", "messages": [{"role": "user", "content": "Weather in Tokyo?"}], "tools": tools,
            "tool_choice": "auto", "stream_options": {"include_usage": True}}
    streamed = check_stream(await post_stream(running, "/chat/completions", body), model="rp", include_usage=True)
    calls = [call for c in streamed.chunks for choice in c["choices"] for call in choice["delta"].get("tool_calls") or ()]
    assert len(calls) == 1 and calls[0]["index"] == 0 and calls[0]["type"] == "function"
    assert calls[0]["id"].startswith("call_") and calls[0]["function"] == {"name": "get_weather", "arguments": '{"city":"Tokyo"}'}
    assert streamed.finishes == ["tool_calls"]
    assert streamed.chunks[-1]["usage"]["prompt_tokens"] == 169
    # the same answer aggregated by the openai SDK's own stream helper
    async with client(running) as oa:
        async with oa.chat.completions.stream(model="rp", messages=body["messages"], tools=tools) as events:
            final = await events.get_final_completion()
    assert final.choices[0].message.tool_calls is not None
    assert final.choices[0].message.tool_calls[0].function.arguments == '{"city":"Tokyo"}'


async def test_llamacpp_chat_logprobs_are_openai_shaped(upstream: ReplayUpstream, rosetta: Any) -> None:
    upstream.add("GET", "/props", raw("llamacpp/get_props.response.wire"))
    upstream.add("POST", "/tokenize", raw("llamacpp/post_tokenize_add_special.response.wire"))
    upstream.add("POST", "/completion", raw("llamacpp/post_completion_n_probs.response.wire"))
    running = await rosetta(config_for("llamacpp", upstream.url))
    body = {"model": "rp", "messages": [{"role": "user", "content": "The capital of France is"}], "max_tokens": 3,
            "logprobs": True, "top_logprobs": 2}
    status, _, data = await post_json(running, "/chat/completions", body)
    assert status == 200, data
    check_answer(data, model="rp")
    content = data["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == data["choices"][0]["message"]["content"] == " the capital of"
    assert all(len(t["top_logprobs"]) <= 2 for t in content)
    assert upstream.requests("/completion")[0].json["n_probs"] == 2


# --- 7. SillyTavern's Text Completion requests (every api_type it has) to every backend ----------------
TC_REQUESTS = {
    # SillyTavern 1.12.6 pointed at an OpenAI-style /v1/completions, one body per api_type
    "ooba": "ooba/tc_ooba_nonstream.jsonl",
    "tabby": "tabby/tc_tabby_stream.jsonl",
    "koboldcpp": "kobold/tc_koboldcpp_stream.jsonl",
    "llamacpp": "llamacpp/tc_llamacpp_stream.jsonl",
}


def text_completion_body(name: str) -> dict[str, Any]:
    for line in raw(TC_REQUESTS[name]).splitlines():
        entry = orjson.loads(line)
        if entry["path"].endswith("/completions") or entry["path"] == "/completion":
            return dict(entry["body_json"])
    raise LookupError(name)


@pytest.mark.parametrize(
    "kind, api_type",
    # the Horde polls at most once a second: one api_type (the one SillyTavern uses for it) is enough
    [(k, a) for k in (*TEXT_BACKENDS, *COMPLETION_ONLY, "claude") for a in sorted(TC_REQUESTS) if k != "horde" or a == "koboldcpp"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_sillytavern_text_completion_to_every_backend(
    upstream: ReplayUpstream, rosetta: Any, kind: str, api_type: str, stream: bool
) -> None:
    fake = FAKES[kind]
    fake.install(upstream)
    running = await rosetta(config_for(kind, upstream.url))
    body = {**text_completion_body(api_type), "model": "rp"}
    if stream:
        streamed = check_stream(await post_stream(running, "/completions", body), model="rp", operation="completion")
        assert streamed.text
    else:
        status, headers, data = await post_json(running, "/completions", {**body, "stream": False})
        assert status == 200, data
        check_answer(data, model="rp", operation="completion")
    [sent] = upstream.requests(generate_path(fake, stream, "completion"))
    assert body["prompt"] in native_text(kind, sent.json)
    assert native_limit(kind, sent.json) == 300
    assert "\nUser:" in native_stops(kind, sent.json)


@pytest.mark.parametrize(
    "kind, path, wire, text, message",
    [
        # errors the servers document sending after the 200
        ("ollama", "/api/generate", stream_response(raw("ollama/generate_stream_error.ndjson"), content_type="application/x-ndjson"),
         " Yes.Ican", "an error was encountered while running the model"),
        ("tabby", "/v1/completions", stream_response(raw("tabby/completion_stream_error.sse")),
         " Paris.", "Completion aborted. Please check the server console."),
    ],
)
async def test_documented_in_stream_errors_end_the_stream_cleanly(
    upstream: ReplayUpstream, rosetta: Any, kind: str, path: str, wire: bytes, text: str, message: str
) -> None:
    upstream.add("POST", path, wire)
    upstream.add("POST", "/api/show", http_response(200, raw("ollama/show.json")))
    running = await rosetta(config_for(kind, upstream.url))
    streamed = await post_stream(running, "/completions", {"model": "rp", "prompt": "Is it?", "max_tokens": 8,
                                                           "stream_options": {"include_usage": True}})
    assert streamed.status == 200 and streamed.done
    *answer, last = streamed.chunks
    assert "".join(c["choices"][0]["text"] for c in answer) == text
    assert last["choices"] == [] and message in check_error({"error": last["error"]})["message"]


async def test_keep_alive_comments_while_the_backend_thinks(rosetta: Any) -> None:
    running = await rosetta({
        "server": {"keepalive_seconds": 0.05},
        "backends": {"m": {"type": "mock", "tokens_per_second": 0, "first_token_delay": 0.3}},
        "models": [{"name": "mock", "backend": "m", "model": "echo"}],
    })
    body: dict[str, Any] = {"model": "mock", "messages": [{"role": "user", "content": "one two three"}],
                            "stream_options": {"include_usage": True}}
    streamed = check_stream(await post_stream(running, "/chat/completions", body), model="mock", include_usage=True)
    assert streamed.text == "one two three"
    assert streamed.comments and all(c == ": keep-alive" for c in streamed.comments)
    async with client(running) as oa:  # the SDK skips the comments
        stream = await oa.chat.completions.create(model="mock", messages=body["messages"], stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "one two three"


async def test_claude_never_gets_a_whitespace_only_text_block(upstream: ReplayUpstream, rosetta: Any) -> None:
    # Claude answers 400 "messages: text content blocks must contain non-whitespace text" to a
    # message whose only text is whitespace (API behaviour tabulated in LibreChat-AI/agents#124);
    # SillyTavern sends such turns (an empty swipe, a bare newline to make the character go on).
    FAKES["claude"].install(upstream)
    running = await rosetta(config_for("claude", upstream.url))
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "  \n"},
        {"role": "user", "content": [{"type": "text", "text": "\n"}]},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Go on"},
    ]
    status, _, data = await post_json(running, "/chat/completions", {"model": "rp", "messages": messages})
    assert status == 200, data
    [sent] = upstream.requests("/v1/messages")
    for turn in sent.json["messages"]:
        texts = [b["text"] for b in turn["content"] if b["type"] == "text"]
        assert any(t.strip() for t in texts), turn
    assert [t["role"] for t in sent.json["messages"]] == ["user", "assistant", "user"]
