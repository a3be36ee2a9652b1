"""``tabby`` (TabbyAPI): the native request compared with what SillyTavern 1.12.6 sends a TabbyAPI
URL (captured), and answers built from TabbyAPI's source (theroyallab/tabbyAPI @ e632af41; no
server capture exists: see ``tests/transcripts/tabby/SOURCES.md``)."""

from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest
from harness import TRANSCRIPTS, stream_response
from pydantic import ValidationError
from textgen_fakes import FakeTransport, chat, collect, completion, frames_of, jsonl, pieces

from translators.base import Backend, Upstream
from translators.errors import Unsupported, UpstreamError
from translators.events import Finish, Meta, TextDelta, Usage
from translators.registry import TRANSLATORS
from translators.tabby import Tabby

HERE = TRANSCRIPTS / "tabby"
URL = "http://127.0.0.1:18081"
MODEL = "Llama-3.2-1B-Instruct-exl3"
ID = "chatcmpl-3f6c1d0e9a7b4c2d8e5f1a2b3c4d5e6f"
AUTH = {"x-api-key": "tabby-secret", "Authorization": "Bearer tabby-secret"}

# BaseSamplerRequest / CommonCompletionRequest / CompletionRequest fields and the aliases the
# server accepts for each, in its AliasChoices order (common/sampling.py, endpoints/OAI/types).
TABBY_FIELDS: dict[str, tuple[str, ...]] = {
    "max_tokens": ("max_completion_tokens", "max_length"),
    "min_tokens": ("min_length",),
    "stop": ("stop_sequence",),
    "banned_strings": (),
    "banned_tokens": ("custom_token_bans",),
    "allowed_tokens": ("allowed_token_ids",),
    "token_healing": (),
    "temperature": (),
    "temperature_last": (),
    "smoothing_factor": (),
    "top_k": (),
    "top_p": (),
    "top_a": (),
    "min_p": (),
    "tfs": (),
    "typical": ("typical_p",),
    "skew": (),
    "xtc_probability": (),
    "xtc_threshold": (),
    "frequency_penalty": (),
    "presence_penalty": (),
    "repetition_penalty": ("rep_pen",),
    "penalty_range": ("repetition_range", "repetition_penalty_range", "rep_pen_range"),
    "repetition_decay": (),
    "dry_multiplier": (),
    "dry_base": (),
    "dry_allowed_length": (),
    "dry_range": ("dry_penalty_last_n",),
    "dry_sequence_breakers": (),
    "mirostat_mode": ("mirostat",),
    "mirostat_tau": (),
    "mirostat_eta": (),
    "add_bos_token": (),
    "ban_eos_token": ("ignore_eos",),
    "logit_bias": (),
    "json_schema": (),
    "regex_pattern": (),
    "grammar_string": (),
    "max_temp": ("dynatemp_high",),
    "min_temp": ("dynatemp_low",),
    "temp_exponent": ("dynatemp_exponent",),
    "logprobs": (),
    "top_logprobs": (),
    "adaptive_target": (),
    "adaptive_decay": (),
    "loop_detect_window": (),
    "model": (),
    "stream": (),
    "n": (),
    "prompt": (),
}


def as_tabby_reads(field: str, value: Any) -> Any:
    """The server's before-validators (common/sampling.py): token lists from strings."""
    if field in ("banned_tokens", "allowed_tokens") and isinstance(value, str):
        return [int(x) for x in value.replace(" ", "").split(",") if x.isdigit()]
    if field == "stop" and isinstance(value, str):
        return [value]
    return value


def translator(**options: Any) -> Tabby:
    return Tabby(Backend("tabby", "tabby", URL, api_key="tabby-secret", options=options))


def raw(name: str) -> bytes:
    return (HERE / name).read_bytes()


def test_registered() -> None:
    assert TRANSLATORS["tabby"] is Tabby


def test_completion_request() -> None:
    req = completion({"prompt": "The capital of France is", "max_tokens": 6, "rep_pen": 1.05, "min_p": 0.05}, upstream=MODEL)
    assert translator().build_request(req) == Upstream(
        "POST",
        f"{URL}/v1/completions",
        {"Content-Type": "application/json", **AUTH},
        {
            "prompt": "The capital of France is",
            "max_tokens": 6,
            "repetition_penalty": 1.05,
            "min_p": 0.05,
            "model": MODEL,
            # usage comes back on non-stream answers only when asked for
            "stream_options": {"include_usage": True},
        },
        False,
    )


