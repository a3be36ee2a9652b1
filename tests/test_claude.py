"""The ``claude`` translator: transcript tests for every rule of issue 4.

Requests: each ``transcripts/claude/requests/*.json`` case turns an OpenAI body (often a real
client capture) into the native body Rosetta must send, compared with ``==`` and validated
against the anthropic SDK's ``MessageCreateParams``. Answers: streams and bodies from the
anthropic SDK's fixtures and Anthropic's documented examples (transcripts/claude/SOURCES.md),
fed to the decoder in pieces of 1, 2, 7 and 4096 bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import openai
import orjson
import pytest
from anthropic.types import Message as ClaudeMessage
from anthropic.types import MessageCreateParams, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from harness import http_response, stream_response
from pydantic import TypeAdapter, ValidationError

from proxy.decoders import decode_all
from proxy.pipeline import adapt
from proxy.validate import PARSERS
from translators import errors
from translators.base import Backend, Frame, Upstream
from translators.claude import Claude, model_version, newer_family, prefill_supported
from translators.claude_answers import PrefixStripper
from translators.events import Event, Finish, Meta, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from translators.request import Request

HERE = Path(__file__).parent / "transcripts" / "claude"
CASES = sorted((HERE / "requests").glob("*.json"))
PIECES = (1, 2, 7, 4096)
KEY = "sk-ant-test-key"

# --- the anthropic SDK as the judge of every body we build ------------------------------
REQUEST_SCHEMA: TypeAdapter[Any] = TypeAdapter(MessageCreateParams)
STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def materialize(value: Any) -> Any:
    """Pydantic validates ``Iterable`` fields lazily: walk them so every element is checked."""
    if isinstance(value, (Iterator, list, tuple)):
        return [materialize(v) for v in value]
    if isinstance(value, dict):
        return {k: materialize(v) for k, v in value.items()}
    return value


# anthropic SDK 1.0+ dropped temperature/top_p/top_k from its typed params (simonw/llm-anthropic#82,
# thetahealth/mirobody#72); the API still takes them on models before Claude 4.7. They are
# checked against the ranges of the published spec (shared/specs/anthropic/hosted_spec.yaml).
SAMPLING_RANGES: dict[str, tuple[type, float, float | None]] = {
    "temperature": (float, 0.0, 1.0), "top_p": (float, 0.0, 1.0), "top_k": (int, 0, None),
}


def assert_valid_claude_request(body: dict[str, Any]) -> None:
    """Valid for the SDK's TypedDicts, and nothing dropped: TypedDict validation ignores unknown
    keys, so an equal round trip proves there were none (a typo'd field fails here)."""
    rest = {k: v for k, v in body.items() if k not in SAMPLING_RANGES}
    for name, (kind, low, high) in SAMPLING_RANGES.items():
        if name in body:
            value = body[name]
            assert isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool), name
            assert value >= low and (high is None or value <= high), name
    assert materialize(REQUEST_SCHEMA.validate_python(rest)) == rest


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


# --- building requests the way the pipeline does ------------------------------------------
def capture_body(ref: str) -> dict[str, Any]:
    """``@file.jsonl`` or ``@file.jsonl#N``: the body of line N (1-based) of a capture."""
    name, _, line = ref[1:].partition("#")
    lines = (HERE / name).read_text().splitlines()
    return orjson.loads(lines[int(line or 1) - 1])["body_json"]


def translator(**options: Any) -> Claude:
    return Claude(Backend("anthropic", "claude", "", api_key=KEY, options=options))


def make_request(
    body: dict[str, Any], model: str, claude: Claude, *, operation: str = "chat", model_options: dict[str, Any] | None = None
) -> Request:
    """A Request as proxy/pipeline builds it: edge validation, then a prompt becomes a message."""
    parsed = PARSERS[operation](body)  # type: ignore[index]
    req = Request(
        id="req-test",
        operation=operation,  # type: ignore[arg-type]
        model="public-name",
        upstream_model=model,
        body=body,
        stream=parsed.stream,
        include_usage=parsed.include_usage,
        messages=parsed.messages,
        stop=parsed.stop,
        max_tokens=parsed.max_tokens,
        n=parsed.n,
        # the proxy passes the validated ModelOptions instance (proxy/config.py ModelSettings.options)
        options=Claude.ModelOptions.model_validate(model_options or {}),  # type: ignore[arg-type]
    )
    return adapt(req, claude, parsed.prompt)


