"""The ``kobold`` translator, requests: stop cutting, and the native request built from real
SillyTavern requests.

Transcripts in tests/transcripts/kobold/ are copies of ../shared/captures/koboldcpp/ (the
``.request.http`` / ``.response.wire`` / ``.response.body`` of each capture) and of the
SillyTavern requests to KoboldCpp and KoboldAI Classic (``tc_koboldcpp_*``, ``kai_*``, ``ui_*``).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from kobold_helpers import CHATML, HERE, URL, body_of, openai_request, request_json, translator

from translators.base import Backend, Upstream
from translators.errors import InvalidRequest, Unsupported
from translators.kobold import Kobold, genkey_for
from translators.stops import StopCutter, cut_text


# --- helpers ----------------------------------------------------------------------------------
def sillytavern(name: str, path: str) -> dict[str, Any]:
    """The body of the first request to ``path`` in a SillyTavern capture."""
    for line in (HERE / f"{name}.jsonl").read_text().splitlines():
        entry = orjson.loads(line)
        if entry["path"] == path:
            return dict(entry["body_json"])
    raise LookupError(path)


# --- stop cutting -----------------------------------------------------------------------------
def test_stop_cutter_holds_back_a_possible_stop_and_releases_it() -> None:
    cutter = StopCutter(["</s>", "\nUser:"])
    assert cutter.feed("Hello <") == "Hello "
    assert cutter.feed("/") == ""
    assert cutter.feed("b> and\nU") == "</b> and"
    assert cutter.feed("ser") == ""
    assert cutter.feed(": hi") == ""
    assert cutter.stopped and cutter.stop == "\nUser:"
    assert cutter.flush() == ""


def test_cut_text_earliest_stop_wins() -> None:
    assert cut_text("a STOP b END", ["END", "STOP"]) == ("a ", "STOP")
    assert cut_text("nothing here", ["END"]) == ("nothing here", None)


# --- requests ---------------------------------------------------------------------------------
def test_openai_request_becomes_the_captured_native_stream_request() -> None:
    kobold = translator(server="koboldcpp")
    req = openai_request(
        {"model": "smol", "prompt": CHATML, "max_tokens": 16, "temperature": 0.7, "top_k": 1, "seed": 42,
         "stop": ["<|im_end|>"], "stream": True}
    )
    expected = request_json("post_api_extra_generate_stream_short")
    # Rosetta cuts stop strings itself (it must see which stop ended the text) and keys the job
    expected.update(trim_stop=False, genkey="KCPPcmpltest0001")
    assert kobold.build_request(req) == Upstream(
        "POST", URL + "/api/extra/generate/stream", {"Content-Type": "application/json"}, expected, True
    )


def test_non_stream_and_password_and_api_suffix() -> None:
    kobold = Kobold(Backend(name="k", type="kobold", url=URL + "/api/", api_key="kcpp-secret", options={"server": "koboldcpp"}))
    req = openai_request({"model": "smol", "prompt": "The sky is", "max_tokens": 8})
    assert kobold.build_request(req) == Upstream(
        "POST",
        URL + "/api/v1/generate",
        {"Content-Type": "application/json", "Authorization": "Bearer kcpp-secret"},
        {"prompt": "The sky is", "max_length": 8, "trim_stop": False, "genkey": "KCPPcmpltest0001"},
        False,
    )


def test_genkey_is_unique_per_request_and_deterministic() -> None:
    a, b = openai_request({"prompt": "x"}, rid="chatcmpl-aa11"), openai_request({"prompt": "x"}, rid="chatcmpl-bb22")
    assert genkey_for(a) == "KCPPchatcmplaa11" == genkey_for(a)
    assert genkey_for(a) != genkey_for(b)


def test_sillytavern_kobold_settings_give_what_sillytavern_sends_natively() -> None:
    """A client sending SillyTavern's Kobold settings through Rosetta produces the body ST sends
    to KoboldCpp itself (kai_nonstream), plus Rosetta's genkey and trim_stop, with the server's
    context size in place of the client's guess."""
    kai = sillytavern("kai_nonstream", "/api/v1/generate")
    kobold = translator(server="koboldcpp")
    kobold.context = 2048
    upstream = kobold.build_request(openai_request({"model": "smol", **kai}))
    assert upstream.json == {**kai, "max_context_length": 2048, "trim_stop": False, "genkey": "KCPPcmpltest0001"}
    assert upstream.warnings == ()


