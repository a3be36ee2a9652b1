"""The ``kobold`` translator end to end: the openai client → Rosetta → a fake KoboldCpp replaying
captured bytes.

Transcripts in tests/transcripts/kobold/ are copies of ../shared/captures/koboldcpp/ (the
``.request.http`` / ``.response.wire`` / ``.response.body`` of each capture) and of the
SillyTavern requests to KoboldCpp and KoboldAI Classic (``tc_koboldcpp_*``, ``kai_*``, ``ui_*``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kobold_helpers import (
    HERE,
    KOBOLDCPP,
    URL,
    FakeTransport,
    capture,
    collect,
    openai_request,
    request_json,
    tokencount,
    translator,
)

from translators.errors import UpstreamError
from translators.events import Finish, TextDelta


# --- end to end: the openai client → Rosetta → a fake KoboldCpp replaying captured bytes -----
def wire(name: str) -> bytes:
    """A capture's exact response bytes (HTTP/1.0, closed by the server)."""
    return (HERE / f"{name}.response.wire").read_bytes()


def wire_tokencount(value: int) -> bytes:
    head, _ = wire("post_api_extra_tokencount").split(b"\r\n\r\n", 1)
    body = tokencount(value)[1]
    head = head.replace(b"content-length: 59", b"content-length: %d" % len(body))
    return head + b"\r\n\r\n" + body


def app_config(url: str, **model: Any) -> dict[str, Any]:
    return {
        "backends": {"kcpp": {"type": "kobold", "url": url}},
        "models": [{"name": "smol", "backend": "kcpp", "model": "koboldcpp/SmolLM2-135M-Instruct.Q4_1", **model}],
    }


def fake_koboldcpp(upstream: Any) -> None:
    upstream.add("GET", "/api/extra/version", wire("get_api_extra_version"))
    upstream.add("GET", "/api/extra/true_max_context_length", wire("get_api_extra_true_max_context_length"))


def openai_client(running: Any) -> Any:
    import openai

    return openai.AsyncOpenAI(base_url=running.base_url, api_key="sk-client", max_retries=0)


async def test_e2e_chat_stream_through_the_chatml_template(upstream: Any, rosetta: Any) -> None:
    fake_koboldcpp(upstream)
    upstream.add("POST", "/api/extra/tokencount", wire("post_api_extra_tokencount_chatml"),
                 wire("post_api_extra_tokencount_chatml"), wire_tokencount(23))
    upstream.add("POST", "/api/extra/generate/stream", wire("post_api_extra_generate_stream_short"))
    running = await rosetta(app_config(upstream.url, template="chatml"))
    stream = await openai_client(running).chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16, temperature=0.7, seed=42, stream=True, stream_options={"include_usage": True},
        extra_body={"top_k": 1},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The capital of France is Paris."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (16, 7)
    sent = upstream.requests("/api/extra/generate/stream")[0].json
    genkey = sent.pop("genkey")
    assert genkey.startswith("KCPP") and len(genkey) > 8
    expected = request_json("post_api_extra_generate_stream_short")
    # the captured request, plus the stop strings the ChatML template implies
    assert sent == {**expected, "stop_sequence": ["<|im_end|>", "<|im_start|>"], "trim_stop": False, "max_context_length": 2048}
    assert not upstream.requests("/api/extra/abort")


async def test_e2e_completion_answer_with_exact_usage(upstream: Any, rosetta: Any) -> None:
    fake_koboldcpp(upstream)
    upstream.add("POST", "/api/extra/tokencount", wire_tokencount(4), wire_tokencount(4), wire_tokencount(12))
    upstream.add("POST", "/api/v1/generate", wire("post_api_v1_generate_minimal"))
    running = await rosetta(app_config(upstream.url))
    answer = await openai_client(running).completions.create(model="smol", prompt="The sky is", max_tokens=8)
    assert answer.choices[0].text == " your best friend, but one of the"
    assert answer.choices[0].finish_reason == "length"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (4, 8)
    sent = upstream.requests("/api/v1/generate")[0].json
    assert {k: v for k, v in sent.items() if k != "genkey"} == {
        **request_json("post_api_v1_generate_minimal"), "max_context_length": 2048, "trim_stop": False,
    }


@pytest.mark.parametrize("operation", ["chat", "completion"])
async def test_e2e_client_disconnect_aborts_with_the_genkey_within_100ms(upstream: Any, rosetta: Any, operation: str) -> None:
    fake_koboldcpp(upstream)
    upstream.add("POST", "/api/extra/tokencount", wire_tokencount(9))
    head, events = wire("post_api_extra_generate_stream_aborted").split(b"\r\n\r\n", 1)
    first_three = b"".join(part + b"\n\n" for part in events.split(b"\n\n")[:3])
    aborted = asyncio.Event()

    async def generating(received: Any, writer: Any) -> None:
        await writer.send(head + b"\r\n\r\n" + first_three)
        await writer.wait_closed_by_peer(5)

    async def abort(received: Any, writer: Any) -> None:
        await writer.send(wire("post_api_extra_abort"))
        aborted.set()

    upstream.add("POST", "/api/extra/generate/stream", generating)
    upstream.add("POST", "/api/extra/abort", abort)
    running = await rosetta(app_config(upstream.url, template="chatml"))
    client = openai_client(running)
    if operation == "chat":
        stream = await client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "Write a very long story about a dragon."}],
            max_tokens=512, stream=True,
        )
    else:
        stream = await client.completions.create(
            model="smol", prompt="Write a very long story about a dragon.\n", max_tokens=512, stream=True
        )
    async for chunk in stream:
        if chunk.choices and (chunk.choices[0].delta.content if operation == "chat" else chunk.choices[0].text):
            break
    gone = asyncio.get_running_loop().time()
    await stream.close()
    await asyncio.wait_for(aborted.wait(), 5)
    call = upstream.requests("/api/extra/abort")[0]
    assert call.json == {"genkey": upstream.requests("/api/extra/generate/stream")[0].json["genkey"]}
    assert call.at - gone < 0.1


async def test_a_failing_count_leaves_the_answer_and_the_servers_finish() -> None:
    transport = FakeTransport(
        {**KOBOLDCPP, "/api/v1/generate": [capture("post_api_v1_generate_minimal")],
         "/api/extra/tokencount": [tokencount(4), (400, b'{"value": -1}')]},  # local.md §2.2: error → 400 {"value": -1}
    )
    kobold = translator()
    req = await kobold.prepare(transport, openai_request({"prompt": "The sky is", "max_tokens": 8}))
    events = await collect(kobold.exchange(transport, kobold.build_request(req), req))
    assert events == [TextDelta(" your best friend, but one of the"), Finish("length")]


def test_stream_option_off_generates_whole_answers() -> None:
    upstream = translator(server="koboldcpp", stream=False).build_request(openai_request({"prompt": "p", "stream": True}))
    assert (upstream.url, upstream.stream) == (URL + "/api/v1/generate", False)
    # KoboldAI United has no stream at all
    upstream = translator(server="koboldai").build_request(openai_request({"prompt": "p", "stream": True}))
    assert (upstream.url, upstream.stream) == (URL + "/api/v1/generate", False)


async def test_detection_is_not_fooled_by_a_failing_server() -> None:
    transport = FakeTransport({"/api/extra/version": [(503, b'{"detail": {"msg": "Server is busy; please try again later.", "type": "service_unavailable"}}'),
                                                      capture("get_api_extra_version")]})
    kobold = translator()
    with pytest.raises(UpstreamError):
        await kobold.detect(transport)
    assert kobold.kind is None
    assert await kobold.detect(transport) == "koboldcpp"
