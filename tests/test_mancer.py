"""``mancer``: the native request against SillyTavern's Mancer code (SillyTavern @ ba6f7b7a:
``src/additional-headers.js`` getMancerHeaders, ``src/endpoints/backends/text-completions.js``,
``public/scripts/textgen-settings.js`` MANCER branch) and its captured generic text-completion
body; answers in OpenAI's documented shapes (Mancer publishes none; see
``tests/transcripts/mancer/SOURCES.md``)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from harness import TRANSCRIPTS
from pydantic import ValidationError
from textgen_fakes import FakeTransport, chat, collect, completion, frames_of, jsonl, pieces

from translators.base import Backend, Upstream
from translators.errors import Unsupported
from translators.events import Finish, Meta, TextDelta, Usage
from translators.mancer import Mancer
from translators.registry import TRANSLATORS

HERE = TRANSCRIPTS / "mancer"
BASE = "https://neuro.mancer.tech/oai/v1"
# getMancerHeaders: the key as X-API-KEY and as a Bearer token
HEADERS = {"Content-Type": "application/json", "X-API-KEY": "mcr-secret", "Authorization": "Bearer mcr-secret"}

# What Mancer reads beyond OpenAI's fields (local.md §7.1, from SillyTavern's Mancer body).
MANCER_FIELDS = {
    "top_k", "top_a", "min_p", "typical_p", "tfs", "repetition_penalty", "repetition_penalty_range",
    "epsilon_cutoff", "eta_cutoff", "mirostat_mode", "mirostat_tau", "mirostat_eta", "min_tokens",
    "ban_eos_token", "skip_special_tokens", "smoothing_factor", "smoothing_curve", "dry_multiplier",
    "dry_base", "dry_allowed_length", "dry_sequence_breakers", "xtc_threshold", "xtc_probability",
    "banned_strings", "grammar_string", "temperature", "top_p", "max_tokens", "stop", "seed",
    "presence_penalty", "frequency_penalty",
}


def translator(url: str = "", **options: Any) -> Mancer:
    return Mancer(Backend("mancer", "mancer", url, api_key="mcr-secret", options=options))


def test_registered() -> None:
    assert TRANSLATORS["mancer"] is Mancer


def test_completion_request() -> None:
    req = completion({"prompt": "Once upon a time", "max_tokens": 50, "min_p": 0.1}, upstream="mytholite")
    assert translator().build_request(req) == Upstream(
        "POST",
        f"{BASE}/completions",
        HEADERS,
        {"prompt": "Once upon a time", "max_tokens": 50, "min_p": 0.1, "model": "mytholite"},
        False,
    )


def test_chat_stream_request() -> None:
    req = chat({"messages": [{"role": "user", "content": "Hi"}]}, upstream="magnum-72b", stream=True)
    up = translator().build_request(req)
    assert up.url == f"{BASE}/chat/completions"
    assert up.json == {
        "messages": [{"role": "user", "content": "Hi"}],
        "model": "magnum-72b",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_host_or_api_url_is_the_same_base() -> None:
    # SillyTavern's setting is the host (MANCER_SERVER_DEFAULT) and it appends /oai/v1
    for url in ("", "https://neuro.mancer.tech", "https://neuro.mancer.tech/", BASE, BASE + "/"):
        assert translator(url).build_request(completion({"prompt": "x"})).url == f"{BASE}/completions"


def test_sillytavern_body_reaches_mancer_with_mancer_names() -> None:
    st = jsonl(HERE / "st_textgen_request.jsonl")[0]["body_json"]
    up = translator().build_request(completion(dict(st), upstream="mytholite", stream=True))
    for field in MANCER_FIELDS & set(st):
        assert up.json[field] == st[field], field
    # SillyTavern's MANCER branch sends toIntArray(banned_tokens): "" → []
    assert up.json["custom_token_bans"] == []
    for alias in ("rep_pen", "rep_pen_range", "typical", "tfs_z", "mirostat", "ignore_eos", "min_length",
                  "stopping_strings", "sampler_seed", "max_new_tokens"):
        assert alias not in up.json, alias
    assert not [w for w in up.warnings if "disagree" in w]


def test_dynamic_temperature_the_way_sillytavern_sends_it_to_mancer() -> None:
    # textgen-settings.js MANCER branch: dynatemp_mode = dynamic_temperature ? 1 : 0,
    # dynatemp_min/max from dynatemp_low/high
    up = translator().build_request(
        completion({"prompt": "x", "dynamic_temperature": True, "dynatemp_low": 0.5, "dynatemp_high": 1.5,
                    "dynatemp_exponent": 1, "banned_tokens": "12, 34"})
    )
    assert {k: up.json[k] for k in ("dynatemp_mode", "dynatemp_min", "dynatemp_max", "dynatemp_exponent")} == {
        "dynatemp_mode": 1, "dynatemp_min": 0.5, "dynatemp_max": 1.5, "dynatemp_exponent": 1
    }
    assert up.json["custom_token_bans"] == [12, 34]


def test_tools_are_refused() -> None:
    with pytest.raises(Unsupported) as error:
        translator().build_request(
            chat({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}]})
        )
    assert error.value.param == "tools"


def test_options_are_strict() -> None:
    with pytest.raises(ValidationError):
        translator(forward_unknwon=False)
    strict = translator(forward_unknown=False).build_request(completion({"prompt": "x", "api_server": "http://x"}))
    assert "api_server" not in strict.json and any("api_server" in w for w in strict.warnings)


def test_completion_answer() -> None:
    body = orjson.loads((HERE / "completion.json").read_bytes())
    assert list(translator().parse_response(body, completion({"prompt": "x"}))) == [
        Meta("cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7", "mytholite", "fp_44709d6fcb"),
        TextDelta("\n\nThis is indeed a test"),
        Finish("length"),
        Usage(5, 7),
    ]


@pytest.mark.parametrize("piece", pieces())
async def test_completion_stream(piece: int | None) -> None:
    raw = (HERE / "completion_stream.sse").read_bytes()
    events = await collect(translator().parse_stream(frames_of(raw, piece), completion({"prompt": "x"}, stream=True)))
    assert events == [
        Meta("cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe", "mytholite", "fp_44709d6fcb"),
        *[TextDelta(t) for t in ("This", " is", " a", " test")],
        Finish("stop"),
    ]


def test_out_of_credits_is_not_a_server_fault() -> None:
    error = translator().parse_error(402, b"", {})  # the body Mancer sends is not documented
    assert error.status == 402 and not error.retryable


async def test_list_models() -> None:
    transport = FakeTransport({"/oai/v1/models": (200, (HERE / "models.json").read_bytes())})
    assert await translator().list_models(transport) == ["mytholite", "magnum-72b"]
    assert transport.sent == [Upstream("GET", f"{BASE}/models", {k: v for k, v in HEADERS.items() if k != "Content-Type"})]
