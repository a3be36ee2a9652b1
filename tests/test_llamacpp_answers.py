"""llama.cpp translator: the events for captured answers (whole, streamed, errors).

Every answer here is bytes recorded from a real ``llama-server`` (commit 0c1e57098, models
gemma-3-270m and SmolLM2-135M), copied into ``transcripts/llamacpp/``; the native request is
compared with the captured request and with what SillyTavern sends to llama.cpp.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import orjson
import pytest
from llamacpp_helpers import GEMMA, HERE, STREAM_TOKENS, body, completion, rendered_chat, translator

from proxy.decoders import decode_all
from translators.base import Frame
from translators.errors import UpstreamError
from translators.events import Finish, Meta, TextDelta, Usage
from translators.request import Request

PIECES = (1, 2, 7, 4096)
SMOLLM = "/data/llm/models/SmolLM2-135M-Instruct.Q4_1.gguf"


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


async def frames_of(raw: bytes, piece: int) -> AsyncIterator[Frame]:
    for frame in decode_all(raw, "sse", piece):
        yield frame


async def stream_events(raw: bytes, req: Request, piece: int) -> list[Any]:
    return [e async for e in translator().parse_stream(frames_of(raw, piece), req)]


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
