"""``ooba`` (text-generation-webui), the native request: transcripts from the real server (May 2026,
llama.cpp loader, gemma-3-270m), compared with what SillyTavern 1.12.6 sends it.

Files in ``tests/transcripts/ooba/``: ``post_*``/``get_*`` are captures of the real server
(request bytes, response wire bytes, de-chunked body); ``tc_ooba_*.jsonl`` and
``ui_tc_ooba_*.jsonl`` are SillyTavern's requests to a recording stub; ``chat_prompt.json`` is
built from the server's source (``modules/api/typing.py`` ChatPromptResponse: ``{"prompt": str}``),
as ``/v1/internal/chat-prompt`` was not captured.
"""

from __future__ import annotations

import pytest
from ooba_helpers import AUTH, HERE, MODEL, URL, sent_json, translator
from pydantic import ValidationError
from textgen_fakes import chat, completion, jsonl

from translators.base import Backend, Upstream
from translators.errors import Unsupported
from translators.ooba import Ooba
from translators.registry import TRANSLATORS

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
