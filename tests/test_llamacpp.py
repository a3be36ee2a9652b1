"""llama.cpp translator: native ``/completion`` requests and the events for captured answers.

Every answer here is bytes recorded from a real ``llama-server`` (commit 0c1e57098, models
gemma-3-270m and SmolLM2-135M), copied into ``transcripts/llamacpp/``; the native request is
compared with the captured request and with what SillyTavern sends to llama.cpp.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, Mapping

import orjson
import pytest

from proxy.decoders import decode_all
from translators.base import Backend, Frame, Upstream
from translators.errors import ContextLengthExceeded, InvalidRequest, Unsupported, UpstreamError
from translators.events import Finish, Meta, TextDelta, Usage
from translators.llamacpp import LlamaCpp
from translators.request import Request

HERE = Path(__file__).parent / "transcripts" / "llamacpp"
PIECES = (1, 2, 7, 4096)
URL = "http://127.0.0.1:8080"
GEMMA = "/data/llm/models/gemma-3-270m-q4_k_m.gguf"
SMOLLM = "/data/llm/models/SmolLM2-135M-Instruct.Q4_1.gguf"
JSON = {"Content-Type": "application/json"}


def captured_request(name: str) -> dict[str, Any]:
    """The JSON body of a captured ``.request.http``."""
    return orjson.loads((HERE / f"{name}.request.http").read_bytes().split(b"\r\n\r\n", 1)[1])


def body(name: str) -> bytes:
    """A captured response body (de-chunked)."""
    return (HERE / f"{name}.response.body").read_bytes()


def dechunk(wire: bytes) -> bytes:
    """The body of a chunked HTTP response as far as it was received."""
    rest = wire.split(b"\r\n\r\n", 1)[1]
    out = b""
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.strip() or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return out


def sillytavern(name: str) -> dict[str, Any]:
    return orjson.loads((HERE / name).read_bytes().splitlines()[-1])["body_json"]


def translator(**options: Any) -> LlamaCpp:
    return LlamaCpp(Backend("llama", "llamacpp", URL, options=options))


def completion(body_: dict[str, Any], **kw: Any) -> Request:
    full = {"model": "gemma", **body_}
    prompt = full["prompt"]
    stop = full.get("stop")
    return Request(
        id="cmpl-0123456789abcdef", operation="completion", model="gemma", upstream_model="gemma", body=full,
        stream=bool(full.get("stream")), prompt=prompt if isinstance(prompt, str) else None,
        stop=tuple([stop] if isinstance(stop, str) else stop or ()), max_tokens=full.get("max_tokens"), **kw,
    )


def rendered_chat(body_: dict[str, Any], prompt: str) -> Request:
    """A chat after ``prepare`` rendered it into ``prompt``."""
    full = {"model": "gemma", "messages": [{"role": "user", "content": "hi"}], **body_}
    return Request(
        id="chatcmpl-0123456789abcdef", operation="chat", model="gemma", upstream_model="gemma", body=full,
        stream=bool(full.get("stream")), messages=tuple(full["messages"]), prompt=prompt,
        max_tokens=full.get("max_tokens"),
    )


async def frames_of(raw: bytes, piece: int) -> AsyncIterator[Frame]:
    for frame in decode_all(raw, "sse", piece):
        yield frame


async def stream_events(raw: bytes, req: Request, piece: int) -> list[Any]:
    return [e async for e in translator().parse_stream(frames_of(raw, piece), req)]


# --- native requests ----------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, openai",
    [
        ("post_completion", {"prompt": "The capital of France is", "max_tokens": 24, "temperature": 0.7, "top_k": 1, "seed": 42, "stop": ["\n\n"]}),
        ("post_completion_stream", {"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0.7, "top_k": 1, "seed": 42, "stream": True}),
        ("post_completion_stream_stop_word_hit", {"prompt": "The capital of France is", "max_tokens": 24, "top_k": 1, "seed": 42, "stop": " largest", "stream": True}),
        # SillyTavern's name for the penalty, llama.cpp's for the others
        ("post_completion_length_128", {"prompt": "Once upon a time, in a small village by the sea,", "max_tokens": 128, "temperature": 0.8,
                                        "top_p": 0.92, "top_k": 100, "repetition_penalty": 1.1, "seed": 7, "ignore_eos": True}),
        ("post_completion_token_prompt", {"prompt": [9259, 1902, 236764, 1217, 659, 611, 236881], "max_tokens": 8, "top_k": 1}),
        ("post_completion_n_probs", {"prompt": "The capital of France is", "max_tokens": 3, "top_k": 1, "n_probs": 2}),
    ],
)
def test_request_is_the_captured_one(name: str, openai: dict[str, Any]) -> None:
    captured = captured_request(name)
    upstream = translator().build_request(completion(openai))
    # Rosetta always says whether it streams and asks for the prompt cache (both defaults of
    # the server, sent so the request does not depend on them).
    expected = {**captured, "stream": captured.get("stream", False), "cache_prompt": True}
    assert upstream == Upstream("POST", f"{URL}/completion", JSON, expected, bool(openai.get("stream")))


def test_sillytavern_payload() -> None:
    # SillyTavern's text-completion body given to Rosetta as an OpenAI completion: the fields
    # llama.cpp reads arrive under llama.cpp's names and types (its DRY breakers as a JSON
    # array, which llama.cpp demands); the other servers' fields are left out, with a warning.
    st = sillytavern("tc_llamacpp_stream.jsonl")
    req = completion({k: v for k, v in st.items() if k not in ("api_type", "api_server")})
    upstream = translator().build_request(req)
    assert upstream.json == {
        "prompt": st["prompt"], "stream": True, "n_predict": 300, "stop": ["\nUser:"], "cache_prompt": True,
        "temperature": 0.7, "top_p": 0.5, "typical_p": 1, "seed": -1, "min_p": 0, "repeat_penalty": 1.2,
        "frequency_penalty": 0, "presence_penalty": 0, "top_k": 40, "dry_allowed_length": 2, "dry_multiplier": 0,
        "dry_base": 1.75, "dry_sequence_breakers": ["\n", ":", "\"", "*"], "dry_penalty_last_n": 0,
        "xtc_threshold": 0.1, "xtc_probability": 0, "grammar": "", "repeat_last_n": 0, "mirostat": 0,
        "mirostat_tau": 5, "mirostat_eta": 0.1, "ignore_eos": False,
        "samplers": ["top_k", "tfs_z", "typical_p", "top_p", "min_p", "temperature"], "json_schema": {},
    }
    assert upstream.headers == JSON
    (dropped,) = [w for w in upstream.warnings if w.startswith("fields this backend does not take")]
    assert "smoothing_factor" in dropped and "num_ctx" in dropped


def test_sillytavern_ui_payload_and_api_key() -> None:
    st = sillytavern("ui/ui_tc_llamacpp_generate.jsonl")
    t = LlamaCpp(Backend("llama", "llamacpp", URL + "/v1", api_key="llamacpp-secret"))
    upstream = t.build_request(completion({k: v for k, v in st.items() if k not in ("api_type", "api_server")}))
    assert upstream.url == f"{URL}/completion"
    assert upstream.headers == {**JSON, "Authorization": "Bearer llamacpp-secret"}
    assert upstream.json["logit_bias"] == [] and upstream.json["cache_prompt"] is True
    assert upstream.json["n_predict"] == 350 and upstream.json["stop"] == ["\nUser:", "\n***"]


def test_openai_fields() -> None:
    req = rendered_chat(
        {"max_completion_tokens": 50, "logit_bias": {"15043": 2.5, "2": -100}, "logprobs": True, "top_logprobs": 0,
         "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array"}}},
         "grammar": "root ::= x", "user": "u", "rep_pen": 1.05, "repeat_penalty": 1.3},
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    )
    upstream = translator(default_max_tokens=200).build_request(req)
    assert upstream.json == {
        "prompt": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "stream": False, "n_predict": 200,
        "cache_prompt": True, "logit_bias": [[15043, 2.5], [2, False]], "json_schema": {"type": "array"},
        "n_probs": 1, "repeat_penalty": 1.3,
    }
    assert "user is ignored by this backend" in upstream.warnings
    assert any("rep_pen and repeat_penalty disagree" in w for w in upstream.warnings)


@pytest.mark.parametrize(
    "openai, param",
    [
        ({"n": 2}, "n"),
        ({"echo": True}, "echo"),
        ({"suffix": "end"}, "suffix"),
        ({"logprobs": 1}, "logprobs"),
        ({"prompt": ["one", "two"]}, "prompt"),
    ],
)
def test_unsupported(openai: dict[str, Any], param: str) -> None:
    with pytest.raises(Unsupported) as info:
        translator().build_request(completion({"prompt": "x", **openai}))
    assert info.value.param == param


def test_tools_are_unsupported_and_breakers_checked() -> None:
    tools = rendered_chat({"tools": [{"type": "function", "function": {"name": "f"}}]}, "p")
    with pytest.raises(Unsupported) as info:
        translator().build_request(tools)
    assert info.value.param == "tools"
    with pytest.raises(InvalidRequest):
        translator().build_request(completion({"prompt": "x", "dry_sequence_breakers": "not json"}))


# --- answers ------------------------------------------------------------------------------

def test_whole_answers() -> None:
    t = translator()
    req = completion({"prompt": "The capital of France is"})
    assert list(t.parse_response(orjson.loads(body("post_completion")), req)) == [
        Meta(model=GEMMA),
        TextDelta(" the capital of the country of France. It is the largest city in France. It is located in the department of the"),
        Finish("length"),
        Usage(6, 24, cached_tokens=0),
    ]
    assert list(t.parse_response(orjson.loads(body("post_completion_stop_word_hit")), req)) == [
        Meta(model=GEMMA), TextDelta(" the capital of the country of France. It is the"), Finish("stop"), Usage(6, 12, cached_tokens=0),
    ]


def test_logprobs_in_chat_shape() -> None:
    req = rendered_chat({"logprobs": True, "top_logprobs": 2}, "The capital of France is")
    assert translator().build_request(req).json["n_probs"] == 2
    events = list(translator().parse_response(orjson.loads(body("post_completion_n_probs")), req))
    entry = lambda token, logprob, raw: {"token": token, "logprob": logprob, "bytes": raw}  # noqa: E731
    assert events == [
        Meta(model=GEMMA),
        TextDelta(" the capital of", 0, {"content": [
            {**entry(" the", -1.5936477184295654, [32, 116, 104, 101]), "top_logprobs": [
                entry(" the", -1.5936477184295654, [32, 116, 104, 101]), entry(" a", -2.2898948192596436, [32, 97])]},
            {**entry(" capital", -0.6523138880729675, [32, 99, 97, 112, 105, 116, 97, 108]), "top_logprobs": [
                entry(" capital", -0.6523138880729675, [32, 99, 97, 112, 105, 116, 97, 108]),
                entry(" most", -2.7160441875457764, [32, 109, 111, 115, 116])]},
            {**entry(" of", -0.1035112664103508, [32, 111, 102]), "top_logprobs": [
                entry(" of", -0.1035112664103508, [32, 111, 102]), entry(" city", -2.7486298084259033, [32, 99, 105, 116, 121])]},
        ]}),
        Finish("length"),
        Usage(6, 3, cached_tokens=0),
    ]
    # top_logprobs 0: the chosen token's logprob only
    (delta,) = [e for e in translator().parse_response(orjson.loads(body("post_completion_n_probs")), rendered_chat({"logprobs": True}, "p")) if isinstance(e, TextDelta)]
    assert [c["top_logprobs"] for c in delta.logprobs["content"]] == [[], [], []]


STREAM_TOKENS = [" the", " capital", " of", " the", " country", " of", " France", ".", " It", " is", " the"]


@pytest.mark.parametrize("piece", PIECES)
async def test_stream_to_the_limit(piece: int) -> None:
    events = await stream_events(body("post_completion_stream"), completion({"prompt": "x", "stream": True}), piece)
    assert events == [
        *[TextDelta(t) for t in STREAM_TOKENS + [" largest"]],
        Meta(model=GEMMA),
        Finish("length"),
        Usage(6, 12, cached_tokens=0),
    ]


@pytest.mark.parametrize("piece", PIECES)
async def test_stream_stop_word(piece: int) -> None:
    # the stop word's token arrives in an event with empty content, then the final event
    events = await stream_events(body("post_completion_stream_stop_word_hit"), completion({"prompt": "x", "stream": True}), piece)
    assert events == [*[TextDelta(t) for t in STREAM_TOKENS], Meta(model=GEMMA), Finish("stop"), Usage(6, 12, cached_tokens=1)]


@pytest.mark.parametrize("piece", PIECES)
async def test_stream_stopped_at_once(piece: int) -> None:
    raw = (HERE / "smollm2" / "post_completion_stream_stop.response.body").read_bytes()
    events = await stream_events(raw, completion({"prompt": "x", "stream": True}), piece)
    assert events == [Meta(model=SMOLLM), Finish("stop"), Usage(5, 1, cached_tokens=4)]


async def test_stream_cut_off() -> None:
    raw = dechunk((HERE / "post_completion_stream_disconnected.partial.wire").read_bytes())
    events: list[Any] = []
    with pytest.raises(UpstreamError) as info:
        async for event in translator().parse_stream(frames_of(raw, 7), completion({"prompt": "x", "stream": True})):
            events.append(event)
    assert info.value.kind == "cut_mid_stream"
    assert events[:4] == [TextDelta("I"), TextDelta(" know"), TextDelta(" that"), TextDelta(" dragons")]
    assert all(isinstance(e, TextDelta) for e in events)


async def test_stream_error_event() -> None:
    # llama.cpp sends a late error as `error: {...}` (local.md §3.4); the decoder's frame for it
    error = '{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error"}'

    async def frames() -> AsyncIterator[Frame]:
        yield Frame(error, "error")

    with pytest.raises(UpstreamError) as info:
        [e async for e in translator().parse_stream(frames(), completion({"prompt": "x", "stream": True}))]
    assert (info.value.status, info.value.code) == (400, "context_length_exceeded")


@pytest.mark.parametrize(
    "name, status, kind, code",
    [
        ("post_completion_no_prompt", 400, "4xx", None),
        ("post_completion_bad_json", 502, "5xx", None),
        ("post_completion_too_long", 400, "4xx", "context_length_exceeded"),
        ("get_unknown_path", 404, "4xx", None),
    ],
)
def test_errors(name: str, status: int, kind: str, code: str | None) -> None:
    wire = (HERE / f"{name}.response.wire").read_bytes()
    upstream_status = int(wire.split(b" ", 2)[1])
    error = translator().parse_error(upstream_status, body(name), {})
    assert (error.status, error.kind, error.code) == (status, kind, code)
    assert orjson.loads(body(name))["error"]["message"] in error.message


# --- context, template and models (a fake transport answering with captured bodies) --------

class FakeResponse:
    def __init__(self, status: int, data: bytes) -> None:
        self.status: int = status
        self.headers: Mapping[str, str] = {}
        self.data = data

    async def read(self) -> bytes:
        return self.data

    def frames(self, framing: str) -> AsyncIterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FakeTransport:
    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers = answers
        self.sent: list[Upstream] = []
        self.clock = 0.0

    async def send(self, upstream: Upstream) -> FakeResponse:
        self.sent.append(upstream)
        return FakeResponse(200, self.answers[upstream.url.removeprefix(URL)])

    async def sleep(self, seconds: float) -> None:
        self.clock += seconds

    def now(self) -> float:
        return self.clock


def tokens(n: int) -> bytes:
    return orjson.dumps({"tokens": list(range(n))})


async def test_prepare_checks_the_context() -> None:
    transport = FakeTransport({"/props": body("get_props"), "/tokenize": body("post_tokenize_add_special")})
    t = translator()
    req = completion({"prompt": "Hello world, how are you?", "max_tokens": 4})
    assert await t.prepare(transport, req) == req
    assert transport.sent == [
        Upstream("GET", f"{URL}/props", JSON),
        Upstream("POST", f"{URL}/tokenize", JSON, {"content": "Hello world, how are you?", "add_special": True}),
    ]
    transport.answers["/tokenize"] = tokens(3002)  # post_completion_too_long's prompt
    with pytest.raises(ContextLengthExceeded) as info:
        await t.prepare(transport, req)
    assert "2048" in info.value.message and "3002" in info.value.message
    assert [u.url for u in transport.sent].count(f"{URL}/props") == 1  # kept, not asked again
    transport.clock += 120
    transport.answers["/tokenize"] = tokens(8)
    await t.prepare(transport, req)
    assert [u.url for u in transport.sent].count(f"{URL}/props") == 2  # a minute later: asked again


async def test_the_context_check_counts_the_limit_llamacpp_will_be_sent() -> None:
    # n_ctx is 2048 in the captured /props: 8 prompt tokens + the answer's budget must fit,
    # whether the budget comes as max_tokens, SillyTavern's n_predict, or the backend default
    transport = FakeTransport({"/props": body("get_props"), "/tokenize": tokens(8)})
    for t, fields in (
        (translator(), {"n_predict": 2041}),
        (translator(), {"max_new_tokens": 2041}),
        (translator(default_max_tokens=2041), {}),
    ):
        with pytest.raises(ContextLengthExceeded):
            await t.prepare(transport, completion({"prompt": "Hello", **fields}))
    fits = completion({"prompt": "Hello", "n_predict": 2040})
    assert await translator().prepare(transport, fits) == fits


CHATML = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]


def chat(body_: dict[str, Any], **kw: Any) -> Request:
    full = {"model": "gemma", "messages": MESSAGES, **body_}
    return Request(
        id="chatcmpl-0123456789abcdef", operation="chat", model="gemma", upstream_model="gemma", body=full,
        stream=bool(full.get("stream")), messages=tuple(full["messages"]), max_tokens=full.get("max_tokens"), **kw,
    )


async def test_chat_rendered_with_the_models_own_template() -> None:
    # template unset = auto: the Jinja template /props reports (the captured server's is ChatML)
    transport = FakeTransport({"/props": body("get_props"), "/tokenize": tokens(23)})
    t = translator()
    prepared = await t.prepare(transport, chat({"max_tokens": 16, "stop": "\n\n"}, stop=("\n\n",)))
    upstream = t.build_request(prepared)
    assert upstream == Upstream(
        "POST", f"{URL}/completion", JSON,
        {"prompt": CHATML, "stream": False, "n_predict": 16, "stop": ["\n\n", "<eos>", "<|im_end|>"], "cache_prompt": True},
    )
    assert transport.sent[-1].json == {"content": CHATML, "add_special": True}  # the rendered prompt is counted
    assert [u.url for u in transport.sent].count(f"{URL}/props") == 1


async def test_chat_with_a_configured_template_and_a_prefill() -> None:
    from translators.llamacpp import ModelOptions

    transport = FakeTransport({"/props": body("get_props"), "/tokenize": tokens(30)})
    req = chat({"messages": [*MESSAGES, {"role": "assistant", "content": "The capital is"}]}, options=ModelOptions(template="llama3"))
    prepared = await translator().prepare(transport, req)
    assert prepared.prompt is not None and prepared.prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\nThe capital is")
    assert "<|eot_id|>" in prepared.stop


async def test_chat_too_long_for_the_context() -> None:
    transport = FakeTransport({"/props": body("get_props"), "/tokenize": tokens(2040)})
    with pytest.raises(ContextLengthExceeded) as info:
        await translator().prepare(transport, chat({"max_tokens": 16}))
    assert info.value.param == "messages" and "2056" in info.value.message


async def test_prepare_can_skip_the_check() -> None:
    transport = FakeTransport({})
    req = completion({"prompt": "x"})
    assert await translator(check_context=False).prepare(transport, req) == req
    assert transport.sent == []


async def test_model_template_and_models() -> None:
    transport = FakeTransport({"/props": body("get_props"), "/v1/models": body("get_v1_models")})
    t = translator()
    props = orjson.loads(body("get_props"))
    assert await t.chat_template(transport) == (props["chat_template"], "<bos>", "<eos>")
    assert await t.context_limit(transport) == 2048
    assert await t.list_models(transport) == [GEMMA]


# --- end to end: the OpenAI client → Rosetta → a fake llama-server replaying captured bytes --

def wire(name: str) -> bytes:
    return (HERE / f"{name}.response.wire").read_bytes()


def app_config(url: str, **model: Any) -> dict[str, Any]:
    return {
        "backends": {"llama": {"type": "llamacpp", "url": url, "api_key": "llamacpp-secret"}},
        "models": [{"name": "gemma", "backend": "llama", "model": "gemma-3-270m", **model}],
    }


def openai_client(running: Any) -> Any:
    import openai

    return openai.AsyncOpenAI(base_url=running.base_url, api_key="sk-client", max_retries=0)


async def test_e2e_completion_stream(upstream: Any, rosetta: Any) -> None:
    upstream.add("GET", "/props", wire("get_props"))
    upstream.add("POST", "/tokenize", wire("post_tokenize_add_special"))
    upstream.add("POST", "/completion", wire("post_completion_stream"))
    running = await rosetta(app_config(upstream.url))
    stream = await openai_client(running).completions.create(
        model="gemma", prompt="The capital of France is", max_tokens=12, temperature=0.7, seed=42, stream=True,
        stream_options={"include_usage": True}, extra_body={"top_k": 1},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "".join(STREAM_TOKENS) + " largest"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (6, 12)
    sent = upstream.requests("/completion")[0]
    assert sent.json == {**captured_request("post_completion_stream"), "cache_prompt": True}
    assert sent.headers["authorization"] == "Bearer llamacpp-secret"


async def test_e2e_answer_and_too_long_prompt(upstream: Any, rosetta: Any) -> None:
    from harness import http_response

    upstream.add("GET", "/props", wire("get_props"))
    upstream.add("POST", "/tokenize", wire("post_tokenize_add_special"), http_response(200, tokens(3002)))
    upstream.add("POST", "/completion", wire("post_completion_stop_word_hit"))
    running = await rosetta(app_config(upstream.url))
    client = openai_client(running)
    answer = await client.completions.create(model="gemma", prompt="The capital of France is", max_tokens=24, stop=[" largest"])
    assert answer.choices[0].text == " the capital of the country of France. It is the"
    assert answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (6, 12)
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        await client.completions.create(model="gemma", prompt="hello " * 3000, max_tokens=4)
    assert info.value.code == "context_length_exceeded"
    assert len(upstream.requests("/completion")) == 1  # the long prompt never reached the server


async def test_e2e_client_disconnect_closes_the_upstream(upstream: Any, rosetta: Any) -> None:
    import asyncio

    head, chunks = (HERE / "post_completion_stream_disconnected.partial.wire").read_bytes().split(b"\r\n\r\n", 1)
    closed = asyncio.Event()

    async def generating(received: Any, writer: Any) -> None:
        await writer.send(head + b"\r\n\r\n" + chunks[:400])
        if await writer.wait_closed_by_peer(5):
            closed.set()

    upstream.add("GET", "/props", wire("get_props"))
    upstream.add("POST", "/tokenize", wire("post_tokenize_add_special"))
    upstream.add("POST", "/completion", generating)
    running = await rosetta(app_config(upstream.url))
    stream = await openai_client(running).completions.create(
        model="gemma", prompt="Tell me about dragons.", max_tokens=256, stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            break
    gone = asyncio.get_running_loop().time()
    await stream.close()
    await asyncio.wait_for(closed.wait(), 5)
    assert asyncio.get_running_loop().time() - gone < 1.0


async def test_e2e_chat_stream_through_the_models_template(upstream: Any, rosetta: Any) -> None:
    upstream.add("GET", "/props", wire("get_props"))
    upstream.add("POST", "/tokenize", wire("post_tokenize_add_special"))
    upstream.add("POST", "/completion", wire("post_completion_stream"))
    running = await rosetta(app_config(upstream.url))
    stream = await openai_client(running).chat.completions.create(
        model="gemma", messages=MESSAGES, max_tokens=12, stream=True, stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(STREAM_TOKENS) + " largest"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (6, 12)
    assert upstream.requests("/completion")[0].json == {
        "prompt": CHATML, "stream": True, "n_predict": 12, "stop": ["<eos>", "<|im_end|>"], "cache_prompt": True,
    }
