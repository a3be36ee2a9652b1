"""The ``claude`` translator, answers: streams and whole bodies, prefill in the answer, upstream errors.

Streams and bodies from the anthropic SDK's fixtures and Anthropic's documented examples
(transcripts/claude/SOURCES.md), fed to the decoder in pieces of 1, 2, 7 and 4096 bytes.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import orjson
import pytest
from anthropic.types import Message as ClaudeMessage
from anthropic.types import RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from claude_helpers import HERE, make_request, simple_request, translator
from pydantic import TypeAdapter

from proxy.decoders import decode_all
from translators import errors
from translators.base import Frame
from translators.claude import Claude
from translators.claude_answers import PrefixStripper
from translators.events import Event, Finish, Meta, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from translators.request import Request

PIECES = (1, 2, 7, 4096)


# --- the anthropic SDK as the judge of every body we build ------------------------------
STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def assert_valid_stream(raw: bytes) -> None:
    """Every event of a native stream is one the SDK knows (ping and error have their own shapes)."""
    for frame in decode_all(raw, "sse"):
        data = orjson.loads(frame.data)
        if data["type"] == "ping":
            assert data == {"type": "ping"}
        elif data["type"] == "error":
            ErrorResponse.model_validate(data)
        else:
            STREAM_EVENT.validate_python(data)


# --- answers -------------------------------------------------------------------------------
async def frames_of(raw: bytes, piece: int | None) -> AsyncIterator[Frame]:
    for frame in decode_all(raw, "sse", piece):
        yield frame


async def stream_events(claude: Claude, req: Request, name: str, piece: int | None = None) -> list[Event]:
    raw = (HERE / name).read_bytes()
    return [e async for e in claude.parse_stream(frames_of(raw, piece), req)]


async def assert_stream(claude: Claude, req: Request, name: str, expected: list[Event]) -> None:
    for piece in PIECES:
        assert await stream_events(claude, req, name, piece) == expected, piece


def text_of_events(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.parametrize("name", sorted(p.name for p in HERE.glob("*.sse") if p.name != "docs_thinking_stream.sse"))
def test_stream_fixtures_are_documented_events(name: str) -> None:
    assert_valid_stream((HERE / name).read_bytes())


def test_message_fixture_is_a_documented_message() -> None:
    ClaudeMessage.model_validate(orjson.loads((HERE / "spec_message.json").read_bytes()))


async def test_stream_basic_sdk_fixture() -> None:
    claude = translator()
    await assert_stream(claude, simple_request(claude), "sdk_basic_response.sse", [
        Meta("msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK", "claude-3-opus-latest"),
        TextDelta("Hello"), TextDelta(" there"), TextDelta("!"),
        Finish("stop"),
        Usage(prompt_tokens=11, completion_tokens=6),
    ])


async def test_stream_docs_basic_example() -> None:
    claude = translator()
    await assert_stream(claude, simple_request(claude), "docs_basic_stream.sse", [
        Meta("msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "claude-sonnet-4-5-20250929"),
        TextDelta("Hello"), TextDelta("!"),
        Finish("stop"),
        Usage(prompt_tokens=25, completion_tokens=15),
    ])


async def test_stream_tool_use_sdk_fixture() -> None:
    claude = translator()
    await assert_stream(claude, simple_request(claude), "sdk_tool_use_response.sse", [
        Meta("msg_019Q1hrJbZG26Fb9BQhrkHEr", "claude-sonnet-4-20250514"),
        TextDelta("I"), TextDelta("'ll check the current weather in Paris for you."),
        ToolCallDelta(0, "toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather", ""),
        ToolCallDelta(0, arguments='{"locati'), ToolCallDelta(0, arguments='on": "P'),
        ToolCallDelta(0, arguments="ar"), ToolCallDelta(0, arguments='is"}'),
        Finish("tool_calls"),
        Usage(prompt_tokens=377, completion_tokens=65, cached_tokens=0),
    ])


async def test_stream_two_tool_calls_get_ordinals_not_block_indexes() -> None:
    claude = translator()
    events = await stream_events(claude, simple_request(claude), "composed_two_tool_calls.sse")
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(c.call, c.id, c.name) for c in calls if c.id] == [
        (0, "toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather"),
        (1, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather"),
    ]
    assert "".join(c.arguments for c in calls if c.call == 0) == '{"location": "Paris"}'
    assert "".join(c.arguments for c in calls if c.call == 1) == '{"location": "San Francisco, CA", "unit": "fahrenheit"}'
    for piece in PIECES:
        assert await stream_events(claude, simple_request(claude), "composed_two_tool_calls.sse", piece) == events


async def test_stream_thinking_then_text_and_refusal() -> None:
    claude = translator()
    await assert_stream(claude, simple_request(claude), "sdk_thinking_refusal.sse", [
        Meta("msg_fixture_a_0001", "claude-fable-5"),
        ReasoningDelta("Simple educ"),
        ReasoningDelta("ational question about what a solar eclipse is. This is benign general knowledge — definitions are fine. Also the user called"),
        ReasoningDelta(' me "claudius" — I\'m Claude. Minor correction or just roll with it politely.'),
        TextDelta("Hi"),
        Finish("content_filter"),
        Usage(prompt_tokens=28, completion_tokens=106, cached_tokens=0, reasoning_tokens=67),
    ])


async def test_stream_docs_thinking_example_without_usage() -> None:
    claude = translator()
    events = await stream_events(claude, simple_request(claude), "docs_thinking_stream.sse")
    assert events[0] == Meta("msg_01...", "claude-sonnet-4-5-20250929")
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert reasoning.startswith("Let me solve this step by step:") and reasoning.endswith("= 12,231")
    assert events[-2:] == [TextDelta("27 * 453 = 12,231"), Finish("stop")]
    assert not any(isinstance(e, Usage) for e in events)


async def test_stream_cumulative_usage_with_cache_tokens() -> None:
    claude = translator()
    await assert_stream(claude, simple_request(claude), "sdk_message_delta_fields_response.sse", [
        Meta("msg_01MessageDeltaFields00000001", "claude-sonnet-4-5"),
        TextDelta("Hello there!"),
        Finish("stop"),
        # message_delta's counters are cumulative and replace message_start's: 40 + 12 + 7
        Usage(prompt_tokens=59, completion_tokens=8, cached_tokens=7, reasoning_tokens=3),
    ])


async def test_stream_refusal_sdk_fixture() -> None:
    claude = translator()
    events = await stream_events(claude, simple_request(claude), "sdk_refusal_response.sse")
    assert events == [Meta("msg_01RefusalTestMessage123456789", "claude-opus-4-7"), Finish("content_filter"), Usage(20, 0)]


async def test_stream_error_event_after_200_is_a_retryable_503() -> None:
    claude = translator()
    for piece in PIECES:
        seen: list[Event] = []
        with pytest.raises(errors.UpstreamError) as caught:
            async for event in claude.parse_stream(frames_of((HERE / "composed_overloaded_mid_stream.sse").read_bytes(), piece), simple_request(claude)):
                seen.append(event)
        assert seen == [Meta("msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK", "claude-3-opus-latest"), TextDelta("Hello")]
        error = caught.value
        assert (error.status, error.code, error.retryable, error.retry_after) == (503, "overloaded_error", True, 2.0)
        assert "Overloaded" in error.message


async def test_stream_cut_before_the_end_is_an_error() -> None:
    claude = translator()
    raw = (HERE / "sdk_basic_response.sse").read_bytes()
    cut = raw[: raw.index(b"event: message_delta")]
    with pytest.raises(errors.UpstreamError) as caught:
        [e async for e in claude.parse_stream(frames_of(cut, None), simple_request(claude))]
    assert caught.value.kind == "cut_mid_stream"


async def test_stream_malformed_event() -> None:
    claude = translator()
    with pytest.raises(errors.UpstreamError) as caught:
        [e async for e in claude.parse_stream(frames_of(b"event: message_start\ndata: {nope\n\n", None), simple_request(claude))]
    assert caught.value.kind == "malformed"


def test_non_stream_spec_example() -> None:
    claude = translator()
    body = orjson.loads((HERE / "spec_message.json").read_bytes())
    assert list(claude.parse_response(body, simple_request(claude))) == [
        Meta("msg_013Zva2CMHLNnXjNJJKqJ2EF", "claude-3-5-sonnet-20241022"),
        TextDelta("Hi! My name is Claude."),
        Finish("stop"),
        Usage(prompt_tokens=2095, completion_tokens=503),
    ]


def test_non_stream_tool_use_docs_example() -> None:
    claude = translator()
    body = orjson.loads((HERE / "docs_tool_use_message.json").read_bytes())
    assert list(claude.parse_response(body, simple_request(claude))) == [
        Meta("msg_01Aq9w938a90dw8q", "claude-sonnet-4-5"),
        TextDelta("I'll check the current weather in San Francisco for you."),
        ToolCallDelta(0, "toolu_01A09q90qw90lq917835lq9", "get_weather", '{"location":"San Francisco, CA","unit":"celsius"}'),
        Finish("tool_calls"),
    ]


def test_non_stream_thinking_docs_example() -> None:
    claude = translator()
    body = orjson.loads((HERE / "docs_thinking_message.json").read_bytes())
    assert list(claude.parse_response(body, simple_request(claude))) == [
        Meta(None, None),
        ReasoningDelta("Let me analyze this step by step..."),
        TextDelta("Based on my analysis..."),
        Finish("stop"),
    ]


@pytest.mark.parametrize(("native", "openai"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"), ("max_tokens", "length"),
    ("model_context_window_exceeded", "length"), ("tool_use", "tool_calls"), ("refusal", "content_filter"),
])
def test_stop_reasons(native: str, openai: str) -> None:
    claude = translator()
    body = {**orjson.loads((HERE / "spec_message.json").read_bytes()), "stop_reason": native}
    assert [e for e in claude.parse_response(body, simple_request(claude)) if isinstance(e, Finish)] == [Finish(openai)]  # type: ignore[arg-type]


# --- prefill in the answer -----------------------------------------------------------------
def prefill_request(claude: Claude, model: str, prefill: str, **model_options: Any) -> Request:
    body = {"model": "m", "messages": [{"role": "user", "content": "Say hello"}, {"role": "assistant", "content": prefill}]}
    return make_request(body, model, claude, model_options=model_options)


async def test_native_prefill_answer_holds_only_the_continuation() -> None:
    claude = translator()
    req = prefill_request(claude, "claude-3-5-sonnet-20240620", "Hello")
    assert text_of_events(await stream_events(claude, req, "docs_basic_stream.sse")) == "Hello!"  # Claude's own text


async def test_native_prefill_included_when_configured() -> None:
    claude = translator()
    req = prefill_request(claude, "claude-3-5-sonnet-20240620", "Well, ", include_prefill=True)
    events = await stream_events(claude, req, "docs_basic_stream.sse")
    # the prefill as sent (trailing whitespace stripped), right after Meta
    assert events[1] == TextDelta("Well,") and text_of_events(events) == "Well,Hello!"
    body = orjson.loads((HERE / "spec_message.json").read_bytes())
    assert text_of_events(list(claude.parse_response(body, req))) == "Well,Hi! My name is Claude."


async def test_instructed_prefill_is_stripped_from_the_answer() -> None:
    """Claude 4.6+ was asked to begin with the prefill; the client sees only the continuation."""
    claude = translator()
    req = prefill_request(claude, "claude-opus-4-6", "Hello")
    for piece in PIECES:
        events = await stream_events(claude, req, "docs_basic_stream.sse", piece)
        assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta("!")]
        assert events[-2:] == [Finish("stop"), Usage(25, 15)]
    body = orjson.loads((HERE / "spec_message.json").read_bytes())
    req = prefill_request(claude, "claude-opus-4-6", "Hi! My")
    assert text_of_events(list(claude.parse_response(body, req))) == " name is Claude."


async def test_instructed_prefill_included_when_configured() -> None:
    claude = translator()
    req = prefill_request(claude, "claude-sonnet-4-6", "Hello", include_prefill=True)
    assert text_of_events(await stream_events(claude, req, "docs_basic_stream.sse")) == "Hello!"


async def test_instructed_prefill_that_the_model_ignored_passes_unchanged() -> None:
    claude = translator()
    req = prefill_request(claude, "claude-opus-4-6", "Goodbye")
    assert text_of_events(await stream_events(claude, req, "docs_basic_stream.sse")) == "Hello!"


async def test_instructed_prefill_held_text_is_flushed_before_a_tool_call() -> None:
    claude = translator()
    req = prefill_request(claude, "claude-opus-4-6", "I'll check the current weather in Paris for you. Then")
    events = await stream_events(claude, req, "sdk_tool_use_response.sse")
    assert text_of_events(events) == "I'll check the current weather in Paris for you."
    first_call = next(i for i, e in enumerate(events) if isinstance(e, ToolCallDelta))
    assert all(not isinstance(e, TextDelta) for e in events[first_call:])


@pytest.mark.parametrize(("prefix", "pieces", "out"), [
    ("Hello", ["He", "l", "lo wor", "ld"], " world"),
    ("Hello", ["\n  Hel", "lo"], ""),
    ("Hello", ["Help"], "Help"),
    ("Hello", ["Hel"], "Hel"),  # ended inside a partial match: flushed as it was
    ("", ["abc"], "abc"),
])
def test_prefix_stripper(prefix: str, pieces: list[str], out: str) -> None:
    stripper = PrefixStripper(prefix)
    assert "".join(stripper.feed(p) for p in pieces) + stripper.flush() == out


# --- errors --------------------------------------------------------------------------------
def error_body(name: str) -> bytes:
    return (HERE / name).read_bytes()


def test_529_overloaded_is_a_retryable_503_with_retry_after() -> None:
    claude = translator()
    error = claude.parse_error(529, error_body("error_529_overloaded.json"), {})
    assert (error.status, error.type, error.code, error.kind, error.retryable, error.retry_after) == (
        503, "upstream_error", "overloaded_error", "5xx", True, 2.0
    )
    assert "Overloaded" in error.message
    assert claude.parse_error(529, error_body("error_529_overloaded.json"), {"retry-after": "7"}).retry_after == 7.0
    assert claude.parse_error(529, error_body("error_529_overloaded.json"), {"retry-after-ms": "1500"}).retry_after == 1.5
    assert translator(overloaded_retry_after=9).parse_error(529, b"", {}).retry_after == 9.0


def test_prefill_rejection_becomes_a_clear_400() -> None:
    error = translator().parse_error(400, error_body("error_400_prefill.json"), {})
    assert (error.status, error.param, error.code, error.retryable) == (400, "messages", "prefill_not_supported", False)
    assert "prefill_supported: false" in error.message


def test_prompt_too_long_is_context_length_exceeded() -> None:
    error = translator().parse_error(400, error_body("error_400_prompt_too_long.json"), {})
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", "messages")
    assert "208310 tokens > 200000 maximum" in error.message


@pytest.mark.parametrize(("status", "etype", "mapped", "retryable"), [
    (400, "invalid_request_error", 400, False),
    (401, "authentication_error", 401, False),
    (403, "permission_error", 403, False),
    (404, "not_found_error", 404, False),
    (429, "rate_limit_error", 429, True),
    (500, "api_error", 502, True),
    (504, "timeout_error", 504, True),
])
def test_error_statuses(status: int, etype: str, mapped: int, retryable: bool) -> None:
    body = orjson.dumps({"type": "error", "error": {"type": etype, "message": "msg here"}})
    error = translator().parse_error(status, body, {"retry-after": "3"} if status == 429 else {})
    assert (error.status, error.code, error.retryable) == (mapped, etype, retryable)
    assert "msg here" in error.message
    if status == 429:
        assert error.retry_after == 3.0


def test_error_body_that_is_not_json() -> None:
    error = translator().parse_error(502, b"<html>Bad gateway</html>", {})
    assert error.status == 502 and "Bad gateway" in error.message


def test_whitespace_stop_error_body_is_what_we_avoid() -> None:
    """The upstream error we never trigger: whitespace-only stop sequences are not sent."""
    assert "non-whitespace" in translator().parse_error(400, error_body("error_400_whitespace_stop.json"), {}).message
