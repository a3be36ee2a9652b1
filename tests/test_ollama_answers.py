"""Ollama translator: the events for Ollama's documented answers, the model list and the context
size, and end to end (the OpenAI client → Rosetta → a fake Ollama answering with the docs' bytes).

There are no captures of a real Ollama server: the answers in ``transcripts/ollama/`` are the
examples of Ollama's own documentation (``docs/api.md``, ``docs/api/streaming.mdx``,
``docs/api/errors.mdx`` in github.com/ollama/ollama; ``SOURCES.md`` there says which file is
which). The native request is compared with what SillyTavern sends to Ollama.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Mapping

import orjson
import pytest
from ollama_helpers import HERE, URL, chat, completion, translator

from proxy.decoders import decode_all
from translators.base import Frame, Upstream
from translators.errors import UpstreamError
from translators.events import Finish, Meta, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from translators.ollama import ModelOptions, Ollama, model_options
from translators.request import Request

PIECES = (1, 2, 7, 4096)


def load(name: str) -> Any:
    return orjson.loads((HERE / name).read_bytes())


async def frames_of(raw: bytes, piece: int) -> AsyncIterator[Frame]:
    for frame in decode_all(raw, "ndjson", piece):
        yield frame


async def stream_events(t: Ollama, name: str, req: Request, piece: int) -> list[Any]:
    return [e async for e in t.parse_stream(frames_of((HERE / name).read_bytes(), piece), req)]


# --- answers ------------------------------------------------------------------------------

@pytest.mark.parametrize("piece", PIECES)
async def test_generate_stream(piece: int) -> None:
    events = await stream_events(translator(), "generate_stream.ndjson", completion({"prompt": "?", "stream": True}), piece)
    assert events == [
        Meta(model="gemma4"),
        TextDelta("That"), TextDelta("'"), TextDelta("s"), TextDelta(" a"), TextDelta(" fantastic"),
        TextDelta(" question"), TextDelta("!"),
        Finish("stop"),
    ]


@pytest.mark.parametrize("piece", PIECES)
async def test_chat_stream(piece: int) -> None:
    req = chat({"messages": [{"role": "user", "content": "why is the sky blue?"}], "stream": True})
    events = await stream_events(translator(), "chat_stream.ndjson", req, piece)
    assert events == [Meta(model="llama3.2"), TextDelta("The"), Finish("stop"), Usage(26, 282)]


@pytest.mark.parametrize("piece", PIECES)
async def test_chat_stream_tool_call(piece: int) -> None:
    req = chat({"messages": [{"role": "user", "content": "what is the weather in tokyo?"}], "stream": True})
    events = await stream_events(translator(), "chat_stream_tools.ndjson", req, piece)
    assert events == [
        Meta(model="llama3.2"),
        ToolCallDelta(0, "call_456789abcdef_0", "get_weather", '{"city":"Tokyo"}'),
        Finish("tool_calls"),
        Usage(169, 15),
    ]


@pytest.mark.parametrize("piece", PIECES)
async def test_stream_error_line(piece: int) -> None:
    req = completion({"prompt": "?", "stream": True})
    seen: list[Any] = []
    with pytest.raises(UpstreamError) as info:
        async for event in translator().parse_stream(frames_of((HERE / "generate_stream_error.ndjson").read_bytes(), piece), req):
            seen.append(event)
    assert seen == [Meta(model="gemma4"), TextDelta(" Yes"), TextDelta("."), TextDelta("I"), TextDelta("can")]
    assert "an error was encountered while running the model" in info.value.message


async def test_stream_cut_before_done() -> None:
    raw = (HERE / "chat_stream.ndjson").read_bytes().splitlines(keepends=True)[0]
    req = chat({"messages": [{"role": "user", "content": "hi"}], "stream": True})
    with pytest.raises(UpstreamError) as info:
        [e async for e in translator().parse_stream(frames_of(raw, 7), req)]
    assert info.value.kind == "cut_mid_stream"


def test_nonstream_answers() -> None:
    t = translator()
    req = chat({"messages": [{"role": "user", "content": "why is the sky blue?"}]})
    assert list(t.parse_response(load("chat_nonstream.json"), req)) == [
        Meta(model="llama3.2"), TextDelta("Hello! How are you today?"), Finish("stop"), Usage(26, 298),
    ]
    assert list(t.parse_response(load("chat_nonstream_tools.json"), req)) == [
        Meta(model="llama3.2"),
        ToolCallDelta(0, "call_456789abcdef_0", "get_weather", '{"city":"Tokyo"}'),
        Finish("tool_calls"),
        Usage(169, 18),
    ]
    assert list(t.parse_response(load("chat_structured.json"), req)) == [
        Meta(model="llama3.1"), TextDelta('{"age": 22, "available": false}'), Finish("stop"), Usage(34, 12),
    ]
    assert list(t.parse_response(load("generate_nonstream.json"), completion({"prompt": "Why is the sky blue?"}))) == [
        Meta(model="llama3.2"), TextDelta("The sky is blue because it is the color of the sky."), Finish("stop"), Usage(26, 290),
    ]


def test_thinking_length_and_logprobs() -> None:
    # Built from the field names of docs/openapi.yaml (ChatStreamEvent.message.thinking, the
    # Logprob / TokenLogprob schemas) and llm/server.go DoneReason "length": the docs show no
    # example object with these fields.
    req = chat({"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 1})
    body = {
        "model": "qwen3", "created_at": "2025-10-26T17:15:24.166576Z",
        "message": {"role": "assistant", "content": "Hi", "thinking": "Greet back."},
        "logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}]}],
        "done": True, "done_reason": "length", "prompt_eval_count": 9, "eval_count": 1,
    }
    assert list(translator().parse_response(body, req)) == [
        Meta(model="qwen3"),
        ReasoningDelta("Greet back."),
        TextDelta("Hi", 0, {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105],
                                           "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}]}]}),
        Finish("length"),
        Usage(9, 1),
    ]


def test_errors() -> None:
    t = translator()
    missing = t.parse_error(404, b'{"error":"model \\"nope\\" not found, try pulling it first"}', {})
    assert (missing.status, missing.code) == (404, "model_not_found")
    assert "nope" in missing.message
    too_long = t.parse_error(
        500, b'{"error":"the prompt is longer than the context length currently available to the model"}', {}
    )
    assert (too_long.status, too_long.code, too_long.type) == (400, "context_length_exceeded", "invalid_request_error")
    broken = t.parse_error(500, b'{"error":"the model failed to generate a response"}', {})
    assert (broken.status, broken.kind) == (502, "5xx")


# --- model list and context size ----------------------------------------------------------

class FakeResponse:
    def __init__(self, status: int, body: bytes) -> None:
        self.status: int = status
        self.headers: Mapping[str, str] = {}
        self._body = body
        self.closed = False

    async def read(self) -> bytes:
        return self._body

    def frames(self, framing: str) -> AsyncIterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True


class FakeTransport:
    """Answers by path; records what was sent."""

    def __init__(self, answers: dict[str, tuple[int, bytes]]) -> None:
        self.answers = answers
        self.sent: list[Upstream] = []

    async def send(self, upstream: Upstream) -> FakeResponse:
        self.sent.append(upstream)
        status, body = self.answers[upstream.url.removeprefix(URL)]
        return FakeResponse(status, body)

    async def sleep(self, seconds: float) -> None:
        return None

    def now(self) -> float:
        return 0.0


async def test_list_models() -> None:
    transport = FakeTransport({"/api/tags": (200, (HERE / "tags.json").read_bytes())})
    names = await translator().list_models(transport)
    assert names == [m["model"] for m in load("tags.json")["models"]]
    assert transport.sent == [Upstream("GET", f"{URL}/api/tags", {"Content-Type": "application/json"})]


async def test_prepare_takes_num_ctx_from_api_show_once() -> None:
    transport = FakeTransport({"/api/show": (200, (HERE / "show.json").read_bytes())})
    t = translator(auto_num_ctx_max=32768)
    req = completion({"prompt": "Hi"}, upstream="llama3.2")
    prepared = await t.prepare(transport, req)
    assert model_options(prepared) == ModelOptions(num_ctx=8192)
    assert t.build_request(prepared).json["options"] == {"num_ctx": 8192}
    await t.prepare(transport, req)
    assert transport.sent == [Upstream("POST", f"{URL}/api/show", {"Content-Type": "application/json"}, {"model": "llama3.2"})]
    capped = await translator(auto_num_ctx_max=4096).prepare(transport, req)
    assert model_options(capped) == ModelOptions(num_ctx=4096)


async def test_prepare_asks_again_when_the_model_is_unknown() -> None:
    transport = FakeTransport({"/api/show": (404, b'{"error":"model \\"nope\\" not found, try pulling it first"}')})
    t = translator()
    req = completion({"prompt": "Hi"}, upstream="nope")
    assert await t.prepare(transport, req) is req
    assert await t.prepare(transport, req) is req
    assert len(transport.sent) == 2


async def test_prepare_leaves_configured_num_ctx_alone() -> None:
    transport = FakeTransport({})
    req = completion({"prompt": "Hi"}, options=ModelOptions(num_ctx=1024))
    assert await translator().prepare(transport, req) is req
    other = completion({"prompt": "Hi"})
    assert await translator(num_ctx=2048).prepare(transport, other) is other
    assert transport.sent == []


# --- end to end: the OpenAI client → Rosetta → a fake Ollama answering with the docs' bytes -

def ndjson_response(name: str) -> bytes:
    from harness import stream_response

    return stream_response((HERE / name).read_bytes(), content_type="application/x-ndjson")


def app_config(url: str, **model: Any) -> dict[str, Any]:
    return {
        "backends": {"ollama": {"type": "ollama", "url": url, "keep_alive": "5m"}},
        "models": [{"name": "llama", "backend": "ollama", "model": "llama3.2", **model}],
    }


def openai_client(running: Any) -> Any:
    import openai

    return openai.AsyncOpenAI(base_url=running.base_url, api_key="sk-client", max_retries=0)


async def test_e2e_chat_stream(upstream: Any, rosetta: Any) -> None:
    from harness import http_response

    upstream.add("POST", "/api/show", http_response(200, load("show.json")))
    upstream.add("POST", "/api/chat", ndjson_response("chat_stream.ndjson"))
    running = await rosetta(app_config(upstream.url))
    stream = await openai_client(running).chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "why is the sky blue?"}], max_tokens=300,
        stream=True, stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (26, 282)
    assert upstream.requests("/api/chat")[0].json == {
        "model": "llama3.2", "stream": True, "messages": [{"role": "user", "content": "why is the sky blue?"}],
        "options": {"num_predict": 300, "num_ctx": 8192}, "keep_alive": "5m", "truncate": False,
    }


async def test_e2e_tool_call_answer(upstream: Any, rosetta: Any) -> None:
    from harness import http_response

    upstream.add("POST", "/api/chat", http_response(200, load("chat_nonstream_tools.json")))
    running = await rosetta(app_config(upstream.url, num_ctx=4096))
    answer = await openai_client(running).chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "what is the weather in tokyo?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    )
    (call,) = answer.choices[0].message.tool_calls
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city":"Tokyo"}')
    assert call.id.startswith("call_")
    assert answer.choices[0].finish_reason == "tool_calls"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (169, 18)
    assert not upstream.requests("/api/show")  # num_ctx came from config


async def test_e2e_completion_stream_and_model_list(upstream: Any, rosetta: Any) -> None:
    from harness import http_response

    upstream.add("POST", "/api/generate", ndjson_response("generate_stream.ndjson"))
    upstream.add("GET", "/api/tags", http_response(200, load("tags.json")))
    running = await rosetta(app_config(upstream.url, num_ctx=4096))
    client = openai_client(running)
    stream = await client.completions.create(model="llama", prompt="Is this", max_tokens=20, stream=True)
    text = "".join([c.choices[0].text async for c in stream if c.choices])
    assert text == "That's a fantastic question!"
    sent = upstream.requests("/api/generate")[0].json
    assert sent["raw"] is True and sent["prompt"] == "Is this" and sent["options"] == {"num_predict": 20, "num_ctx": 4096}
    models = [m.id async for m in client.models.list()]
    assert "llama" in models