def test_sillytavern_text_completion_body_maps_every_alias_once() -> None:
    """ST's text-completion body for KoboldCpp carries ~60 keys with duplicates (max_tokens /
    n_predict / num_predict, rep_pen / repetition_penalty / repeat_penalty, stop /
    stopping_strings, dry_sequence_breakers as a JSON string...)."""
    st = sillytavern("tc_koboldcpp_stream", "/v1/completions")
    kobold = translator(server="koboldcpp")
    upstream = kobold.build_request(openai_request(st))
    assert upstream.url == URL + "/api/extra/generate/stream" and upstream.stream
    assert upstream.json == {
        "prompt": st["prompt"], "max_length": 300, "temperature": 0.7, "top_p": 0.5, "typical": 1,
        "sampler_seed": -1, "min_p": 0, "rep_pen": 1.2, "presence_penalty": 0, "top_k": 40,
        "smoothing_factor": 0, "smoothing_curve": 1, "dry_allowed_length": 2, "dry_multiplier": 0,
        "dry_base": 1.75, "dry_sequence_breakers": ["\n", ":", '"', "*"], "dry_penalty_last_n": 0,
        "stop_sequence": ["\nUser:"], "ban_eos_token": False, "top_a": 0, "tfs": 1, "mirostat": 0,
        "mirostat_tau": 5, "mirostat_eta": 0.1, "custom_token_bans": "", "banned_tokens": [],
        "xtc_threshold": 0.1, "xtc_probability": 0, "rep_pen_range": 0, "guidance_scale": 1,
        "negative_prompt": "", "grammar": "", "rep_pen_slope": 1, "sampler_order": [6, 0, 1, 3, 4, 2, 5],
        # SillyTavern extras KoboldCpp ignores: forwarded, as for any unknown field
        "min_tokens": 0, "add_bos_token": True, "max_tokens_second": 0, "skip_special_tokens": True,
        "trim_stop": False, "genkey": "KCPPcmpltest0001",
    }
    assert upstream.warnings == ()


def test_every_sampler_is_reachable_and_openai_names_map() -> None:
    body = {
        "prompt": "p", "max_completion_tokens": 10, "top_p": 0.9, "frequency_penalty": 0.5, "seed": 7,
        "logit_bias": {"42": -100}, "top_a": 0.2, "nsigma": 1.0, "mirostat_mode": 2, "mirostat_tau": 4,
        "dynatemp_range": 0.5, "dynatemp_exponent": 1.2, "grammar_string": "root ::= \"a\"",
        "banned_strings": ["slop"], "xtc_threshold": 0.15, "xtc_probability": 0.5, "memory": "M:",
        "dry_sequence_breakers": ["\n"], "ignore_eos": True, "render_special": True,
    }
    upstream = translator(server="koboldcpp").build_request(openai_request(body))
    assert upstream.json == {
        "prompt": "p", "max_length": 10, "top_p": 0.9, "presence_penalty": 0.5, "sampler_seed": 7,
        "logit_bias": {"42": -100}, "top_a": 0.2, "nsigma": 1.0, "mirostat": 2, "mirostat_tau": 4,
        "dynatemp_range": 0.5, "dynatemp_exponent": 1.2, "grammar": "root ::= \"a\"",
        "banned_tokens": ["slop"], "xtc_threshold": 0.15, "xtc_probability": 0.5, "memory": "M:",
        "dry_sequence_breakers": ["\n"], "ban_eos_token": True, "render_special": True,
        "trim_stop": False, "genkey": "KCPPcmpltest0001",
    }
    assert upstream.warnings == ("frequency_penalty was sent as presence_penalty (KoboldCpp has only the latter)",)


def test_alias_conflicts_native_name_wins_whatever_the_order() -> None:
    body = {"prompt": "p", "repetition_penalty": 1.3, "rep_pen": 1.1, "typical_p": 0.9}
    upstream = translator(server="koboldcpp").build_request(openai_request(body))
    assert upstream.json["rep_pen"] == 1.1 and upstream.json["typical"] == 0.9
    assert "repetition_penalty" not in upstream.json and "typical_p" not in upstream.json
    assert upstream.warnings == ("repetition_penalty=1.3 was not sent: rep_pen=1.1 sets the same thing",)


def test_bad_values_are_400s_naming_the_param() -> None:
    kobold = translator(server="koboldcpp")
    with pytest.raises(InvalidRequest) as bad:
        kobold.build_request(openai_request({"prompt": "p", "dry_sequence_breakers": "[not json"}))
    assert bad.value.param == "dry_sequence_breakers"
    with pytest.raises(Unsupported) as tools:
        kobold.build_request(openai_request({"prompt": "p", "tools": [{"type": "function", "function": {"name": "f"}}]}))
    assert tools.value.param == "tools"


def test_n_above_one_is_rejected_on_koboldcpp() -> None:
    # KoboldCpp 1.76 answers n=2 with a single result (post_api_v1_generate_multi_results_n2)
    assert len(orjson.loads(body_of("post_api_v1_generate_multi_results_n2"))["results"]) == 1
    with pytest.raises(Unsupported) as err:
        translator(server="koboldcpp").build_request(openai_request({"prompt": "The sky is", "n": 2}))
    assert err.value.param == "n"


def test_united_gets_only_its_whitelist_and_its_limits() -> None:
    kai = sillytavern("ui_kobold_classic_generate", "/api/v1/generate")
    kobold = translator(server="koboldai")
    kobold.context = 8192
    req = openai_request({"model": "smol", **kai, "max_tokens": 700, "n": 2, "stream": True}, n=2)
    upstream = kobold.build_request(req)
    expected = {k: v for k, v in kai.items() if k not in ("min_p", "mirostat", "mirostat_eta", "mirostat_tau", "grammar")}
    assert upstream == Upstream(
        "POST", URL + "/api/v1/generate", {"Content-Type": "application/json"},
        {**expected, "max_length": 512, "n": 2}, False,
    )
    assert upstream.warnings == (
        "max_tokens=700 is above this backend's maximum 512; sent 512",
        "KoboldAI United rejects these fields, not sent: grammar, min_p, mirostat, mirostat_eta, mirostat_tau",
    )