def load_case(path: Path) -> tuple[dict[str, Any], Claude, Request | None, Exception | None]:
    case = orjson.loads(path.read_bytes())
    body = capture_body(case["openai"]) if isinstance(case["openai"], str) else case["openai"]
    claude = translator(**case.get("backend_options", {}))
    try:
        req = make_request(body, case["model"], claude, operation=case.get("operation", "chat"), model_options=case.get("model_options"))
    except Exception as exc:  # noqa: BLE001 - the case says which error it expects
        return case, claude, None, exc
    return case, claude, req, None


@pytest.mark.parametrize("path", [p for p in CASES if p.name.startswith("c")], ids=lambda p: p.stem)
def test_request_transcript(path: Path) -> None:
    case, claude, req, error = load_case(path)
    assert error is None and req is not None
    upstream = claude.build_request(req)
    assert upstream == Upstream(
        "POST",
        "https://api.anthropic.com/v1/messages",
        {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": KEY},
        case["claude"],
        bool(case["claude"].get("stream")),
    ), case["rule"]
    assert list(upstream.warnings) == case["warnings"]
    assert_valid_claude_request(upstream.json)


@pytest.mark.parametrize("path", [p for p in CASES if p.name.startswith("e")], ids=lambda p: p.stem)
def test_request_error_transcript(path: Path) -> None:
    case, claude, req, error = load_case(path)
    assert error is None and req is not None, f"the edge rejected it first: {error!r}"
    expected = case["error"]
    with pytest.raises(errors.RosettaError) as caught:
        claude.build_request(req)
    assert type(caught.value).__name__ == expected["class"], case["rule"]
    assert caught.value.param == expected["param"]
    assert caught.value.status == 400
    assert expected["contains"] in caught.value.message


def test_the_validator_can_fail() -> None:
    good = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}
    assert_valid_claude_request(good)
    for bad in (
        {**good, "stop": ["x"]},  # OpenAI's name, not Claude's
        {**good, "messages": [{"role": "system", "content": [{"type": "txt", "text": "x"}]}]},
        {**good, "messages": [{"role": "user", "content": [{"type": "text", "text": "x", "cache": {}}]}]},
        {k: v for k, v in good.items() if k != "max_tokens"},
        {**good, "temperature": 1.5},
        {**good, "top_k": 0.5},
    ):
        with pytest.raises((ValidationError, AssertionError)):
            assert_valid_claude_request(bad)


def test_sillytavern_native_claude_bodies_are_valid_for_the_validator() -> None:
    """The validator accepts what a mature client really sends to Claude."""
    for name in ("cc_claude_rp_nonstream", "cc_claude_rp_stream", "cc_claude_rp_nosys_prefill", "cc_claude_rp_tools",
                 "ui_cc_claude_reverse_proxy_generate"):
        assert_valid_claude_request(capture_body(f"@{name}.jsonl"))


# --- SillyTavern: our request against the one SillyTavern builds itself ----------------------
def texts(content: Any) -> str:
    return content if isinstance(content, str) else "".join(b["text"] for b in content)


def test_same_conversation_as_sillytavern_builds_for_claude() -> None:
    claude = translator()
    ours = claude.build_request(make_request(capture_body("@cc_custom_nonstream.jsonl"), "claude-3-5-sonnet-20240620", claude)).json
    theirs = capture_body("@cc_claude_rp_nonstream.jsonl")
    # SillyTavern joins system messages with a blank line; we send one block per message
    assert "\n\n".join(b["text"] for b in ours["system"]) == theirs["system"]
    assert [(m["role"], texts(m["content"])) for m in ours["messages"]] == [
        (m["role"], texts(m["content"])) for m in theirs["messages"]
    ]
    assert (ours["model"], ours["max_tokens"], ours["temperature"]) == (theirs["model"], theirs["max_tokens"], theirs["temperature"])


