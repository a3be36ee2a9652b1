"""``ooba`` (text-generation-webui), answers: whole answers and streams from the real server's bytes.

Files in ``tests/transcripts/ooba/``: ``post_*``/``get_*`` are captures of the real server
(request bytes, response wire bytes, de-chunked body); ``tc_ooba_*.jsonl`` and
``ui_tc_ooba_*.jsonl`` are SillyTavern's requests to a recording stub; ``chat_prompt.json`` is
built from the server's source (``modules/api/typing.py`` ChatPromptResponse: ``{"prompt": str}``),
as ``/v1/internal/chat-prompt`` was not captured.
"""

from __future__ import annotations

import orjson
import pytest
from ooba_helpers import CHAT_STREAM_TEXT, HERE, MODEL, body, translator
from textgen_fakes import chat, collect, completion, frames_of, pieces

from translators.errors import UpstreamError
from translators.events import Finish, Meta, TextDelta, Usage

# --- answers ------------------------------------------------------------------------------

COMPLETION_STREAM_TEXT = [
    " the", " capital", " of", " the", " country", " of", " France", ".", " It", " is", " the", " largest"
]


def test_completion_answer() -> None:
    events = list(translator().parse_response(orjson.loads(body("post_v1_completions")), completion({"prompt": "x"})))
    assert events == [
        Meta("cmpl-1795627546594976000", MODEL, None),
        TextDelta(" the capital of the country of France. It is the largest"),
        Finish("length"),
        Usage(6, 13),
    ]


def test_chat_answer() -> None:
    req = chat({"messages": [{"role": "user", "content": "x"}]})
    events = list(translator().parse_response(orjson.loads(body("post_v1_chat_completions")), req))
    assert events == [
        Meta("chatcmpl-1795627547502654976", MODEL, None),
        TextDelta("What is the capital of France?\nWhat is the capital of France?"),
        Finish("length"),
        Usage(35, 16),
    ]


@pytest.mark.parametrize("piece", pieces())
async def test_completion_stream(piece: int | None) -> None:
    req = completion({"prompt": "x"}, stream=True)
    events = await collect(translator().parse_stream(frames_of(body("post_v1_completions_stream"), piece), req))
    assert events == [
        Meta("cmpl-1795627546870689792", MODEL, None),
        *[TextDelta(t) for t in COMPLETION_STREAM_TEXT],
        Finish("length"),
    ]


@pytest.mark.parametrize("piece", pieces())
async def test_chat_stream(piece: int | None) -> None:
    req = chat({"messages": [{"role": "user", "content": "x"}]}, stream=True)
    events = await collect(translator().parse_stream(frames_of(body("post_v1_chat_completions_stream"), piece), req))
    assert events == [
        Meta("chatcmpl-1795627548024890624", MODEL, None),
        *[TextDelta(t) for t in CHAT_STREAM_TEXT],
        Finish("length"),
    ]


@pytest.mark.parametrize("piece", pieces())
async def test_stream_stopped_by_stop_generation_finishes_with_stop(piece: int | None) -> None:
    summary = orjson.loads((HERE / "post_v1_completions_stream_stopped.json").read_bytes())
    texts = [e["data_json"]["choices"][0]["text"] for e in summary["sse_events"] if "data_json" in e]
    req = completion({"prompt": "x"}, stream=True)
    raw = body("post_v1_completions_stream_stopped")
    events = await collect(translator().parse_stream(frames_of(raw, piece), req))
    assert events[0] == Meta("cmpl-1795627548251141120", MODEL, None)
    assert events[1:-1] == [TextDelta(t) for t in texts if t]
    assert events[-1] == Finish("stop")


def older_server(raw: bytes) -> bytes:
    """The captured stream as servers before 2026-03 sent it: no ``[DONE]``, ``\\r\\n`` line
    ends (sse_starlette's default) and a ping comment (local.md §5.4)."""
    without_done = raw.replace(b"data: [DONE]\n\n", b"")
    assert without_done != raw
    return b": ping - 2026-01-01 00:00:00.000000\r\n\r\n" + without_done.replace(b"\n", b"\r\n")


@pytest.mark.parametrize("piece", pieces())
async def test_older_stream_without_done_is_complete(piece: int | None) -> None:
    req = completion({"prompt": "x"}, stream=True)
    raw = older_server(body("post_v1_completions_stream"))
    events = await collect(translator().parse_stream(frames_of(raw, piece), req))
    assert events == [
        Meta("cmpl-1795627546870689792", MODEL, None),
        *[TextDelta(t) for t in COMPLETION_STREAM_TEXT],
        Finish("length"),
    ]


def with_usage(raw: bytes) -> bytes:
    """The captured stream as the server sends it when ``stream_options.include_usage`` is set
    (which Rosetta always asks for): every chunk carries ``"usage": null`` and a usage-only chunk
    with ``choices: []`` follows the finish (modules/api/completions.py, completions_common)."""
    usage = {
        "id": "cmpl-1795627546870689792", "object": "text_completion", "created": 1795627546, "model": MODEL,
        "system_fingerprint": None, "choices": [], "usage": {"prompt_tokens": 6, "completion_tokens": 13, "total_tokens": 19},
    }
    chunks = raw.replace(b"}]}\n\n", b'}], "usage": null}\n\n')
    return chunks.replace(b"data: [DONE]", b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]")


@pytest.mark.parametrize("piece", pieces())
async def test_stream_with_the_usage_chunk(piece: int | None) -> None:
    req = completion({"prompt": "x"}, stream=True)
    raw = with_usage(body("post_v1_completions_stream"))
    events = await collect(translator().parse_stream(frames_of(raw, piece), req))
    assert events == [
        Meta("cmpl-1795627546870689792", MODEL, None),
        *[TextDelta(t) for t in COMPLETION_STREAM_TEXT],
        Finish("length"),
        Usage(6, 13),
    ]


@pytest.mark.parametrize("piece", pieces())
async def test_stream_that_ends_before_a_finish_is_cut(piece: int | None) -> None:
    raw = older_server(body("post_v1_completions_stream"))
    cut = raw[: raw.index(b'"finish_reason": "length"')].rsplit(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    req = completion({"prompt": "x"}, stream=True)
    with pytest.raises(UpstreamError) as error:
        await collect(translator().parse_stream(frames_of(cut, piece), req))
    assert error.value.kind == "cut_mid_stream"


def test_host_header_refusal_says_what_to_do() -> None:
    error = translator().parse_error(400, b'{"detail":"Invalid host header"}', {})
    assert error.status == 400 and "--listen" in error.message


def test_unauthorized() -> None:
    error = translator().parse_error(401, b'{"detail":"Unauthorized"}', {})
    assert error.status == 401 and "Unauthorized" in error.message
