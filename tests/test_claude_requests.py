"""The ``claude`` translator, requests: transcript cases, SillyTavern's own Claude bodies, headers,
URL and configuration.

Each ``transcripts/claude/requests/*.json`` case turns an OpenAI body (often a real client
capture) into the native body Rosetta must send, compared with ``==`` and validated against the
anthropic SDK's ``MessageCreateParams``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from claude_helpers import (
    HERE,
    KEY,
    assert_valid_claude_request,
    capture_body,
    make_request,
    simple_request,
    translator,
)
from pydantic import ValidationError

from translators import errors
from translators.base import Backend, Upstream
from translators.claude import Claude, model_version, newer_family, prefill_supported
from translators.request import Request

CASES = sorted((HERE / "requests").glob("*.json"))


# --- building requests the way the pipeline does ------------------------------------------
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
