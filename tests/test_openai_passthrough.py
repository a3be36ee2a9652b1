"""End to end: the official openai client → Rosetta → the ``openai`` translator → a fake
upstream replaying bytes recorded from real OpenAI-compatible servers (llama.cpp,
KoboldCpp and text-generation-webui ``/v1`` endpoints)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from harness import TRANSCRIPTS, Received, Writer, eventually, http_response, post_then_hang_up, sse_body

WIRE = TRANSCRIPTS / "openai"
SECRET = "sk-upstream-secret-123456"


def wire(name: str) -> bytes:
    return (WIRE / f"{name}.response.wire").read_bytes()


def config(url: str, **options: Any) -> dict[str, Any]:
    return {
        "backends": {"up": {"type": "openai", "url": url + "/v1", "api_key": SECRET, **options}},
        "models": [{"name": "gpt-test", "backend": "up", "model": "real-model", "params": {"temperature": 0.5}}],
    }


def client(running: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=running.base_url, api_key="sk-client", max_retries=0)


async def test_chat_non_stream_from_real_llamacpp_bytes(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/chat/completions", wire("llamacpp__post_v1_chat_completions"))
    running = await rosetta(config(upstream.url))
    answer = await client(running).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=32
    )
    assert answer.object == "chat.completion"
    assert answer.model == "gpt-test"
    assert answer.id.startswith("chatcmpl-")
    assert answer.choices[0].message.content.startswith("What is the capital of France?<|im_end|>")
    assert answer.choices[0].finish_reason == "length"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (50, 32, 82)
    sent = upstream.requests("/v1/chat/completions")[0]
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert sent.json == {
        "model": "real-model",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 32,
        "temperature": 0.5,  # the route default, since the client sent none
    }


async def test_chat_stream_with_usage_from_real_llamacpp_bytes(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/chat/completions", wire("llamacpp__post_v1_chat_completions_stream"))
    running = await rosetta(config(upstream.url))
    stream = await client(running).chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("What is the capital of France?<")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 46
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1 and chunks[0].model == "gpt-test"
    sent = upstream.requests("/v1/chat/completions")[0].json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


async def test_stream_without_include_usage_has_no_usage_chunk_but_asks_upstream(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/chat/completions", wire("llamacpp__post_v1_chat_completions_stream"))
    running = await rosetta(config(upstream.url))
    async with aiohttp.ClientSession() as http:
        async with http.post(
            running.base_url + "/chat/completions",
            json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        ) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            body = await response.read()
    events = [line[6:] for line in body.decode().split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["choices"] for c in chunks) and all("usage" not in c for c in chunks)
    assert upstream.requests()[0].json["stream_options"] == {"include_usage": True}


async def test_koboldcpp_v1_stream_http10_close_delimited(upstream: Any, rosetta: Any) -> None:
    # KoboldCpp: HTTP/1.0, ends when the socket closes, finish_reason "null" as a string,
    # the role repeated in every delta, and "data: [DONE]" without a final blank line.
    upstream.add("POST", "/v1/chat/completions", wire("koboldcpp__post_v1_chat_completions_stream"))
    running = await rosetta(config(upstream.url))
    stream = await client(running).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "What is the capital of France?"}], stream=True
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.startswith("The capital of France is")
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["length"]
    assert [c.choices[0].delta.role for c in chunks].count("assistant") == 1


async def test_ooba_stream_and_legacy_completion(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/chat/completions", wire("oobabooga__post_v1_chat_completions_stream"))
    upstream.add("POST", "/v1/completions", wire("oobabooga__post_v1_completions"))
    running = await rosetta(config(upstream.url))
    stream = await client(running).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "What is the capital of France?"
    answer = await client(running).completions.create(model="gpt-test", prompt="Paris is", max_tokens=13)
    assert answer.object == "text_completion" and answer.id.startswith("cmpl-")
    assert answer.choices[0].text == " the capital of the country of France. It is the largest"
    assert answer.usage.total_tokens == 19
    assert upstream.requests("/v1/completions")[0].json["prompt"] == "Paris is"


async def test_legacy_completion_stream_from_real_llamacpp_bytes(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/completions", wire("llamacpp__post_v1_completions_stream"))
    running = await rosetta(config(upstream.url))
    stream = await client(running).completions.create(model="gpt-test", prompt="The capital of France", stream=True)
    chunks = [c async for c in stream]
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


# The tool-call answer documented in OpenAI's API reference (openai-openapi, createChatCompletion
# "Functions" example), as OpenAI sends it.
DOCUMENTED_TOOL_ANSWER = {
    "id": "chatcmpl-abc123",
    "object": "chat.completion",
    "created": 1699896916,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc123",
                        "type": "function",
                        "function": {"name": "get_current_weather", "arguments": '{\n"location": "Boston, MA"\n}'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99},
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
        },
    }
]


async def test_tools_non_stream(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/chat/completions", http_response(200, DOCUMENTED_TOOL_ANSWER))
    running = await rosetta(config(upstream.url))
    answer = await client(running).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "Weather in Boston?"}], tools=TOOLS, tool_choice="auto"
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_abc123", "get_current_weather", '{\n"location": "Boston, MA"\n}',
    )
    assert upstream.requests()[0].json["tools"] == TOOLS


async def test_tools_streamed_as_argument_deltas(upstream: Any, rosetta: Any) -> None:
    # Shape per OpenAI's streaming docs (cloud.md §1.3): the first delta of a call carries id,
    # type and name with empty arguments; later deltas carry argument fragments only.
    base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_current_weather", "arguments": ""}}]}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"location":'}}]}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    upstream.add("POST", "/v1/chat/completions", http_response(200, sse_body(chunks), content_type="text/event-stream"))
    running = await rosetta(config(upstream.url))
    stream = await client(running).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS, stream=True
    )
    calls: dict[int, dict[str, str]] = {}
    reasons = []
    async for chunk in stream:
        for delta_call in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(delta_call.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += delta_call.id or ""
            entry["name"] += (delta_call.function.name or "") if delta_call.function else ""
            entry["arguments"] += (delta_call.function.arguments or "") if delta_call.function else ""
        reasons.append(chunk.choices[0].finish_reason)
    assert calls == {0: {"id": "call_1", "name": "get_current_weather", "arguments": '{"location": "Paris"}'}}
    assert reasons[-1] == "tool_calls"


async def test_models_list_includes_aliases_and_upstream_models(upstream: Any, rosetta: Any) -> None:
    upstream.add("GET", "/v1/models", wire("llamacpp__get_v1_models"))
    running = await rosetta(config(upstream.url))
    models = await client(running).models.list()
    ids = [m.id for m in models.data]
    assert ids[0] == "gpt-test"
    assert any(i.startswith("up/") for i in ids)
    one = await client(running).models.retrieve("gpt-test")
    assert one.id == "gpt-test" and one.owned_by == "up"
    with pytest.raises(openai.NotFoundError):
        await client(running).models.retrieve("no-such-model")
    assert SECRET not in str(models.model_dump())


@pytest.mark.parametrize(
    ("status", "headers", "expected_status", "retry_after"),
    [
        (429, {"Retry-After": "7"}, 429, "7"),
        (529, {}, 503, None),
        (503, {"Retry-After": "2"}, 503, "2"),
        (500, {}, 502, None),
        (401, {}, 401, None),
    ],
)
async def test_upstream_error_statuses_are_mapped(
    upstream: Any, rosetta: Any, status: int, headers: dict[str, str], expected_status: int, retry_after: str | None
) -> None:
    body = {"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}}
    upstream.add("POST", "/v1/chat/completions", http_response(status, body, headers=headers))
    running = await rosetta(config(upstream.url))
    async with aiohttp.ClientSession() as http:
        async with http.post(running.base_url + "/chat/completions", json={"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}) as r:
            assert r.status == expected_status
            assert r.headers.get("Retry-After") == retry_after
            error = (await r.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "slow down" in error["message"] and SECRET not in error["message"]


async def test_real_llamacpp_400_passes_through_with_its_message(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/chat/completions", wire("llamacpp__post_v1_chat_completions_no_messages"))
    running = await rosetta(config(upstream.url))
    with pytest.raises(openai.BadRequestError) as caught:
        await client(running).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
    assert "'messages' is required" in caught.value.message


async def test_connection_refused_is_502_and_timeout_is_504(upstream: Any, rosetta: Any) -> None:
    async def silent(received: Received, writer: Writer) -> None:
        await writer.wait_closed_by_peer(5)

    upstream.add("POST", "/v1/chat/completions", silent)
    running = await rosetta(
        {
            "backends": {
                "dead": {"type": "openai", "url": "http://127.0.0.1:9/v1"},
                "slow": {"type": "openai", "url": upstream.url + "/v1", "timeout": {"read": 0.2}},
            }
        }
    )
    oa = client(running)
    with pytest.raises(openai.APIStatusError) as refused:
        await oa.chat.completions.create(model="dead/m", messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 502 and refused.value.code == "upstream_unreachable"
    with pytest.raises(openai.APIStatusError) as slow:
        await oa.chat.completions.create(model="slow/m", messages=[{"role": "user", "content": "x"}])
    assert slow.value.status_code == 504


async def _stream_raw(running: Any, model: str = "gpt-test") -> list[Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            running.base_url + "/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "x"}], "stream": True},
        ) as response:
            assert response.status == 200
            body = (await response.read()).decode()
    return [e[6:] if e[6:] == "[DONE]" else orjson.loads(e[6:]) for e in body.split("\n\n") if e.startswith("data: ")]


async def test_cut_mid_stream_becomes_one_error_chunk_then_done(upstream: Any, rosetta: Any) -> None:
    first = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}
    upstream.add("POST", "/v1/chat/completions", b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + sse_body([first], done=False))
    running = await rosetta(config(upstream.url))
    events = await _stream_raw(running)
    assert events[-1] == "[DONE]"
    error_chunk = events[-2]
    assert error_chunk["choices"] == [] and "ended before the answer finished" in error_chunk["error"]["message"]
    assert [e["choices"][0]["delta"].get("content") for e in events[:-2]] == ["", "Hel"]


async def test_error_event_inside_a_200_stream(upstream: Any, rosetta: Any) -> None:
    first = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
    body = sse_body([first, {"error": {"message": "Provider returned error", "code": 502}}], done=True)
    upstream.add("POST", "/v1/chat/completions", http_response(200, body, content_type="text/event-stream"))
    running = await rosetta(config(upstream.url))
    events = await _stream_raw(running)
    assert events[-2]["choices"] == [] and "Provider returned error" in events[-2]["error"]["message"]
    assert events[-1] == "[DONE]"


async def test_sillytavern_sampler_extras_are_forwarded_or_dropped_by_option(upstream: Any, rosetta: Any) -> None:
    capture = orjson.loads((TRANSCRIPTS / "clients" / "cc_custom_include_exclude.jsonl").read_bytes().splitlines()[0])
    body = {**capture["body_json"], "model": "gpt-test"}
    answer = http_response(200, DOCUMENTED_TOOL_ANSWER)
    upstream.add("POST", "/v1/chat/completions", answer)
    running = await rosetta(config(upstream.url))
    async with aiohttp.ClientSession() as http:
        async with http.post(running.base_url + "/chat/completions", json=body) as r:
            assert r.status == 200
        sent = upstream.requests()[-1].json
        assert sent["min_p"] == 0.05 and sent["repetition_penalty"] == 1.1 and sent["seed"] == 42
        strict = await rosetta(config(upstream.url, forward_unknown=False))
        async with http.post(strict.base_url + "/chat/completions", json=body) as r:
            assert r.status == 200
            assert "min_p" in r.headers["x-rosetta-warning"]
        sent = upstream.requests()[-1].json
        assert "min_p" not in sent and "repetition_penalty" not in sent and sent["seed"] == 42


async def test_client_disconnect_closes_the_upstream_connection_within_100ms(upstream: Any, rosetta: Any) -> None:
    seen: dict[str, float] = {}
    first = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": "tick"}, "finish_reason": None}]}

    async def endless(received: Received, writer: Writer) -> None:
        await writer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + sse_body([first], done=False))
        if await writer.wait_closed_by_peer(5):
            seen["closed"] = asyncio.get_running_loop().time()

    upstream.add("POST", "/v1/chat/completions", endless)
    running = await rosetta(config(upstream.url))
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}], "stream": True}
    hung_up = await post_then_hang_up(running, "/v1/chat/completions", body, after=b"tick")
    assert await eventually(lambda: "closed" in seen), "the upstream connection was not closed"
    assert seen["closed"] - hung_up < 0.1


async def test_non_stream_client_disconnect_closes_the_upstream_within_100ms(upstream: Any, rosetta: Any) -> None:
    seen: dict[str, float] = {}
    arrived = asyncio.Event()

    async def thinking(received: Received, writer: Writer) -> None:
        arrived.set()
        if await writer.wait_closed_by_peer(5):
            seen["closed"] = asyncio.get_running_loop().time()

    upstream.add("POST", "/v1/chat/completions", thinking)
    running = await rosetta(config(upstream.url))
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}
    hung_up = await post_then_hang_up(running, "/v1/chat/completions", body, after=arrived)
    assert await eventually(lambda: "closed" in seen), "the upstream connection was not closed"
    assert seen["closed"] - hung_up < 0.1


async def test_a_backend_repeating_our_key_never_shows_it_to_the_client(upstream: Any, rosetta: Any) -> None:
    body = {"error": {"message": f"Incorrect API key provided: {SECRET}.", "type": "invalid_request_error", "code": "invalid_api_key"}}
    upstream.add("POST", "/v1/chat/completions", http_response(401, body))
    running = await rosetta(config(upstream.url))
    with pytest.raises(openai.AuthenticationError) as caught:
        await client(running).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
    assert SECRET not in str(caught.value.body) and "[REDACTED]" in caught.value.message
