"""Ollama translator: native requests and the events for Ollama's documented answers.

There are no captures of a real Ollama server: the answers in ``transcripts/ollama/`` are the
examples of Ollama's own documentation (``docs/api.md``, ``docs/api/streaming.mdx``,
``docs/api/errors.mdx`` in github.com/ollama/ollama; ``SOURCES.md`` there says which file is
which). The native request is compared with what SillyTavern sends to Ollama.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, Mapping

import orjson
import pytest

from proxy.decoders import decode_all
from translators.base import Backend, Frame, Upstream
from translators.errors import InvalidRequest, Unsupported, UpstreamError
from translators.events import Finish, Meta, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from translators.ollama import ModelOptions, Ollama, model_options
from translators.request import Request

HERE = Path(__file__).parent / "transcripts" / "ollama"
PIECES = (1, 2, 7, 4096)
URL = "http://127.0.0.1:11434"


def load(name: str) -> Any:
    return orjson.loads((HERE / name).read_bytes())


def sillytavern(name: str) -> dict[str, Any]:
    """The body SillyTavern sent in a ``tc_*.jsonl`` capture."""
    return orjson.loads((HERE / name).read_bytes().splitlines()[0])["body_json"]


def translator(**options: Any) -> Ollama:
    return Ollama(Backend("ollama", "ollama", URL, options=options))


def chat(body: dict[str, Any], **kw: Any) -> Request:
    full = {"model": "llama", **body}
    return Request(
        id="chatcmpl-0123456789abcdef", operation="chat", model="llama", upstream_model=kw.pop("upstream", "llama3.2"),
        body=full, stream=bool(full.get("stream")), messages=tuple(full["messages"]),
        stop=tuple(kw.pop("stop", ())), max_tokens=full.get("max_tokens"), options=kw.pop("options", ModelOptions(num_ctx=8192)),
    )


def completion(body: dict[str, Any], **kw: Any) -> Request:
    full = {"model": "x", **body}
    return Request(
        id="cmpl-0123456789abcdef", operation="completion", model="x", upstream_model=kw.pop("upstream", "capture-model"),
        body=full, stream=bool(full.get("stream")), prompt=full["prompt"], stop=tuple(kw.pop("stop", ())),
        max_tokens=full.get("max_tokens"), options=kw.pop("options", ModelOptions()),
    )


async def frames_of(raw: bytes, piece: int) -> AsyncIterator[Frame]:
    for frame in decode_all(raw, "ndjson", piece):
        yield frame


async def stream_events(t: Ollama, name: str, req: Request, piece: int) -> list[Any]:
    return [e async for e in t.parse_stream(frames_of((HERE / name).read_bytes(), piece), req)]


# --- native requests ----------------------------------------------------------------------

def test_completion_request_is_what_sillytavern_sends() -> None:
    # SillyTavern's generic text-completion payload (the one it sends to llama.cpp) given to
    # Rosetta as an OpenAI completion body must become what SillyTavern sends to Ollama.
    generic = sillytavern("../llamacpp/tc_llamacpp_stream.jsonl")
    expected = sillytavern("tc_ollama_stream.jsonl")
    body = {k: v for k, v in generic.items() if k not in ("api_type", "api_server")}
    req = completion(body, stop=["\nUser:"])
    upstream = translator(keep_alive=-1).build_request(req)
    assert upstream == Upstream(
        "POST", f"{URL}/api/generate", {"Content-Type": "application/json"}, {**expected, "truncate": False}, True
    )
    assert any("dry_multiplier" in w for w in upstream.warnings)  # llama.cpp-only keys are named, not sent


def test_nonstream_completion_matches_sillytavern() -> None:
    generic = sillytavern("../llamacpp/tc_llamacpp_nonstream.jsonl")
    expected = sillytavern("tc_ollama_nonstream.jsonl")
    body = {k: v for k, v in generic.items() if k not in ("api_type", "api_server")}
    upstream = translator(keep_alive=-1).build_request(completion(body, stop=["\nUser:"]))
    assert upstream.json == {**expected, "truncate": False}
    assert upstream.stream is False


def test_chat_request() -> None:
    req = chat(
        {
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is in this image?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Toronto\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "11 degrees celsius"},
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "max_tokens": 64, "temperature": 0.2, "top_k": 20, "seed": 7, "stream": True,
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
            "reasoning_effort": "xhigh", "user": "someone",
        },
        stop=["###"],
        options=ModelOptions(num_ctx=8192, keep_alive="10m"),
    )
    upstream = translator().build_request(req)
    assert upstream == Upstream(
        "POST",
        f"{URL}/api/chat",
        {"Content-Type": "application/json"},
        {
            "model": "llama3.2",
            "stream": True,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "what is in this image?", "images": ["iVBORw0KGgo="]},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Toronto"}}}]},
                {"role": "tool", "content": "11 degrees celsius", "tool_name": "get_weather"},
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "options": {"temperature": 0.2, "top_k": 20, "seed": 7, "num_predict": 64, "stop": ["###"], "num_ctx": 8192},
            "keep_alive": "10m",
            "truncate": False,
            "format": {"type": "object"},
            "think": "max",
        },
        True,
    )
    assert "user is ignored by this backend" in upstream.warnings


def test_completion_suffix_uses_the_template_and_raw_is_configurable() -> None:
    t = translator(num_ctx=4096)
    fim = t.build_request(completion({"prompt": "def gcd(a, b):", "suffix": "    return result"}))
    assert fim.json["raw"] is False and fim.json["suffix"] == "    return result"
    templated = t.build_request(completion({"prompt": "Hi"}, options=ModelOptions(raw=False)))
    assert templated.json["raw"] is False and templated.json["options"] == {"num_ctx": 4096}
    plain = t.build_request(completion({"prompt": "Hi", "response_format": {"type": "json_object"}}))
    assert plain.json["raw"] is True and plain.json["format"] == "json"


def test_truncate_can_be_allowed() -> None:
    upstream = translator(truncate=True).build_request(completion({"prompt": "Hi"}, options=ModelOptions(num_ctx=2048)))
    assert "truncate" not in upstream.json


def test_unknown_context_size_is_a_warning() -> None:
    upstream = translator().build_request(completion({"prompt": "Hi"}))
    assert "options" not in upstream.json
    assert any("context size is unknown" in w for w in upstream.warnings)


@pytest.mark.parametrize(
    "body, param",
    [
        ({"n": 2}, "n"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"tool_choice": "required", "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice"),
        ({"logprobs": True}, None),  # chat logprobs are supported
    ],
)
def test_unsupported_chat_fields(body: dict[str, Any], param: str | None) -> None:
    req = chat({"messages": [{"role": "user", "content": "hi"}], **body})
    if param is None:
        assert translator().build_request(req).json["logprobs"] is True
        return
    with pytest.raises(Unsupported) as info:
        translator().build_request(req)
    assert info.value.param == param


def test_completion_logprobs_and_remote_images_are_refused() -> None:
    with pytest.raises(Unsupported) as info:
        translator().build_request(completion({"prompt": "Hi", "logprobs": 2}))
    assert info.value.param == "logprobs"
    remote = chat({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]})
    with pytest.raises(Unsupported) as info:
        translator().build_request(remote)
    assert info.value.param == "messages[0].content[0].image_url.url"
    bad = chat({"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]})
    with pytest.raises(InvalidRequest):
        translator().build_request(bad)


def test_tool_choice_none_sends_no_tools() -> None:
    req = chat({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "none",
                "tools": [{"type": "function", "function": {"name": "f"}}]})
    assert "tools" not in translator().build_request(req).json


def test_own_names_win_over_aliases_and_the_v1_url_is_understood() -> None:
    t = Ollama(Backend("ollama", "ollama", URL + "/v1", api_key="cloud-key", options={"num_ctx": 2048}))
    upstream = t.build_request(completion({"prompt": "Hi", "repeat_penalty": 1.3, "rep_pen": 1.05, "think": False, "keep_alive": 0}))
    assert upstream.url == f"{URL}/api/generate"
    assert upstream.headers == {"Content-Type": "application/json", "Authorization": "Bearer cloud-key"}
    assert upstream.json["options"] == {"repeat_penalty": 1.3, "num_ctx": 2048}
    assert (upstream.json["think"], upstream.json["keep_alive"]) == (False, 0)
    assert any("rep_pen and repeat_penalty disagree" in w for w in upstream.warnings)


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