def test_model_prefill_setting_gives_sillytavern_prefill_conversation() -> None:
    claude = translator()
    req = make_request(capture_body("@cc_custom_postprocess_claude.jsonl"), "claude-3-5-sonnet-20240620", claude,
                       model_options={"prefill": "*Seraphina"})
    ours = claude.build_request(req).json
    theirs = capture_body("@cc_claude_rp_nosys_prefill.jsonl")
    assert [(m["role"], texts(m["content"])) for m in ours["messages"]] == [
        (m["role"], texts(m["content"])) for m in theirs["messages"]
    ]


def test_tools_and_beta_header_as_sillytavern_sends_them() -> None:
    claude = translator(anthropic_beta=["tools-2024-05-16"])
    upstream = claude.build_request(make_request(capture_body("@cc_custom_tools.jsonl"), "claude-3-5-sonnet-20240620", claude))
    theirs = orjson.loads((HERE / "cc_claude_rp_tools.jsonl").read_text().splitlines()[0])
    assert upstream.json["tools"] == theirs["body_json"]["tools"]
    assert upstream.json["tool_choice"] == theirs["body_json"]["tool_choice"]
    for name in ("anthropic-version", "anthropic-beta"):
        assert upstream.headers[name] == theirs["headers"][name]
    assert upstream.headers["x-api-key"] == KEY


def test_sillytavern_ui_chat_becomes_a_valid_alternating_conversation() -> None:
    body = capture_body("@ui_cc_custom_generate.jsonl")
    claude = translator()
    upstream = claude.build_request(make_request(body, "claude-3-5-sonnet-20240620", claude))
    native = upstream.json
    assert_valid_claude_request(native)
    assert len(native["system"]) == 3 and native["stream"] is True
    roles = [m["role"] for m in native["messages"]]
    assert roles[0] == "user" and all(a != b for a, b in zip(roles, roles[1:], strict=False))
    assert native["messages"][0]["content"] == [{"type": "text", "text": "Let's get started."}]
    assert upstream.warnings == ()


# --- headers, URL, configuration -----------------------------------------------------------
def simple_request(claude: Claude, model: str = "claude-3-5-sonnet-20240620") -> Request:
    return make_request({"model": "m", "messages": [{"role": "user", "content": "Q"}]}, model, claude)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/", "http://127.0.0.1:9/v1", "http://127.0.0.1:9"])
def test_url_with_or_without_v1(url: str) -> None:
    claude = Claude(Backend("a", "claude", url, api_key=KEY))
    assert claude.build_request(simple_request(claude)).url == "http://127.0.0.1:9/v1/messages"


def test_headers_version_beta_and_extra() -> None:
    claude = Claude(Backend("a", "claude", "", api_key=KEY, headers={"x-extra": "1"},
                            options={"anthropic_version": "2024-01-01", "anthropic_beta": "prompt-caching-2024-07-31, output-128k-2025-02-19"}))
    assert claude.build_request(simple_request(claude)).headers == {
        "content-type": "application/json",
        "anthropic-version": "2024-01-01",
        "x-extra": "1",
        "x-api-key": KEY,
        "anthropic-beta": "prompt-caching-2024-07-31,output-128k-2025-02-19",
    }


def test_options_are_checked() -> None:
    with pytest.raises(ValidationError):
        translator(anthropic_versoin="x")
    with pytest.raises(ValidationError):
        Claude.ModelOptions.model_validate({"prefill_instruction": "no slot"})
    with pytest.raises(ValidationError):
        Claude.ModelOptions.model_validate({"cache": {"last_turns": 4}})


def test_params_table_accounts_for_every_openai_field() -> None:
    from translators.request import OPENAI_FIELDS

    assert [f for f in sorted(OPENAI_FIELDS) if not Claude.params.accounts_for(f)] == []


@pytest.mark.parametrize(
    ("model", "version", "prefill", "newer"),
    [
        ("claude-3-5-sonnet-20240620", (3, 5), True, False),
        ("claude-3-haiku-20240307", (3, 0), True, False),
        ("claude-3-7-sonnet-20250219", (3, 7), True, False),
        ("claude-opus-4-20250514", (4, 0), True, False),
        ("claude-opus-4-1-20250805", (4, 1), True, True),
        ("claude-sonnet-4-5", (4, 5), True, True),
        ("claude-haiku-4-5-20251001", (4, 5), True, True),
        ("claude-opus-4-6", (4, 6), False, True),
        ("claude-sonnet-4-6", (4, 6), False, True),
        ("claude-opus-5", (5, 0), False, True),
        ("my-alias", None, True, False),
    ],
)
def test_model_capability_rules(model: str, version: Any, prefill: bool, newer: bool) -> None:
    assert (model_version(model), prefill_supported(model), newer_family(model)) == (version, prefill, newer)


