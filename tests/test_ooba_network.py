"""``ooba`` (text-generation-webui), the network side (context check, cancel, models) and end to end
through the real app.

Files in ``tests/transcripts/ooba/``: ``post_*``/``get_*`` are captures of the real server
(request bytes, response wire bytes, de-chunked body); ``tc_ooba_*.jsonl`` and
``ui_tc_ooba_*.jsonl`` are SillyTavern's requests to a recording stub; ``chat_prompt.json`` is
built from the server's source (``modules/api/typing.py`` ChatPromptResponse: ``{"prompt": str}``),
as ``/v1/internal/chat-prompt`` was not captured.
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import orjson
import pytest
from harness import Received, Writer
from ooba_helpers import AUTH, CHAT_STREAM_TEXT, HERE, MODEL, URL, body, sent_json, translator
from textgen_fakes import FakeResponse, FakeTransport, chat, collect, completion, generator

from translators.base import Upstream
from translators.errors import ContextLengthExceeded
from translators.events import Finish, Meta, TextDelta
from translators.ooba import NO_TRUNCATION


def wire(name: str) -> bytes:
    return (HERE / f"{name}.response.wire").read_bytes()


# --- the network side: context check, cancel, models ------------------------------------


async def test_prepare_refuses_a_prompt_the_server_would_cut() -> None:
    count = (200, body("post_v1_internal_token_count"))  # {"length": 8}
    req = completion({"prompt": "Hello world, how are you?", "max_tokens": 12})
    fits = FakeTransport({"/v1/internal/token-count": count})
    assert await translator(context_length=20).prepare(fits, req) is req
    assert fits.sent == [
        Upstream("POST", f"{URL}/v1/internal/token-count", AUTH, {"text": "Hello world, how are you?"})
    ]
    with pytest.raises(ContextLengthExceeded) as error:
        await translator(context_length=19).prepare(FakeTransport({"/v1/internal/token-count": count}), req)
    assert error.value.param == "prompt" and error.value.status == 400


async def test_prepare_counts_the_chat_as_the_server_renders_it_untruncated() -> None:
    transport = FakeTransport(
        {
            "/v1/internal/chat-prompt": (200, (HERE / "chat_prompt.json").read_bytes()),
            "/v1/internal/token-count": (200, body("post_v1_internal_token_count")),
        }
    )
    req = chat({"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 16})
    with pytest.raises(ContextLengthExceeded) as error:
        await translator(context_length=20).prepare(transport, req)
    assert error.value.param == "messages"
    rendered = orjson.loads((HERE / "chat_prompt.json").read_bytes())["prompt"]
    assert transport.sent == [
        Upstream(
            "POST",
            f"{URL}/v1/internal/chat-prompt",
            AUTH,
            {
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 16,
                "model": "m",
                "truncation_length": NO_TRUNCATION,
            },
        ),
        Upstream("POST", f"{URL}/v1/internal/token-count", AUTH, {"text": rendered}),
    ]


async def test_prepare_does_nothing_without_a_context_size_or_when_off() -> None:
    transport = FakeTransport({})
    req = completion({"prompt": "x"})
    assert await translator().prepare(transport, req) is req
    assert await translator(context_length=10, check_context=False).prepare(transport, req) is req
    assert transport.sent == []


def partial_stream() -> bytes:
    raw = body("post_v1_completions_stream")
    return b"\n\n".join(raw.split(b"\n\n")[:3]) + b"\n\n"  # the role chunk and two tokens


async def test_client_gone_mid_stream_calls_stop_generation() -> None:
    generating = FakeResponse(200, partial_stream(), hold=True)
    transport = FakeTransport(
        {"/v1/completions": generating, "/v1/internal/stop-generation": (200, body("post_v1_internal_stop_generation"))}
    )
    t = translator()
    req = completion({"prompt": "The capital of France is"}, stream=True)
    events = generator(t.exchange(transport, t.build_request(req), req))
    assert await events.__anext__() == Meta("cmpl-1795627546870689792", MODEL, None)
    assert await events.__anext__() == TextDelta(" the")
    await events.aclose()  # what the proxy does when the client goes away
    assert transport.paths() == ["/v1/completions", "/v1/internal/stop-generation"]
    assert transport.sent[1] == Upstream("POST", f"{URL}/v1/internal/stop-generation", AUTH, {})
    assert generating.closed and transport.responses[1].closed


async def test_cancelled_while_waiting_calls_stop_generation() -> None:
    transport = FakeTransport(
        {
            "/v1/completions": FakeResponse(200, b"", hold=True),
            "/v1/internal/stop-generation": (200, body("post_v1_internal_stop_generation")),
        }
    )
    t = translator()
    req = completion({"prompt": "x"})  # non-stream: old servers ran these to the end
    task = asyncio.ensure_future(collect(t.exchange(transport, t.build_request(req), req)))
    while not transport.sent:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert transport.paths() == ["/v1/completions", "/v1/internal/stop-generation"]


async def test_no_stop_call_after_the_answer_finished_or_when_off() -> None:
    req = completion({"prompt": "x"}, stream=True)
    done = FakeTransport({"/v1/completions": (200, body("post_v1_completions_stream"))})
    t = translator()
    events = generator(t.exchange(done, t.build_request(req), req))
    async for event in events:
        if isinstance(event, Finish):
            break
    await events.aclose()
    assert done.paths() == ["/v1/completions"]

    off = FakeTransport({"/v1/completions": FakeResponse(200, partial_stream(), hold=True)})
    quiet = translator(stop_generation_on_disconnect=False)
    events = generator(quiet.exchange(off, quiet.build_request(req), req))
    await events.__anext__()
    await events.aclose()
    assert off.paths() == ["/v1/completions"]


async def test_a_failing_stop_call_does_not_mask_the_disconnect() -> None:
    transport = FakeTransport(
        {"/v1/completions": FakeResponse(200, partial_stream(), hold=True), "/v1/internal/stop-generation": (500, b"{}")}
    )
    t = translator()
    req = completion({"prompt": "x"}, stream=True)
    events = generator(t.exchange(transport, t.build_request(req), req))
    await events.__anext__()
    await events.aclose()
    assert transport.paths()[-1] == "/v1/internal/stop-generation"


async def test_list_models_names_the_loaded_model() -> None:
    transport = FakeTransport({"/v1/internal/model/info": (200, body("get_v1_internal_model_info"))})
    assert await translator().list_models(transport) == [MODEL]
    assert transport.sent == [Upstream("GET", f"{URL}/v1/internal/model/info", {"Authorization": "Bearer ooba-secret"})]
    none_loaded = FakeTransport({"/v1/internal/model/info": (200, b'{"model_name":"None","lora_names":[],"loader":null}')})
    assert await translator().list_models(none_loaded) == []


# --- end to end: the openai client → Rosetta → a fake text-generation-webui --------------


def config(url: str, **options: Any) -> dict[str, Any]:
    return {
        "backends": {"ooba": {"type": "ooba", "url": url, "api_key": "ooba-secret", **options}},
        "models": [{"name": "gemma", "backend": "ooba", "model": MODEL}],
    }


def client(running: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=running.base_url, api_key="sk-client", max_retries=0)


async def test_e2e_chat_stream_from_captured_bytes(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/chat/completions", wire("post_v1_chat_completions_stream"))
    running = await rosetta(config(upstream.url))
    stream = await client(running).chat.completions.create(
        model="gemma",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=8,
        stream=True,
        extra_body={"top_k": 1},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(CHAT_STREAM_TEXT)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert all(c.model == "gemma" for c in chunks)
    assert upstream.requests("/v1/internal/stop-generation") == []  # a finished answer is not stopped
    sent = upstream.requests("/v1/chat/completions")[0]
    assert sent.headers["authorization"] == "Bearer ooba-secret"
    assert sent.json == {
        **sent_json("post_v1_chat_completions_stream"),
        "model": MODEL,
        "stream_options": {"include_usage": True},
    }


async def test_e2e_legacy_completion_from_captured_bytes(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/completions", wire("post_v1_completions"))
    running = await rosetta(config(upstream.url, context_length=2048, check_context=False))
    answer = await client(running).completions.create(
        model="gemma", prompt="The capital of France is", max_tokens=12, temperature=0.7, seed=42, extra_body={"top_k": 1}
    )
    assert answer.choices[0].text == " the capital of the country of France. It is the largest"
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (6, 13)
    sent = upstream.requests("/v1/completions")[0].json
    assert sent == {**sent_json("post_v1_completions"), "model": MODEL, "truncation_length": 2048}


async def test_e2e_client_disconnect_triggers_stop_generation(upstream: Any, rosetta: Any) -> None:
    stopped = asyncio.Event()
    captured = wire("post_v1_chat_completions_stream")
    head, rest = captured.split(b"\r\n\r\n", 1)
    first_chunks = b"\r\n".join(rest.split(b"\r\n")[:6]) + b"\r\n"  # three HTTP chunks: role, "What", " is"

    async def generating(received: Received, writer: Writer) -> None:
        await writer.send(head + b"\r\n\r\n" + first_chunks)
        await writer.wait_closed_by_peer(5)

    async def stop(received: Received, writer: Writer) -> None:
        await writer.send(wire("post_v1_internal_stop_generation"))
        stopped.set()

    upstream.add("POST", "/v1/chat/completions", generating)
    upstream.add("POST", "/v1/internal/stop-generation", stop)
    running = await rosetta(config(upstream.url))
    stream = await client(running).chat.completions.create(
        model="gemma", messages=[{"role": "user", "content": "Tell me a story"}], stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    await stream.close()
    await asyncio.wait_for(stopped.wait(), 5)
    call = upstream.requests("/v1/internal/stop-generation")[0]
    assert call.headers["authorization"] == "Bearer ooba-secret"
    assert call.json == {}
