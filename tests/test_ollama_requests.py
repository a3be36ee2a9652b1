"""Ollama translator: native requests.

There are no captures of a real Ollama server: the answers in ``transcripts/ollama/`` are the
examples of Ollama's own documentation (``docs/api.md``, ``docs/api/streaming.mdx``,
``docs/api/errors.mdx`` in github.com/ollama/ollama; ``SOURCES.md`` there says which file is
which). The native request is compared with what SillyTavern sends to Ollama.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from ollama_helpers import HERE, URL, chat, completion, translator

from translators.base import Backend, Upstream
from translators.errors import InvalidRequest, Unsupported
from translators.ollama import ModelOptions, Ollama


def sillytavern(name: str) -> dict[str, Any]:
    """The body SillyTavern sent in a ``tc_*.jsonl`` capture."""
    return orjson.loads((HERE / name).read_bytes().splitlines()[0])["body_json"]


# --- native requests ----------------------------------------------------------------------

def test_completion_request_is_what_sillytavern_sends() -> None:
    # SillyTavern's generic text-completion payload (the one it sends to llama.cpp) given to
    # Rosetta as an OpenAI completion body must become what SillyTavern sends to Ollama.
    generic = sillytavern("../llamacpp/tc_llamacpp_stream.jsonl")
    expected = sillytavern("tc_ollama_stream.jsonl")
    body = {k: v for k, v in generic.items() if k not in ("api_type", "api_server")}
    req = completion(body, stop=["\nUser:"])
    upstream = translator(keep_alive=-1).build_request(req)
    assert upstream == Upstream(
        "POST", f"{URL}/api/generate", {"Content-Type": "application/json"}, {**expected, "truncate": False}, True
    )
    assert any("dry_multiplier" in w for w in upstream.warnings)  # llama.cpp-only keys are named, not sent


def test_nonstream_completion_matches_sillytavern() -> None:
    generic = sillytavern("../llamacpp/tc_llamacpp_nonstream.jsonl")
    expected = sillytavern("tc_ollama_nonstream.jsonl")
    body = {k: v for k, v in generic.items() if k not in ("api_type", "api_server")}
    upstream = translator(keep_alive=-1).build_request(completion(body, stop=["\nUser:"]))
    assert upstream.json == {**expected, "truncate": False}
    assert upstream.stream is False


def test_chat_request() -> None:
    req = chat(
        {
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is in this image?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Toronto\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "11 degrees celsius"},
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "max_tokens": 64, "temperature": 0.2, "top_k": 20, "seed": 7, "stream": True,
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
            "reasoning_effort": "xhigh", "user": "someone",
        },
        stop=["###"],
        options=ModelOptions(num_ctx=8192, keep_alive="10m"),
    )
    upstream = translator().build_request(req)
    assert upstream == Upstream(
        "POST",
        f"{URL}/api/chat",
        {"Content-Type": "application/json"},
        {
            "model": "llama3.2",
            "stream": True,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "what is in this image?", "images": ["iVBORw0KGgo="]},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Toronto"}}}]},
                {"role": "tool", "content": "11 degrees celsius", "tool_name": "get_weather"},
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "options": {"temperature": 0.2, "top_k": 20, "seed": 7, "num_predict": 64, "stop": ["###"], "num_ctx": 8192},
            "keep_alive": "10m",
            "truncate": False,
            "format": {"type": "object"},
            "think": "max",
        },
        True,
    )
    assert "user is ignored by this backend" in upstream.warnings


def test_completion_suffix_uses_the_template_and_raw_is_configurable() -> None:
    t = translator(num_ctx=4096)
    fim = t.build_request(completion({"prompt": "def gcd(a, b):", "suffix": "    return result"}))
    assert fim.json["raw"] is False and fim.json["suffix"] == "    return result"
    templated = t.build_request(completion({"prompt": "Hi"}, options=ModelOptions(raw=False)))
    assert templated.json["raw"] is False and templated.json["options"] == {"num_ctx": 4096}
    plain = t.build_request(completion({"prompt": "Hi", "response_format": {"type": "json_object"}}))
    assert plain.json["raw"] is True and plain.json["format"] == "json"


def test_truncate_can_be_allowed() -> None:
    upstream = translator(truncate=True).build_request(completion({"prompt": "Hi"}, options=ModelOptions(num_ctx=2048)))
    assert "truncate" not in upstream.json


def test_unknown_context_size_is_a_warning() -> None:
    upstream = translator().build_request(completion({"prompt": "Hi"}))
    assert "options" not in upstream.json
    assert any("context size is unknown" in w for w in upstream.warnings)


@pytest.mark.parametrize(
    "body, param",
    [
        ({"n": 2}, "n"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"tool_choice": "required", "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice"),
        ({"logprobs": True}, None),  # chat logprobs are supported
    ],
)
def test_unsupported_chat_fields(body: dict[str, Any], param: str | None) -> None:
    req = chat({"messages": [{"role": "user", "content": "hi"}], **body})
    if param is None:
        assert translator().build_request(req).json["logprobs"] is True
        return
    with pytest.raises(Unsupported) as info:
        translator().build_request(req)
    assert info.value.param == param


def test_completion_logprobs_and_remote_images_are_refused() -> None:
    with pytest.raises(Unsupported) as info:
        translator().build_request(completion({"prompt": "Hi", "logprobs": 2}))
    assert info.value.param == "logprobs"
    remote = chat({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]})
    with pytest.raises(Unsupported) as info:
        translator().build_request(remote)
    assert info.value.param == "messages[0].content[0].image_url.url"
    bad = chat({"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]})
    with pytest.raises(InvalidRequest):
        translator().build_request(bad)


def test_tool_choice_none_sends_no_tools() -> None:
    req = chat({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "none",
                "tools": [{"type": "function", "function": {"name": "f"}}]})
    assert "tools" not in translator().build_request(req).json


def test_own_names_win_over_aliases_and_the_v1_url_is_understood() -> None:
    t = Ollama(Backend("ollama", "ollama", URL + "/v1", api_key="cloud-key", options={"num_ctx": 2048}))
    upstream = t.build_request(completion({"prompt": "Hi", "repeat_penalty": 1.3, "rep_pen": 1.05, "think": False, "keep_alive": 0}))
    assert upstream.url == f"{URL}/api/generate"
    assert upstream.headers == {"Content-Type": "application/json", "Authorization": "Bearer cloud-key"}
    assert upstream.json["options"] == {"repeat_penalty": 1.3, "num_ctx": 2048}
    assert (upstream.json["think"], upstream.json["keep_alive"]) == (False, 0)
    assert any("rep_pen and repeat_penalty disagree" in w for w in upstream.warnings)