def test_stream_request() -> None:
    req = chat({"messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 6}, upstream=MODEL, stream=True)
    up = translator().build_request(req)
    assert up == Upstream(
        "POST",
        f"{URL}/v1/chat/completions",
        {"Content-Type": "application/json", **AUTH},
        {
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 6,
            "model": MODEL,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        True,
    )


@pytest.mark.parametrize("log", ["tc_tabby_stream.jsonl", "tc_tabby_nonstream.jsonl", "ui_tc_tabby_generate.jsonl"])
def test_the_server_reads_what_sillytavern_would_have_sent(log: str) -> None:
    """SillyTavern's body through Rosetta: each field TabbyAPI reads (under any of its aliases)
    gets the value it would have read from SillyTavern's own request; same headers and path."""
    st = [r for r in jsonl(HERE / log) if r["path"] == "/v1/completions"][0]
    st_body = st["body_json"]
    req = completion(dict(st_body), upstream="capture-model", stream=bool(st_body.get("stream")))
    up = translator().build_request(req)
    compared = 0
    for field, aliases in TABBY_FIELDS.items():
        present = [name for name in (field, *aliases) if name in st_body]
        if not present or field in ("model", "stream"):
            continue
        compared += 1
        assert as_tabby_reads(field, up.json[field]) == as_tabby_reads(field, st_body[present[0]]), field
        for alias in aliases:
            assert alias not in up.json, alias
    assert compared > 30
    assert up.url.removeprefix(URL) == st["path"]
    for header in ("x-api-key", "Authorization"):
        assert up.headers[header] == st["headers"][header]


def test_trailing_assistant_message_is_continued() -> None:
    messages = [{"role": "user", "content": "Name a color."}, {"role": "assistant", "content": "The color is"}]
    up = translator().build_request(chat({"messages": messages}))
    assert up.json["continue_final_message"] is True and up.json["add_generation_prompt"] is False
    asked = translator().build_request(chat({"messages": messages, "add_generation_prompt": True}))
    assert "continue_final_message" not in asked.json and asked.json["add_generation_prompt"] is True
    plain = translator().build_request(chat({"messages": messages[:1]}))
    assert "continue_final_message" not in plain.json and "add_generation_prompt" not in plain.json


def test_what_the_server_would_silently_ignore_is_refused_or_reported() -> None:
    with pytest.raises(Unsupported) as error:
        translator().build_request(completion({"prompt": "x", "echo": True}))
    assert error.value.param == "echo"
    up = translator().build_request(completion({"prompt": "x", "seed": 42}))
    assert "seed" not in up.json and any("seed" in w for w in up.warnings)


def test_token_bans_become_int_lists() -> None:
    up = translator().build_request(completion({"prompt": "x", "custom_token_bans": "12, 34"}))
    assert up.json["banned_tokens"] == [12, 34]


def test_inline_model_loading_authenticates_with_the_admin_key() -> None:
    t = translator(admin_key="tabby-admin", inline_model_loading=True)
    up = t.build_request(completion({"prompt": "x"}, upstream="Other-Model-exl3"))
    assert up.headers["x-api-key"] == "tabby-admin" and up.headers["Authorization"] == "Bearer tabby-admin"
    assert up.json["model"] == "Other-Model-exl3"
    # the admin key is otherwise not used, and inline loading needs it
    assert translator(admin_key="tabby-admin").build_request(completion({"prompt": "x"})).headers["x-api-key"] == "tabby-secret"
    with pytest.raises(ValidationError):
        translator(inline_model_loading=True)
    with pytest.raises(ValidationError):
        translator(admin_kye="x")
    assert "tabby-admin" not in repr(t.options)


@pytest.mark.parametrize("piece", pieces())
async def test_completion_stream_takes_the_model_from_model_name(piece: int | None) -> None:
    req = completion({"prompt": "x"}, stream=True)
    events = await collect(translator().parse_stream(frames_of(raw("completion_stream.sse"), piece), req))
    assert events == [
        Meta(ID, MODEL, None),
        *[TextDelta(t) for t in (" Paris", ".", " It", " is", " the", " capital")],
        Finish("length"),
        Usage(7, 6),
    ]


@pytest.mark.parametrize("piece", pieces())
async def test_completion_stream_without_usage(piece: int | None) -> None:
    req = completion({"prompt": "x"}, stream=True)
    events = await collect(translator().parse_stream(frames_of(raw("completion_stream_no_usage.sse"), piece), req))
    assert events == [Meta(ID, MODEL, None), TextDelta(" Paris"), TextDelta("."), Finish("stop")]


async def test_error_event_mid_stream() -> None:
    req = completion({"prompt": "x"}, stream=True)
    with pytest.raises(UpstreamError) as error:
        await collect(translator().parse_stream(frames_of(raw("completion_stream_error.sse"), 7), req))
    assert "Completion aborted" in error.value.message


def test_completion_answer() -> None:
    events = list(translator().parse_response(orjson.loads(raw("completion.json")), completion({"prompt": "x"})))
    assert events == [
        Meta("cmpl-3f6c1d0e9a7b4c2d8e5f1a2b3c4d5e6f", MODEL, None),
        TextDelta(" Paris. It is the capital"),
        Finish("length"),
        Usage(7, 6),
    ]


def test_errors() -> None:
    too_long = translator().parse_error(400, raw("context_length_exceeded.json"), {})
    assert (too_long.status, too_long.code, too_long.type) == (400, "context_length_exceeded", "invalid_request_error")
    bad_key = translator().parse_error(401, b'{"detail":"Invalid API key"}', {})
    assert bad_key.status == 401 and "Invalid API key" in bad_key.message
    no_model = translator().parse_error(503, b'{"detail":"No models are currently loaded."}', {})
    assert no_model.status == 503 and no_model.retryable


async def test_list_models() -> None:
    transport = FakeTransport({"/v1/models": (200, raw("models.json"))})
    assert await translator().list_models(transport) == [MODEL]
    assert transport.sent == [Upstream("GET", f"{URL}/v1/models", AUTH)]
    admin = FakeTransport({"/v1/models": (200, raw("models.json"))})
    await translator(admin_key="tabby-admin", inline_model_loading=True).list_models(admin)
    assert admin.sent[0].headers["Authorization"] == "Bearer tabby-admin"


async def test_e2e_completion_stream(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/completions", stream_response(raw("completion_stream.sse")))
    running = await rosetta(
        {
            "backends": {"tabby": {"type": "tabby", "url": upstream.url + "/v1", "api_key": "tabby-secret"}},
            "models": [{"name": "llama", "backend": "tabby", "model": MODEL}],
        }
    )
    client = openai.AsyncOpenAI(base_url=running.base_url, api_key="sk-client", max_retries=0)
    stream = await client.completions.create(
        model="llama", prompt="The capital of France is", max_tokens=6, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == " Paris. It is the capital"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    sent = upstream.requests("/v1/completions")[0]
    assert sent.headers["x-api-key"] == "tabby-secret" and sent.headers["authorization"] == "Bearer tabby-secret"
