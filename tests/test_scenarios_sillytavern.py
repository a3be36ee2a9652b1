"""End-to-end scenarios: SillyTavern's real Chat and Text Completion requests against every backend.

The real app (``run_rosetta`` through the ``rosetta`` fixture) against fake upstreams that replay
captured bytes (scenario_fakes); answers checked with the openai SDK's own models (scenario_helpers).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from harness import ReplayUpstream
from scenario_fakes import (
    COMPLETION_ONLY,
    FAKES,
    ST_GREETING,
    ST_REQUESTS,
    ST_SYSTEMS,
    ST_USER,
    TEXT_BACKENDS,
    config_for,
    generate_path,
    native_limit,
    native_repetition_penalty,
    native_stops,
    native_text,
    raw,
    sillytavern,
)
from scenario_helpers import check_answer, check_stream, client, post_json, post_stream, split_body


# --- SillyTavern's real Chat Completion requests against every backend ----------------------------
@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, "claude"])
@pytest.mark.parametrize("capture", ST_REQUESTS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_sillytavern_chat_to_every_backend(upstream: ReplayUpstream, rosetta: Any, kind: str, capture: str, stream: bool) -> None:
    fake = FAKES[kind]
    fake.install(upstream)
    running = await rosetta(config_for(kind, upstream.url))
    body = sillytavern(capture)
    body["model"] = "rp"
    if stream:
        streamed = check_stream(await post_stream(running, "/chat/completions", body), model="rp")
        assert streamed.text == fake.text[1]
    else:
        messages, rest = split_body(body)
        async with client(running) as oa:
            answer = await oa.chat.completions.with_raw_response.create(model="rp", messages=messages, extra_body=rest)
        data = check_answer(orjson.loads(answer.http_response.content), model="rp")
        assert data["choices"][0]["message"]["content"] == fake.text[0]
        assert answer.headers["x-rosetta-usage-source"] == fake.source
        assert answer.headers["x-rosetta-backend"] == "be"
    [sent] = upstream.requests(generate_path(fake, stream))
    text = native_text(kind, sent.json)
    # both system messages, the assistant-first greeting and the user turn, in that order
    where = [text.find(part) for part in (*ST_SYSTEMS, ST_GREETING, ST_USER)]
    assert -1 not in where and where == sorted(where), (where, text)
    assert native_limit(kind, sent.json) == 300
    if "stop" in body:
        assert "\nUser:" in native_stops(kind, sent.json)
    if capture == "cc_custom_include_exclude":  # sampler extras reach the backends that take them
        expected = None if kind == "claude" else 1.1
        assert native_repetition_penalty(kind, sent.json) == expected


# --- SillyTavern's Text Completion requests (every api_type it has) to every backend ----------------
TC_REQUESTS = {
    # SillyTavern 1.12.6 pointed at an OpenAI-style /v1/completions, one body per api_type
    "ooba": "ooba/tc_ooba_nonstream.jsonl",
    "tabby": "tabby/tc_tabby_stream.jsonl",
    "koboldcpp": "kobold/tc_koboldcpp_stream.jsonl",
    "llamacpp": "llamacpp/tc_llamacpp_stream.jsonl",
}


def text_completion_body(name: str) -> dict[str, Any]:
    for line in raw(TC_REQUESTS[name]).splitlines():
        entry = orjson.loads(line)
        if entry["path"].endswith("/completions") or entry["path"] == "/completion":
            return dict(entry["body_json"])
    raise LookupError(name)


@pytest.mark.parametrize(
    "kind, api_type",
    # the Horde polls at most once a second: one api_type (the one SillyTavern uses for it) is enough
    [(k, a) for k in (*TEXT_BACKENDS, *COMPLETION_ONLY, "claude") for a in sorted(TC_REQUESTS) if k != "horde" or a == "koboldcpp"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_sillytavern_text_completion_to_every_backend(
    upstream: ReplayUpstream, rosetta: Any, kind: str, api_type: str, stream: bool
) -> None:
    fake = FAKES[kind]
    fake.install(upstream)
    running = await rosetta(config_for(kind, upstream.url))
    body = {**text_completion_body(api_type), "model": "rp"}
    if stream:
        streamed = check_stream(await post_stream(running, "/completions", body), model="rp", operation="completion")
        assert streamed.text
    else:
        status, headers, data = await post_json(running, "/completions", {**body, "stream": False})
        assert status == 200, data
        check_answer(data, model="rp", operation="completion")
    [sent] = upstream.requests(generate_path(fake, stream, "completion"))
    assert body["prompt"] in native_text(kind, sent.json)
    assert native_limit(kind, sent.json) == 300
    assert "\nUser:" in native_stops(kind, sent.json)


async def test_claude_never_gets_a_whitespace_only_text_block(upstream: ReplayUpstream, rosetta: Any) -> None:
    # Claude answers 400 "messages: text content blocks must contain non-whitespace text" to a
    # message whose only text is whitespace (API behaviour tabulated in LibreChat-AI/agents#124);
    # SillyTavern sends such turns (an empty swipe, a bare newline to make the character go on).
    FAKES["claude"].install(upstream)
    running = await rosetta(config_for("claude", upstream.url))
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "  \n"},
        {"role": "user", "content": [{"type": "text", "text": "\n"}]},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Go on"},
    ]
    status, _, data = await post_json(running, "/chat/completions", {"model": "rp", "messages": messages})
    assert status == 200, data
    [sent] = upstream.requests("/v1/messages")
    for turn in sent.json["messages"]:
        texts = [b["text"] for b in turn["content"] if b["type"] == "text"]
        assert any(t.strip() for t in texts), turn
    assert [t["role"] for t in sent.json["messages"]] == ["user", "assistant", "user"]
