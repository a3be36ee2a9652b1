"""``ooba`` (text-generation-webui): transcripts from the real server (May 2026, llama.cpp loader,
gemma-3-270m; ``tests/transcripts/ooba/``), compared with what SillyTavern 1.12.6 sends it, and
end to end through the real app.

Files in ``tests/transcripts/ooba/``: ``post_*``/``get_*`` are captures of the real server
(request bytes, response wire bytes, de-chunked body); ``tc_ooba_*.jsonl`` and
``ui_tc_ooba_*.jsonl`` are SillyTavern's requests to a recording stub; ``chat_prompt.json`` is
built from the server's source (``modules/api/typing.py`` ChatPromptResponse: ``{"prompt": str}``),
as ``/v1/internal/chat-prompt`` was not captured.
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import orjson
import pytest
from harness import TRANSCRIPTS, Received, Writer
from pydantic import ValidationError
from textgen_fakes import (
    FakeResponse,
    FakeTransport,
    captured_request,
    chat,
    collect,
    completion,
    frames_of,
    generator,
    jsonl,
    pieces,
)

from translators.base import Backend, Upstream
from translators.errors import ContextLengthExceeded, Unsupported, UpstreamError
from translators.events import Finish, Meta, TextDelta, Usage
from translators.ooba import NO_TRUNCATION, Ooba
from translators.registry import TRANSLATORS

HERE = TRANSCRIPTS / "ooba"
URL = "http://127.0.0.1:5002"
MODEL = "gemma-3-270m-q4_k_m.gguf"
AUTH = {"Content-Type": "application/json", "Authorization": "Bearer ooba-secret"}

# The request fields text-generation-webui reads (modules/api/typing.py @ 1dcde41d:
# GenerationOptions, CompletionRequestParams, ChatCompletionRequestParams).
TGW_FIELDS = {
    "preset", "dynatemp_low", "dynatemp_high", "dynatemp_exponent", "smoothing_factor", "smoothing_curve",
    "min_p", "top_k", "typical_p", "xtc_threshold", "xtc_probability", "epsilon_cutoff", "eta_cutoff", "tfs",
    "top_a", "top_n_sigma", "adaptive_target", "adaptive_decay", "dry_multiplier", "dry_allowed_length",
    "dry_base", "repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size",
    "repetition_penalty_range", "penalty_alpha", "guidance_scale", "mirostat_mode", "mirostat_tau",
    "mirostat_eta", "prompt_lookup_num_tokens", "max_tokens_second", "do_sample", "dynamic_temperature",
    "temperature_last", "auto_max_new_tokens", "ban_eos_token", "add_bos_token", "enable_thinking",
    "reasoning_effort", "preserve_thinking", "skip_special_tokens", "static_cache", "truncation_length",
    "seed", "sampler_priority", "custom_token_bans", "negative_prompt", "dry_sequence_breakers",
    "grammar_string", "model", "prompt", "messages", "best_of", "echo", "frequency_penalty", "logit_bias",
    "logprobs", "max_tokens", "n", "presence_penalty", "stop", "stream", "stream_options", "suffix",
    "temperature", "top_p", "user",
}


def translator(**options: Any) -> Ooba:
    return Ooba(Backend("ooba", "ooba", URL, api_key="ooba-secret", options=options))


def body(name: str) -> bytes:
    return (HERE / f"{name}.response.body").read_bytes()


def wire(name: str) -> bytes:
    return (HERE / f"{name}.response.wire").read_bytes()


def sent_json(name: str) -> Any:
    return captured_request(HERE / f"{name}.request.http")


# --- the native request -------------------------------------------------------------------


def test_registered() -> None:
    assert TRANSLATORS["ooba"] is Ooba


def test_completion_request_is_the_captured_one() -> None:
    captured = sent_json("post_v1_completions")
    req = completion({**captured, "model": "gemma"}, upstream=MODEL)
    up = translator(context_length=2048).build_request(req)
    assert up == Upstream(
        "POST",
        f"{URL}/v1/completions",
        AUTH,
        {**captured, "model": MODEL, "truncation_length": 2048},
        False,
    )
    assert up.warnings == ()


def test_sillytavern_names_become_the_servers_own() -> None:
    # The captured request used SillyTavern's `stopping_strings`; the current server only reads
    # `stop` (process_parameters), so that is the name Rosetta sends.
    req = completion(
        {
            "prompt": "The capital of France is", "max_tokens": 12, "top_k": 1, "min_p": 0.1, "rep_pen": 1.1,
            "stopping_strings": [" largest"], "auto_max_new_tokens": False,
        },
        upstream=MODEL,
    )
    up = translator(context_length=2048).build_request(req)
    captured = sent_json("post_v1_completions_native_params")
    expected = {k: v for k, v in captured.items() if k != "stopping_strings"}
    assert up.json == {**expected, "stop": [" largest"], "model": MODEL, "truncation_length": 2048}


def test_chat_request_is_the_captured_one() -> None:
    captured = sent_json("post_v1_chat_completions")
    up = translator(context_length=2048).build_request(chat(captured, upstream=MODEL))
    assert up == Upstream(
        "POST", f"{URL}/v1/chat/completions", AUTH, {**captured, "model": MODEL, "truncation_length": 2048}, False
    )


def test_stream_request_asks_for_usage_and_warns_without_a_context_size() -> None:
    captured = sent_json("post_v1_chat_completions_stream")
    up = translator().build_request(chat(captured, upstream=MODEL, stream=True))
    assert up == Upstream(
        "POST",
        f"{URL}/v1/chat/completions",
        AUTH,
        {**captured, "model": MODEL, "stream_options": {"include_usage": True}},
        True,
    )
    assert any("context_length is not configured" in w for w in up.warnings)


def test_url_with_or_without_v1_is_the_same_server() -> None:
    for url in ("http://box:5000", "http://box:5000/", "http://box:5000/v1", "http://box:5000/v1/"):
        t = Ooba(Backend("ooba", "ooba", url))
        assert t.build_request(completion({"prompt": "x"})).url == "http://box:5000/v1/completions"
    assert Ooba(Backend("ooba", "ooba", "")).build_request(completion({"prompt": "x"})).url == (
        "http://127.0.0.1:5000/v1/completions"
    )


@pytest.mark.parametrize(
    "log", ["tc_ooba_stream.jsonl", "tc_ooba_nonstream.jsonl", "ui_tc_ooba_generate.jsonl"]
)
def test_the_server_reads_what_sillytavern_would_have_sent(log: str) -> None:
    """SillyTavern's own body sent through Rosetta: every field the server reads has SillyTavern's
    value, and the auth header and path are the same."""
    st = [r for r in jsonl(HERE / log) if r["path"] == "/v1/completions"][0]
    st_body = st["body_json"]
    req = completion(dict(st_body), upstream="capture-model", stream=bool(st_body.get("stream")))
    up = translator().build_request(req)
    for field in TGW_FIELDS & set(st_body) - {"model", "stream"}:
        assert up.json[field] == st_body[field], field
    assert up.json["model"] == st_body.get("model", "capture-model")
    assert up.url.removeprefix(URL) == st["path"]
    assert up.headers["Authorization"] == st["headers"]["Authorization"]
    # SillyTavern's duplicate names were folded into the server's own, and none disagreed
    for alias in ("rep_pen", "typical", "sampler_seed", "stopping_strings", "max_new_tokens", "mirostat", "tfs_z"):
        assert alias not in up.json
    assert not [w for w in up.warnings if "disagree" in w]


def test_client_truncation_length_is_capped_by_the_configured_context() -> None:
    up = translator(context_length=4096).build_request(completion({"prompt": "x", "truncation_length": 8192}))
    assert up.json["truncation_length"] == 4096
    assert any("truncation_length=8192" in w for w in up.warnings)
    smaller = translator(context_length=4096).build_request(completion({"prompt": "x", "truncation_length": 1024}))
    assert smaller.json["truncation_length"] == 1024


def test_model_option_overrides_the_backend_context_length() -> None:
    from translators.ooba import ModelOptions

    req = completion({"prompt": "x"}, options=ModelOptions(context_length=1000))
    assert translator(context_length=4096).build_request(req).json["truncation_length"] == 1000


def test_type_traps_are_converted() -> None:
    up = translator().build_request(
        completion({"prompt": "x", "dry_sequence_breakers": ["\n", ":"], "banned_tokens": [12, 34]})
    )
    assert up.json["dry_sequence_breakers"] == '["\\n",":"]'
    assert up.json["custom_token_bans"] == "12,34"


def test_server_name_wins_over_an_alias_that_disagrees() -> None:
    up = translator().build_request(completion({"prompt": "x", "repetition_penalty": 1.1, "rep_pen": 1.3}))
    assert up.json["repetition_penalty"] == 1.1
    assert any("disagree" in w and "repetition_penalty=1.1" in w for w in up.warnings)


def test_n_only_where_the_server_honours_it() -> None:
    t = translator()
    assert t.build_request(completion({"prompt": "x", "n": 2}, n=2)).json["n"] == 2
    with pytest.raises(Unsupported) as chat_n:
        t.build_request(chat({"messages": [{"role": "user", "content": "x"}], "n": 2}, n=2))
    assert chat_n.value.param == "n"
    with pytest.raises(Unsupported):
        t.build_request(completion({"prompt": "x", "n": 2}, n=2, stream=True))


def test_functions_are_refused_with_the_param_named() -> None:
    with pytest.raises(Unsupported) as error:
        translator().build_request(
            chat({"messages": [{"role": "user", "content": "x"}], "functions": [{"name": "f"}]})
        )
    assert error.value.param == "functions"


def test_options_are_strict() -> None:
    with pytest.raises(ValidationError):
        translator(context_lenght=4096)


# --- answers ------------------------------------------------------------------------------

COMPLETION_STREAM_TEXT = [
    " the", " capital", " of", " the", " country", " of", " France", ".", " It", " is", " the", " largest"
]
CHAT_STREAM_TEXT = ["What", " is", " the", " capital", " of", " France", "?"]


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


# --- the network side: context check, cancel, models ------------------------------------


async def test_prepare_refuses_a_prompt_the_server_would_cut() -> None:
    count = (200, body("post_v1_internal_token_count"))  # {"length": 8}
    req = completion({"prompt": "Hello world, how are you?", "max_tokens": 12})
    fits = FakeTransport({"/v1/internal/token-count": count})
    assert await translator(context_length=20).prepare(fits, req) is req
    assert fits.sent == [
        Upstream("POST", f"{URL}/v1/internal/token-count", AUTH, {"text": "Hello world, how are you?"})
    ]
    with pytest.raises(ContextLengthExceeded) as error:
        await translator(context_length=19).prepare(FakeTransport({"/v1/internal/token-count": count}), req)
    assert error.value.param == "prompt" and error.value.status == 400


async def test_prepare_counts_the_chat_as_the_server_renders_it_untruncated() -> None:
    transport = FakeTransport(
        {
            "/v1/internal/chat-prompt": (200, (HERE / "chat_prompt.json").read_bytes()),
            "/v1/internal/token-count": (200, body("post_v1_internal_token_count")),
        }
    )
    req = chat({"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 16})
    with pytest.raises(ContextLengthExceeded) as error:
        await translator(context_length=20).prepare(transport, req)
    assert error.value.param == "messages"
    rendered = orjson.loads((HERE / "chat_prompt.json").read_bytes())["prompt"]
    assert transport.sent == [
        Upstream(
            "POST",
            f"{URL}/v1/internal/chat-prompt",
            AUTH,
            {
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 16,
                "model": "m",
                "truncation_length": NO_TRUNCATION,
            },
        ),
        Upstream("POST", f"{URL}/v1/internal/token-count", AUTH, {"text": rendered}),
    ]


async def test_prepare_does_nothing_without_a_context_size_or_when_off() -> None:
    transport = FakeTransport({})
    req = completion({"prompt": "x"})
    assert await translator().prepare(transport, req) is req
    assert await translator(context_length=10, check_context=False).prepare(transport, req) is req
    assert transport.sent == []


def partial_stream() -> bytes:
    raw = body("post_v1_completions_stream")
    return b"\n\n".join(raw.split(b"\n\n")[:3]) + b"\n\n"  # the role chunk and two tokens


async def test_client_gone_mid_stream_calls_stop_generation() -> None:
    generating = FakeResponse(200, partial_stream(), hold=True)
    transport = FakeTransport(
        {"/v1/completions": generating, "/v1/internal/stop-generation": (200, body("post_v1_internal_stop_generation"))}
    )
    t = translator()
    req = completion({"prompt": "The capital of France is"}, stream=True)
    events = generator(t.exchange(transport, t.build_request(req), req))
    assert await events.__anext__() == Meta("cmpl-1795627546870689792", MODEL, None)
    assert await events.__anext__() == TextDelta(" the")
    await events.aclose()  # what the proxy does when the client goes away
    assert transport.paths() == ["/v1/completions", "/v1/internal/stop-generation"]
    assert transport.sent[1] == Upstream("POST", f"{URL}/v1/internal/stop-generation", AUTH, {})
    assert generating.closed and transport.responses[1].closed


async def test_cancelled_while_waiting_calls_stop_generation() -> None:
    transport = FakeTransport(
        {
            "/v1/completions": FakeResponse(200, b"", hold=True),
            "/v1/internal/stop-generation": (200, body("post_v1_internal_stop_generation")),
        }
    )
    t = translator()
    req = completion({"prompt": "x"})  # non-stream: old servers ran these to the end
    task = asyncio.ensure_future(collect(t.exchange(transport, t.build_request(req), req)))
    while not transport.sent:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert transport.paths() == ["/v1/completions", "/v1/internal/stop-generation"]


async def test_no_stop_call_after_the_answer_finished_or_when_off() -> None:
    req = completion({"prompt": "x"}, stream=True)
    done = FakeTransport({"/v1/completions": (200, body("post_v1_completions_stream"))})
    t = translator()
    events = generator(t.exchange(done, t.build_request(req), req))
    async for event in events:
        if isinstance(event, Finish):
            break
    await events.aclose()
    assert done.paths() == ["/v1/completions"]

    off = FakeTransport({"/v1/completions": FakeResponse(200, partial_stream(), hold=True)})
    quiet = translator(stop_generation_on_disconnect=False)
    events = generator(quiet.exchange(off, quiet.build_request(req), req))
    await events.__anext__()
    await events.aclose()
    assert off.paths() == ["/v1/completions"]


async def test_a_failing_stop_call_does_not_mask_the_disconnect() -> None:
    transport = FakeTransport(
        {"/v1/completions": FakeResponse(200, partial_stream(), hold=True), "/v1/internal/stop-generation": (500, b"{}")}
    )
    t = translator()
    req = completion({"prompt": "x"}, stream=True)
    events = generator(t.exchange(transport, t.build_request(req), req))
    await events.__anext__()
    await events.aclose()
    assert transport.paths()[-1] == "/v1/internal/stop-generation"


async def test_list_models_names_the_loaded_model() -> None:
    transport = FakeTransport({"/v1/internal/model/info": (200, body("get_v1_internal_model_info"))})
    assert await translator().list_models(transport) == [MODEL]
    assert transport.sent == [Upstream("GET", f"{URL}/v1/internal/model/info", {"Authorization": "Bearer ooba-secret"})]
    none_loaded = FakeTransport({"/v1/internal/model/info": (200, b'{"model_name":"None","lora_names":[],"loader":null}')})
    assert await translator().list_models(none_loaded) == []


# --- end to end: the openai client → Rosetta → a fake text-generation-webui --------------


def config(url: str, **options: Any) -> dict[str, Any]:
    return {
        "backends": {"ooba": {"type": "ooba", "url": url, "api_key": "ooba-secret", **options}},
        "models": [{"name": "gemma", "backend": "ooba", "model": MODEL}],
    }


def client(running: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=running.base_url, api_key="sk-client", max_retries=0)


async def test_e2e_chat_stream_from_captured_bytes(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/chat/completions", wire("post_v1_chat_completions_stream"))
    running = await rosetta(config(upstream.url))
    stream = await client(running).chat.completions.create(
        model="gemma",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=8,
        stream=True,
        extra_body={"top_k": 1},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(CHAT_STREAM_TEXT)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert all(c.model == "gemma" for c in chunks)
    assert upstream.requests("/v1/internal/stop-generation") == []  # a finished answer is not stopped
    sent = upstream.requests("/v1/chat/completions")[0]
    assert sent.headers["authorization"] == "Bearer ooba-secret"
    assert sent.json == {
        **sent_json("post_v1_chat_completions_stream"),
        "model": MODEL,
        "stream_options": {"include_usage": True},
    }


async def test_e2e_legacy_completion_from_captured_bytes(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/completions", wire("post_v1_completions"))
    running = await rosetta(config(upstream.url, context_length=2048, check_context=False))
    answer = await client(running).completions.create(
        model="gemma", prompt="The capital of France is", max_tokens=12, temperature=0.7, seed=42, extra_body={"top_k": 1}
    )
    assert answer.choices[0].text == " the capital of the country of France. It is the largest"
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (6, 13)
    sent = upstream.requests("/v1/completions")[0].json
    assert sent == {**sent_json("post_v1_completions"), "model": MODEL, "truncation_length": 2048}


async def test_e2e_client_disconnect_triggers_stop_generation(upstream: Any, rosetta: Any) -> None:
    stopped = asyncio.Event()
    captured = wire("post_v1_chat_completions_stream")
    head, rest = captured.split(b"\r\n\r\n", 1)
    first_chunks = b"\r\n".join(rest.split(b"\r\n")[:6]) + b"\r\n"  # three HTTP chunks: role, "What", " is"

    async def generating(received: Received, writer: Writer) -> None:
        await writer.send(head + b"\r\n\r\n" + first_chunks)
        await writer.wait_closed_by_peer(5)

    async def stop(received: Received, writer: Writer) -> None:
        await writer.send(wire("post_v1_internal_stop_generation"))
        stopped.set()

    upstream.add("POST", "/v1/chat/completions", generating)
    upstream.add("POST", "/v1/internal/stop-generation", stop)
    running = await rosetta(config(upstream.url))
    stream = await client(running).chat.completions.create(
        model="gemma", messages=[{"role": "user", "content": "Tell me a story"}], stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    await stream.close()
    await asyncio.wait_for(stopped.wait(), 5)
    call = upstream.requests("/v1/internal/stop-generation")[0]
    assert call.headers["authorization"] == "Bearer ooba-secret"
    assert call.json == {}
