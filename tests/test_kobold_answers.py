"""The ``kobold`` translator, answers: whole answers, streams, errors, prepare and the exchange against
real KoboldCpp 1.76 bytes.

Transcripts in tests/transcripts/kobold/ are copies of ../shared/captures/koboldcpp/ (the
``.request.http`` / ``.response.wire`` / ``.response.body`` of each capture) and of the
SillyTavern requests to KoboldCpp and KoboldAI Classic (``tc_koboldcpp_*``, ``kai_*``, ``ui_*``).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import orjson
import pytest
from kobold_helpers import (
    CHATML,
    KOBOLDCPP,
    URL,
    FakeTransport,
    body_of,
    capture,
    collect,
    openai_request,
    status_of,
    tokencount,
    translator,
)

from proxy.decoders import decode_all
from translators.base import Frame, Upstream
from translators.errors import ContextLengthExceeded, UpstreamError
from translators.events import Event, Finish, TextDelta, Usage

PIECES = (1, 2, 7, 4096)


# --- helpers ----------------------------------------------------------------------------------
async def frames_of(raw: bytes, piece: int | None) -> AsyncIterator[Frame]:
    for frame in decode_all(raw, "sse", piece):
        yield frame


# --- whole answers ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, body, expected",
    [
        ("post_api_v1_generate_minimal", {"prompt": "The sky is", "max_tokens": 8},
         [TextDelta(" your best friend, but one of the"), Finish("length")]),
        ("post_api_v1_generate_chatml_stop", {"prompt": CHATML, "max_tokens": 40, "stop": ["<|im_end|>", "\n\n"]},
         [TextDelta("The capital of France is Paris."), Finish("stop")]),
        # 1.76 with trim_stop false returns the stop string and says "length": Rosetta cuts, says stop
        ("post_api_v1_generate_no_trim_stop", {"prompt": CHATML, "max_tokens": 40, "stop": ["Paris"]},
         [TextDelta("The capital of France is "), Finish("stop")]),
        # a server that trimmed the stop string itself says "length" and leaves no trace of it:
        # why Rosetta sends trim_stop false (exchange corrects this one with token counts)
        ("post_api_v1_generate_stopseq_trim", {"prompt": CHATML, "max_tokens": 40, "stop": [" Paris"]},
         [TextDelta("The capital of France is"), Finish("length")]),
        ("post_api_v1_generate_multi_results_n2", {"prompt": "The sky is", "max_tokens": 6},
         [TextDelta(" a place of endless possibilities,"), Finish("length")]),
    ],
)
def test_parse_response(name: str, body: dict[str, Any], expected: list[Event]) -> None:
    events = list(translator(server="koboldcpp").parse_response(orjson.loads(body_of(name)), openai_request(body)))
    assert events == expected


def test_newer_servers_counts_are_used() -> None:
    # the newer result shape (local.md §2.2: text, finish_reason, prompt_tokens, completion_tokens)
    body: dict[str, Any] = {"results": [{"text": "Hi.", "tool_calls": [], "finish_reason": "length", "logprobs": None,
                         "prompt_tokens": 12, "completion_tokens": 3}]}
    events = list(translator().parse_response(body, openai_request({"prompt": "p", "max_tokens": 40}, max_tokens=40)))
    assert events == [TextDelta("Hi."), Finish("stop"), Usage(12, 3)]


# --- streams ----------------------------------------------------------------------------------
STREAMS = [
    ("post_api_extra_generate_stream_short", {"prompt": CHATML, "max_tokens": 16, "stop": ["<|im_end|>"]},
     [TextDelta(t) for t in ("The", " capital", " of", " France", " is", " Paris", ".")] + [Finish("stop")]),
    # every event but the last says finish_reason "null" (a string); the last says "length"
    ("post_api_extra_generate_stream_len", {"prompt": "Count: 1, 2, 3,", "max_tokens": 24},
     [TextDelta(t) for t in (" ", "4", ",", " ", "5", ",", " ", "6", ",", " ", "7", ",", " ", "8", ",",
                             " ", "9", ",", " ", "1", "0", ",", " ", "1")]
     + [Finish("length")]),
    # several tokens in one event; the server trimmed " Paris" and says "length"
    ("post_api_extra_generate_stream_stopseq", {"prompt": CHATML, "max_tokens": 40, "stop": [" Paris"]},
     [TextDelta("The capital of France is"), Finish("length")]),
    # a stop string across event boundaries (" France" | " is" | " Paris") is never sent half-way
    ("post_api_extra_generate_stream_short", {"prompt": CHATML, "max_tokens": 16, "stop": ["ce is Pa"]},
     [TextDelta("The"), TextDelta(" capital"), TextDelta(" of"), TextDelta(" Fran"), Finish("stop")]),
    ("post_api_extra_generate_stream_short", {"prompt": CHATML, "max_tokens": 16, "stop": [" Paris"]},
     [TextDelta(t) for t in ("The", " capital", " of", " France", " is")] + [Finish("stop")]),
]


@pytest.mark.parametrize("piece", PIECES)
@pytest.mark.parametrize("name, body, expected", STREAMS)
async def test_parse_stream(name: str, body: dict[str, Any], expected: list[Event], piece: int) -> None:
    kobold = translator(server="koboldcpp")
    events = await collect(kobold.parse_stream(frames_of(body_of(name), piece), openai_request(body)))
    assert events == expected


async def test_stream_without_final_event_is_cut_mid_stream() -> None:
    raw = body_of("post_api_extra_generate_stream_short")
    cut = raw[: raw.index(b'{"token": " Paris"')].rsplit(b"event:", 1)[0]
    with pytest.raises(UpstreamError) as err:
        await collect(translator().parse_stream(frames_of(cut, None), openai_request({"prompt": CHATML})))
    assert err.value.kind == "cut_mid_stream"


def test_error_bodies() -> None:
    kobold = translator()
    err = kobold.parse_error(status_of("post_api_v1_generate_bad_json"), body_of("post_api_v1_generate_bad_json"), {})
    assert (err.status, err.code, err.message) == (502, "bad_input", "upstream kobold returned HTTP 500: Error parsing input.")
    busy = b'{"detail": {"msg": "Server is busy; please try again later.", "type": "service_unavailable"}}'
    assert kobold.parse_error(503, busy, {}).status == 503  # local.md §1.3 / §2.1
    united = b'{"detail": {"max_length": ["Must be greater than or equal to 1 and less than or equal to 512."]}}'
    assert kobold.parse_error(422, united, {}).message.endswith(
        "max_length: Must be greater than or equal to 1 and less than or equal to 512."
    )


# --- prepare, exchange ------------------------------------------------------------------------
async def test_prepare_detects_koboldcpp_and_fits_the_context() -> None:
    transport = FakeTransport({**KOBOLDCPP, "/api/extra/tokencount": [capture("post_api_extra_tokencount_chatml")]})
    kobold = translator()
    req = await kobold.prepare(transport, openai_request({"prompt": CHATML}))
    assert (kobold.kind, kobold.version, kobold.context, req.max_tokens) == ("koboldcpp", "1.76", 2048, 512)
    assert kobold.build_request(req).json["max_context_length"] == 2048
    await kobold.prepare(transport, openai_request({"prompt": CHATML}))  # version and context are kept
    assert transport.paths().count("/api/extra/version") == 1
    assert transport.paths().count("/api/extra/true_max_context_length") == 1
    with pytest.raises(ContextLengthExceeded) as err:  # 16 prompt tokens + 2040 > 2048
        await kobold.prepare(transport, openai_request({"prompt": CHATML, "max_tokens": 2040}))
    assert err.value.status == 400 and err.value.code == "context_length_exceeded" and err.value.param == "prompt"
    assert transport.sent[-1].json == {"prompt": CHATML}


async def test_prepare_on_united_asks_its_config_and_counts_nothing() -> None:
    transport = FakeTransport({"/api/v1/config/max_context_length": [capture("get_api_v1_config_max_context_length")]})
    kobold = translator()
    req = await kobold.prepare(transport, openai_request({"prompt": "p", "max_tokens": 100}))
    assert (kobold.kind, kobold.context, req.max_tokens) == ("koboldai", 2048, 100)
    assert transport.paths() == ["/api/extra/version", "/api/v1/config/max_context_length"]


@pytest.mark.parametrize("piece", PIECES)
async def test_exchange_counts_usage_and_corrects_kcpp_length(piece: int) -> None:
    """The server trimmed " Paris" and said "length"; 5 tokens of 40 were produced: "stop"."""
    transport = FakeTransport(
        {**KOBOLDCPP, "/api/extra/generate/stream": [capture("post_api_extra_generate_stream_stopseq")],
         "/api/extra/tokencount": [capture("post_api_extra_tokencount_chatml")] * 2 + [tokencount(21)]},
        piece,
    )
    kobold = translator()
    req = await kobold.prepare(transport, openai_request({"prompt": CHATML, "max_tokens": 40, "stop": [" Paris"], "stream": True}))
    events = await collect(kobold.exchange(transport, kobold.build_request(req), req))
    assert events == [TextDelta("The capital of France is"), Finish("stop"), Usage(16, 5)]
    assert [u.json for u in transport.sent if u.url.endswith("tokencount")][-1] == {"prompt": CHATML + "The capital of France is"}
    assert "/api/extra/abort" not in transport.paths()


async def test_exchange_length_when_max_length_tokens_were_produced() -> None:
    transport = FakeTransport(
        {**KOBOLDCPP, "/api/v1/generate": [capture("post_api_v1_generate_minimal")],
         "/api/extra/tokencount": [tokencount(4), tokencount(4), tokencount(12)]},
    )
    kobold = translator()
    req = await kobold.prepare(transport, openai_request({"prompt": "The sky is", "max_tokens": 8}))
    events = await collect(kobold.exchange(transport, kobold.build_request(req), req))
    assert events == [TextDelta(" your best friend, but one of the"), Finish("length"), Usage(4, 8)]


async def test_a_stop_string_the_server_did_not_stop_at_aborts_the_generation() -> None:
    transport = FakeTransport(
        {**KOBOLDCPP, "/api/extra/generate/stream": [capture("post_api_extra_generate_stream_short")],
         "/api/extra/tokencount": [tokencount(16), tokencount(16), tokencount(20)]},
    )
    kobold = translator()
    stops = [f"<stop{i}>" for i in range(32)] + [" France"]  # KoboldCpp takes 32
    req = await kobold.prepare(transport, openai_request({"prompt": CHATML, "max_tokens": 16, "stop": stops, "stream": True}))
    upstream = kobold.build_request(req)
    assert upstream.json["stop_sequence"] == stops[:32]
    assert upstream.warnings == ("the server takes 32 stop strings; Rosetta cuts at the others",)
    events = await collect(kobold.exchange(transport, upstream, req))
    assert events == [TextDelta("The"), TextDelta(" capital"), TextDelta(" of"), Finish("stop"), Usage(16, 4)]
    aborts = [u.json for u in transport.sent if u.url.endswith("/api/extra/abort")]
    assert aborts == [{"genkey": "KCPPcmpltest0001"}]


async def test_a_stop_string_the_server_knows_needs_no_abort() -> None:
    transport = FakeTransport(
        {**KOBOLDCPP, "/api/extra/generate/stream": [capture("post_api_extra_generate_stream_short")],
         "/api/extra/tokencount": [tokencount(16), tokencount(16), tokencount(20)]},
    )
    kobold = translator()
    req = await kobold.prepare(transport, openai_request({"prompt": CHATML, "max_tokens": 16, "stop": [" France"], "stream": True}))
    events = await collect(kobold.exchange(transport, kobold.build_request(req), req))
    assert events == [TextDelta("The"), TextDelta(" capital"), TextDelta(" of"), Finish("stop"), Usage(16, 4)]
    assert "/api/extra/abort" not in transport.paths()


async def test_client_gone_mid_stream_aborts_with_the_genkey() -> None:
    transport = FakeTransport(
        {**KOBOLDCPP, "/api/extra/generate/stream": [capture("post_api_extra_generate_stream_aborted")],
         "/api/extra/tokencount": [tokencount(9)]},
    )
    kobold = translator()
    req = await kobold.prepare(transport, openai_request({"prompt": "Write a very long story about a dragon.\n", "max_tokens": 512, "stream": True}, rid="chatcmpl-xyz9"))
    events: Any = kobold.exchange(transport, kobold.build_request(req), req)
    assert await events.__anext__() == TextDelta("\n")
    assert "/api/extra/abort" not in transport.paths()
    await events.aclose()  # what the proxy does when the client disconnects
    assert transport.sent[-1] == Upstream("POST", URL + "/api/extra/abort", {"Content-Type": "application/json"}, {"genkey": "KCPPchatcmplxyz9"})


async def test_client_gone_while_a_blocking_generate_runs_aborts_it() -> None:
    transport = FakeTransport(
        {**KOBOLDCPP, "/api/v1/generate": [capture("post_api_v1_generate_aborted")], "/api/extra/tokencount": [tokencount(9)]}
    )
    transport.hold["/api/v1/generate"] = asyncio.Event()  # the answer comes only when generation ends
    kobold = translator()
    req = await kobold.prepare(transport, openai_request({"prompt": "Write a very long story about a cat.\n", "max_tokens": 512}))
    events = kobold.exchange(transport, kobold.build_request(req), req)
    task = asyncio.ensure_future(events.__anext__())
    while transport.paths()[-1] != "/api/v1/generate":
        await asyncio.sleep(0)
    task.cancel()  # the proxy's handler task is cancelled on disconnect
    with pytest.raises(asyncio.CancelledError):
        await task
    assert transport.sent[-1].json == {"genkey": "KCPPcmpltest0001"} and transport.paths()[-1] == "/api/extra/abort"


async def test_upstream_error_status_is_raised_and_nothing_is_aborted() -> None:
    transport = FakeTransport({**KOBOLDCPP, "/api/v1/generate": [capture("post_api_v1_generate_bad_json")]})
    kobold = translator(server="koboldcpp")
    req = openai_request({"prompt": "p", "max_tokens": 4})
    with pytest.raises(UpstreamError) as err:
        await collect(kobold.exchange(transport, kobold.build_request(req), req))
    assert err.value.code == "bad_input"
    assert transport.paths() == ["/api/v1/generate"]


async def test_list_models() -> None:
    transport = FakeTransport({"/api/v1/model": [capture("get_api_v1_model")]})
    assert await translator().list_models(transport) == ["koboldcpp/SmolLM2-135M-Instruct.Q4_1"]
    united_empty = FakeTransport({"/api/v1/model": [(200, b'{"result": "ReadOnly"}')]})  # local.md §1.1
    assert await translator().list_models(united_empty) == []
