"""The SSE and NDJSON decoders, fed the same bytes split anywhere."""

from __future__ import annotations

import pytest

from proxy.decoders import decode_all
from translators.base import Frame

PIECES = (1, 2, 7, 4096)


def test_sse_basic_events_and_names() -> None:
    raw = b'event: message_start\ndata: {"a":1}\n\nevent: ping\ndata: {}\n\n'
    assert decode_all(raw, "sse") == [Frame('{"a":1}', "message_start"), Frame("{}", "ping")]


@pytest.mark.parametrize("piece", PIECES)
def test_sse_split_anywhere_gives_the_same_events(piece: int) -> None:
    raw = (
        b": OPENROUTER PROCESSING\r\n\r\n"
        b"data: first\r\ndata: second\r\n\r\n"
        b"event: e\nid: 7\ndata:no-space\n\n"
        b"data: caf\xc3\xa9 \xe2\x82\xac\r\r"
        b"data: [DONE]"
    )
    expected = [
        Frame("first\nsecond"),
        Frame("no-space", "e", "7"),
        Frame("café €", None, "7"),  # the last event id persists (WHATWG)
        Frame("[DONE]", None, "7"),
    ]
    assert decode_all(raw, "sse", piece) == expected


def test_sse_comment_only_and_empty_data_lines() -> None:
    assert decode_all(b": keep-alive\n\n: again\n\n", "sse") == []
    # an event with an empty data line still dispatches (WHATWG), with empty data
    assert decode_all(b"data:\n\n", "sse") == [Frame("")]
    # an event with no data field dispatches nothing
    assert decode_all(b"event: x\n\n", "sse") == []


def test_sse_crlf_split_between_reads() -> None:
    raw = b"data: a\r\n\r\ndata: b\r\n\r\n"
    for cut in range(1, len(raw)):
        from proxy.decoders import SSEDecoder

        decoder = SSEDecoder()
        frames = decoder.feed(raw[:cut]) + decoder.feed(raw[cut:]) + decoder.close()
        assert frames == [Frame("a"), Frame("b")], cut


def test_sse_last_event_without_blank_line_is_kept() -> None:
    # KoboldCpp's /v1 emulation ends with "data: [DONE]" and no blank line
    assert decode_all(b'data: {"x":1}\n\ndata: [DONE]', "sse") == [Frame('{"x":1}'), Frame("[DONE]")]
    assert decode_all(b"data: [DONE]\n", "sse") == [Frame("[DONE]")]


def test_sse_field_value_keeps_all_but_one_leading_space() -> None:
    assert decode_all(b"data:  two spaces\n\n", "sse") == [Frame(" two spaces")]


@pytest.mark.parametrize("piece", PIECES)
def test_ndjson_split_anywhere(piece: int) -> None:
    raw = b'{"a":1}\n\n{"b":"\xc3\xa9"}\r\n{"c":3}'
    assert decode_all(raw, "ndjson", piece) == [Frame('{"a":1}'), Frame('{"b":"é"}'), Frame('{"c":3}')]


@pytest.mark.parametrize("piece", PIECES)
def test_real_llamacpp_v1_stream_decodes_the_same_in_pieces(piece: int) -> None:
    from harness import TRANSCRIPTS

    wire = (TRANSCRIPTS / "openai" / "oobabooga__post_v1_chat_completions_stream.response.wire").read_bytes()
    head, body = wire.split(b"\r\n\r\n", 1)
    # de-chunk the captured chunked body the way an HTTP client does
    out = b""
    while body:
        size_line, body = body.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    whole = decode_all(out, "sse")
    assert whole[-1] == Frame("[DONE]") and len(whole) > 3
    assert decode_all(out, "sse", piece) == whole


def test_llamacpp_error_field_becomes_an_error_event() -> None:
    # llama.cpp server: `error: {"code":500,...}` after the stream started (server.cpp sends
    # the event name "error" as the field name)
    raw = b'data: {"content":"a"}\n\nerror: {"code":500,"message":"boom","type":"server_error"}\n\n'
    assert decode_all(raw, "sse") == [
        Frame('{"content":"a"}'),
        Frame('{"code":500,"message":"boom","type":"server_error"}', "error"),
    ]
