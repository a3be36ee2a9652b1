"""llama.cpp translator: native ``/completion`` requests.

Every answer here is bytes recorded from a real ``llama-server`` (commit 0c1e57098, models
gemma-3-270m and SmolLM2-135M), copied into ``transcripts/llamacpp/``; the native request is
compared with the captured request and with what SillyTavern sends to llama.cpp.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from llamacpp_helpers import HERE, JSON, URL, captured_request, completion, rendered_chat, translator

from translators.base import Backend, Upstream
from translators.errors import InvalidRequest, Unsupported
from translators.llamacpp import LlamaCpp


def sillytavern(name: str) -> dict[str, Any]:
    return orjson.loads((HERE / name).read_bytes().splitlines()[-1])["body_json"]


# --- native requests ----------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, openai",
    [
        ("post_completion", {"prompt": "The capital of France is", "max_tokens": 24, "temperature": 0.7, "top_k": 1, "seed": 42, "stop": ["\n\n"]}),
        ("post_completion_stream", {"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0.7, "top_k": 1, "seed": 42, "stream": True}),
        ("post_completion_stream_stop_word_hit", {"prompt": "The capital of France is", "max_tokens": 24, "top_k": 1, "seed": 42, "stop": " largest", "stream": True}),
        # SillyTavern's name for the penalty, llama.cpp's for the others
        ("post_completion_length_128", {"prompt": "Once upon a time, in a small village by the sea,", "max_tokens": 128, "temperature": 0.8,
                                        "top_p": 0.92, "top_k": 100, "repetition_penalty": 1.1, "seed": 7, "ignore_eos": True}),
        ("post_completion_token_prompt", {"prompt": [9259, 1902, 236764, 1217, 659, 611, 236881], "max_tokens": 8, "top_k": 1}),
        ("post_completion_n_probs", {"prompt": "The capital of France is", "max_tokens": 3, "top_k": 1, "n_probs": 2}),
    ],
)
def test_request_is_the_captured_one(name: str, openai: dict[str, Any]) -> None:
    captured = captured_request(name)
    upstream = translator().build_request(completion(openai))
    # Rosetta always says whether it streams and asks for the prompt cache (both defaults of
    # the server, sent so the request does not depend on them).
    expected = {**captured, "stream": captured.get("stream", False), "cache_prompt": True}
    assert upstream == Upstream("POST", f"{URL}/completion", JSON, expected, bool(openai.get("stream")))


def test_sillytavern_payload() -> None:
    # SillyTavern's text-completion body given to Rosetta as an OpenAI completion: the fields
    # llama.cpp reads arrive under llama.cpp's names and types (its DRY breakers as a JSON
    # array, which llama.cpp demands); the other servers' fields are left out, with a warning.
    st = sillytavern("tc_llamacpp_stream.jsonl")
    req = completion({k: v for k, v in st.items() if k not in ("api_type", "api_server")})
    upstream = translator().build_request(req)
    assert upstream.json == {
        "prompt": st["prompt"], "stream": True, "n_predict": 300, "stop": ["\nUser:"], "cache_prompt": True,
        "temperature": 0.7, "top_p": 0.5, "typical_p": 1, "seed": -1, "min_p": 0, "repeat_penalty": 1.2,
        "frequency_penalty": 0, "presence_penalty": 0, "top_k": 40, "dry_allowed_length": 2, "dry_multiplier": 0,
        "dry_base": 1.75, "dry_sequence_breakers": ["\n", ":", "\"", "*"], "dry_penalty_last_n": 0,
        "xtc_threshold": 0.1, "xtc_probability": 0, "grammar": "", "repeat_last_n": 0, "mirostat": 0,
        "mirostat_tau": 5, "mirostat_eta": 0.1, "ignore_eos": False,
        "samplers": ["top_k", "tfs_z", "typical_p", "top_p", "min_p", "temperature"], "json_schema": {},
    }
    assert upstream.headers == JSON
    (dropped,) = [w for w in upstream.warnings if w.startswith("fields this backend does not take")]
    assert "smoothing_factor" in dropped and "num_ctx" in dropped


def test_sillytavern_ui_payload_and_api_key() -> None:
    st = sillytavern("ui/ui_tc_llamacpp_generate.jsonl")
    t = LlamaCpp(Backend("llama", "llamacpp", URL + "/v1", api_key="llamacpp-secret"))
    upstream = t.build_request(completion({k: v for k, v in st.items() if k not in ("api_type", "api_server")}))
    assert upstream.url == f"{URL}/completion"
    assert upstream.headers == {**JSON, "Authorization": "Bearer llamacpp-secret"}
    assert upstream.json["logit_bias"] == [] and upstream.json["cache_prompt"] is True
    assert upstream.json["n_predict"] == 350 and upstream.json["stop"] == ["\nUser:", "\n***"]


def test_openai_fields() -> None:
    req = rendered_chat(
        {"max_completion_tokens": 50, "logit_bias": {"15043": 2.5, "2": -100}, "logprobs": True, "top_logprobs": 0,
         "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array"}}},
         "grammar": "root ::= x", "user": "u", "rep_pen": 1.05, "repeat_penalty": 1.3},
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    )
    upstream = translator(default_max_tokens=200).build_request(req)
    assert upstream.json == {
        "prompt": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "stream": False, "n_predict": 200,
        "cache_prompt": True, "logit_bias": [[15043, 2.5], [2, False]], "json_schema": {"type": "array"},
        "n_probs": 1, "repeat_penalty": 1.3,
    }
    assert "user is ignored by this backend" in upstream.warnings
    assert any("rep_pen and repeat_penalty disagree" in w for w in upstream.warnings)


@pytest.mark.parametrize(
    "openai, param",
    [
        ({"n": 2}, "n"),
        ({"echo": True}, "echo"),
        ({"suffix": "end"}, "suffix"),
        ({"logprobs": 1}, "logprobs"),
        ({"prompt": ["one", "two"]}, "prompt"),
    ],
)
def test_unsupported(openai: dict[str, Any], param: str) -> None:
    with pytest.raises(Unsupported) as info:
        translator().build_request(completion({"prompt": "x", **openai}))
    assert info.value.param == param


def test_tools_are_unsupported_and_breakers_checked() -> None:
    tools = rendered_chat({"tools": [{"type": "function", "function": {"name": "f"}}]}, "p")
    with pytest.raises(Unsupported) as info:
        translator().build_request(tools)
    assert info.value.param == "tools"
    with pytest.raises(InvalidRequest):
        translator().build_request(completion({"prompt": "x", "dry_sequence_breakers": "not json"}))