def test_capabilities_can_be_overridden_per_model() -> None:
    claude = translator()
    body = {"model": "m", "temperature": 0.5, "top_p": 0.9, "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
    req = make_request(body, "claude-opus-4-6", claude, model_options={"prefill_supported": True, "sampling_exclusive": False})
    native = claude.build_request(req).json
    assert native["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": "A"}]}
    assert (native["temperature"], native["top_p"]) == (0.5, 0.9)


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


# --- /v1/models -----------------------------------------------------------------------------
class FakeResponse:
    def __init__(self, status: int, body: bytes) -> None:
        self.status, self._body, self.closed = status, body, False
        self.headers: dict[str, str] = {}

    async def read(self) -> bytes:
        return self._body

    def frames(self, framing: str) -> AsyncIterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True


class FakeTransport:
    def __init__(self, *responses: FakeResponse) -> None:
        self.responses = list(responses)
        self.sent: list[Upstream] = []

    async def send(self, upstream: Upstream) -> FakeResponse:
        self.sent.append(upstream)
        return self.responses.pop(0)


async def test_list_models_pages_through_v1_models() -> None:
    page = orjson.loads((HERE / "models_list.json").read_bytes())
    first = {**page, "has_more": True}
    second = {**page, "data": [{**page["data"][0], "id": "claude-3-opus-20240229"}], "last_id": "claude-3-opus-20240229"}
    transport = FakeTransport(FakeResponse(200, orjson.dumps(first)), FakeResponse(200, orjson.dumps(second)))
    assert await translator().list_models(transport) == ["claude-3-5-sonnet-latest", "claude-3-opus-20240229"]
    assert [u.url for u in transport.sent] == [
        "https://api.anthropic.com/v1/models?limit=1000",
        "https://api.anthropic.com/v1/models?limit=1000&after_id=claude-3-5-sonnet-latest",
    ]
    assert transport.sent[0].method == "GET"
    assert transport.sent[0].headers == {"anthropic-version": "2023-06-01", "x-api-key": KEY}


