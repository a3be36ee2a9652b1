"""llama.cpp translator: context, template and models (a fake transport answering with captured
bodies), and end to end (the OpenAI client → Rosetta → a fake llama-server replaying captured bytes).

Every answer here is bytes recorded from a real ``llama-server`` (commit 0c1e57098, models
gemma-3-270m and SmolLM2-135M), copied into ``transcripts/llamacpp/``; the native request is
compared with the captured request and with what SillyTavern sends to llama.cpp.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Mapping

import orjson
import pytest
from llamacpp_helpers import GEMMA, HERE, JSON, STREAM_TOKENS, URL, body, captured_request, completion, translator, wire

from translators.base import Frame, Upstream
from translators.errors import ContextLengthExceeded
from translators.request import Request

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