async def test_list_models_error_raises_for_the_catalog_to_log() -> None:
    body = orjson.dumps({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
    transport = FakeTransport(FakeResponse(401, body))
    with pytest.raises(errors.UpstreamError) as caught:
        await translator().list_models(transport)
    assert caught.value.status == 401 and "invalid x-api-key" in caught.value.message


# --- end to end: the openai client → Rosetta → a fake Anthropic upstream -------------------
# Every request the fake upstream receives is checked against the SDK's MessageCreateParams.

SECRET = "sk-ant-upstream-secret-987654"
SERA = capture_body("@cc_custom_nonstream.jsonl")


def e2e_config(url: str, **model_options: Any) -> dict[str, Any]:
    return {
        "backends": {"anthropic": {"type": "claude", "url": url, "api_key": SECRET, "anthropic_beta": ["output-128k-2025-02-19"]}},
        "models": [
            {"name": "claude-rp", "backend": "anthropic", "model": "claude-3-5-sonnet-20240620", **model_options},
            {"name": "opus", "backend": "anthropic", "model": "claude-opus-4-6", "include_prefill": True},
        ],
    }


def e2e_client(running: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=running.base_url, api_key="sk-client", max_retries=0)


def sse_wire(name: str) -> bytes:
    return stream_response((HERE / name).read_bytes())


def json_wire(name: str) -> bytes:
    return http_response(200, (HERE / name).read_bytes())


def received_bodies(upstream: Any) -> list[dict[str, Any]]:
    """What Rosetta sent to /v1/messages, each validated as a Messages API request."""
    sent = upstream.requests("/v1/messages")
    for received in sent:
        assert received.headers["x-api-key"] == SECRET
        assert received.headers["anthropic-version"] == "2023-06-01"
        assert received.headers["anthropic-beta"] == "output-128k-2025-02-19"
        assert_valid_claude_request(received.json)
    return [r.json for r in sent]


async def test_e2e_sillytavern_chat_non_stream(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", json_wire("spec_message.json"))
    running = await rosetta(e2e_config(upstream.url))
    body = {k: v for k, v in SERA.items() if k != "model"}
    answer = await e2e_client(running).chat.completions.create(model="claude-rp", **body)
    assert answer.choices[0].message.content == "Hi! My name is Claude."
    assert answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (2095, 503, 2598)
    assert answer.model == "claude-rp"
    [sent] = received_bodies(upstream)
    assert sent == orjson.loads((HERE / "requests" / "c01_sillytavern_custom_nonstream.json").read_bytes())["claude"]


async def test_e2e_stream_with_usage(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", sse_wire("sdk_message_delta_fields_response.sse"))
    running = await rosetta(e2e_config(upstream.url))
    stream = await e2e_client(running).chat.completions.create(
        model="claude-rp", messages=[{"role": "user", "content": "Hello"}], stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello there!"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens) == (59, 8, 7)
    [sent] = received_bodies(upstream)
    assert sent["stream"] is True and sent["max_tokens"] == 4096


async def test_e2e_streamed_tool_call(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", sse_wire("composed_two_tool_calls.sse"))
    running = await rosetta(e2e_config(upstream.url))
    tools = capture_body("@cc_custom_tools.jsonl")["tools"]
    stream = await e2e_client(running).chat.completions.create(
        model="claude-rp", messages=[{"role": "user", "content": "Weather?"}], tools=tools, tool_choice="auto", stream=True
    )
    calls: dict[int, dict[str, str]] = {}
    reasons = []
    async for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.id or ""
                entry["name"] += (call.function.name or "") if call.function else ""
                entry["arguments"] += (call.function.arguments or "") if call.function else ""
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    assert calls == {
        0: {"id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "name": "get_weather", "arguments": '{"location": "Paris"}'},
        1: {"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "arguments": '{"location": "San Francisco, CA", "unit": "fahrenheit"}'},
    }
    assert reasons == ["tool_calls"]
    [sent] = received_bodies(upstream)
    assert sent["tool_choice"] == {"type": "auto"} and sent["tools"][0]["name"] == "get_weather"


async def test_e2e_tool_result_round_trip_non_stream(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", json_wire("docs_tool_use_message.json"))
    running = await rosetta(e2e_config(upstream.url))
    body = capture_body("@sdk_py_chat_tools.jsonl#2")
    answer = await e2e_client(running).chat.completions.create(model="claude-rp", messages=body["messages"], tools=body["tools"])
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "tool_calls"
    assert message.content == "I'll check the current weather in San Francisco for you."
    calls = [c.model_dump() for c in message.tool_calls or ()]
    assert [(c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in calls] == [
        ("toolu_01A09q90qw90lq917835lq9", "get_weather", {"location": "San Francisco, CA", "unit": "celsius"})
    ]
    [sent] = received_bodies(upstream)
    assert [block["type"] for m in sent["messages"] for block in m["content"]] == ["text", "tool_use", "tool_result"]


async def test_e2e_thinking_streamed_as_reasoning_content(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", sse_wire("sdk_thinking_refusal.sse"))
    running = await rosetta(e2e_config(upstream.url))
    stream = await e2e_client(running).chat.completions.create(
        model="claude-rp", messages=[{"role": "user", "content": "Eclipses?"}], reasoning_effort="low", stream=True
    )
    chunks = [c async for c in stream]
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks if c.choices)
    assert reasoning.startswith("Simple educational question") and reasoning.endswith("roll with it politely.")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["content_filter"]
    [sent] = received_bodies(upstream)
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}


async def test_e2e_prefill_instructed_and_stitched(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", sse_wire("docs_basic_stream.sse"))
    running = await rosetta(e2e_config(upstream.url))
    stream = await e2e_client(running).chat.completions.create(
        model="opus", messages=[{"role": "user", "content": "Greet me"}, {"role": "assistant", "content": "Hello "}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello!"  # include_prefill: the prefill, then only the continuation ("!")
    [sent] = received_bodies(upstream)
    assert sent["messages"][-1]["role"] == "user" and "Hello" in sent["messages"][-1]["content"][-1]["text"]


async def test_e2e_model_prefill_setting_and_legacy_completion(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", json_wire("spec_message.json"))
    running = await rosetta(e2e_config(upstream.url, prefill="*Seraphina ", include_prefill=True))
    answer = await e2e_client(running).completions.create(model="claude-rp", prompt="Once upon a time", max_tokens=16, stop=["\n"])
    assert answer.choices[0].text == "*SeraphinaHi! My name is Claude."
    assert answer.choices[0].finish_reason == "stop"
    [sent] = received_bodies(upstream)
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Once upon a time"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "*Seraphina"}]},
    ]
    assert "stop_sequences" not in sent


async def test_e2e_overloaded_in_stream_becomes_an_error_chunk(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", sse_wire("composed_overloaded_mid_stream.sse"))
    running = await rosetta(e2e_config(upstream.url))
    async with aiohttp.ClientSession() as http:
        async with http.post(running.base_url + "/chat/completions",
                             json={"model": "claude-rp", "messages": [{"role": "user", "content": "x"}], "stream": True}) as r:
            assert r.status == 200
            raw = (await r.read()).decode()
    data = [e[6:] for e in raw.split("\n\n") if e.startswith("data: ")]
    assert data[-1] == "[DONE]"
    events: list[dict[str, Any]] = [orjson.loads(e) for e in data[:-1]]
    assert events[-1]["choices"] == [] and "Overloaded" in events[-1]["error"]["message"]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]) == "Hello"
    received_bodies(upstream)


async def test_e2e_529_is_503_with_retry_after(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", http_response(529, (HERE / "error_529_overloaded.json").read_bytes()))
    running = await rosetta(e2e_config(upstream.url))
    with pytest.raises(openai.APIStatusError) as caught:
        await e2e_client(running).chat.completions.create(model="claude-rp", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 503
    assert caught.value.response.headers.get("retry-after") == "2"
    assert "Overloaded" in caught.value.message and SECRET not in caught.value.message
    received_bodies(upstream)


async def test_e2e_prefill_rejected_upstream_is_a_clear_400(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", http_response(400, (HERE / "error_400_prefill.json").read_bytes()))
    running = await rosetta(e2e_config(upstream.url))
    with pytest.raises(openai.BadRequestError) as caught:
        await e2e_client(running).chat.completions.create(
            model="claude-rp", messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
        )
    assert caught.value.code == "prefill_not_supported" and caught.value.param == "messages"
    assert "prefill_supported: false" in caught.value.message
    received_bodies(upstream)


async def test_e2e_prefill_reject_policy_never_reaches_upstream(upstream: Any, rosetta: Any) -> None:
    config = e2e_config(upstream.url)
    config["models"].append({"name": "strict", "backend": "anthropic", "model": "claude-sonnet-4-6", "prefill_fallback": "reject"})
    running = await rosetta(config)
    with pytest.raises(openai.BadRequestError) as caught:
        await e2e_client(running).chat.completions.create(
            model="strict", messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
        )
    assert caught.value.param == "messages" and "does not accept an assistant prefill" in caught.value.message
    assert upstream.requests("/v1/messages") == []


async def test_e2e_models_list_from_upstream(upstream: Any, rosetta: Any) -> None:
    upstream.add("GET", "/v1/models", json_wire("models_list.json"))
    running = await rosetta(e2e_config(upstream.url))
    ids = [m.id for m in (await e2e_client(running).models.list()).data]
    assert ids[:2] == ["claude-rp", "opus"] and "anthropic/claude-3-5-sonnet-latest" in ids
    [sent] = upstream.requests("/v1/models")
    assert sent.query == "limit=1000" and sent.headers["x-api-key"] == SECRET


@pytest.mark.parametrize("empty", ["", "\n", "  "])
@pytest.mark.parametrize("model", ["claude-3-5-sonnet-20240620", "claude-sonnet-4-6"])
def test_an_empty_final_user_turn_asks_for_a_reply_not_a_continuation(empty: str, model: str) -> None:
    claude = translator()
    body = {
        "model": "x",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": empty}],
    }
    upstream = claude.build_request(make_request(body, model, claude))
    sent = upstream.json["messages"]
    assert sent[-1] == {"role": "user", "content": [{"type": "text", "text": "\u200b"}]}
    assert sent[-2]["role"] == "assistant"
    assert not any("prefill" in w for w in upstream.warnings)
    assert_valid_claude_request(upstream.json)
