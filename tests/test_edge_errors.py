"""Every bad input gets OpenAI's error envelope, the right status, and the parameter named."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

MOCK = {"backends": {"mock": {"type": "mock", "tokens_per_second": 0}}, "models": [{"name": "m", "backend": "mock", "model": "lorem"}]}
USER = [{"role": "user", "content": "hi"}]


async def post(running: Any, path: str, *, json: Any = None, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(running.base_url + path, json=json, data=data, headers=headers) as r:
            return r.status, dict(r.headers), await r.json(content_type=None)


def check(body: Any, param: str | None, *, code: str | None = None, type_: str = "invalid_request_error") -> None:
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type_ and error["param"] == param and error["message"]
    if code is not None:
        assert error["code"] == code


CHAT_CASES = [
    ({"messages": USER}, "model"),
    ({"model": 5, "messages": USER}, "model"),
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": "hi"}, "messages"),
    ({"model": "m", "messages": [{"content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0].content[0]"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages[0].content[0].image_url.url"),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}]}, "messages[0].tool_calls[0]"),
    ({"model": "m", "messages": USER, "temperature": "hot"}, "temperature"),
    ({"model": "m", "messages": USER, "temperature": 2.5}, "temperature"),
    ({"model": "m", "messages": USER, "top_p": -0.1}, "top_p"),
    ({"model": "m", "messages": USER, "n": 0}, "n"),
    ({"model": "m", "messages": USER, "n": 1.5}, "n"),
    ({"model": "m", "messages": USER, "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": USER, "max_tokens": True}, "max_tokens"),
    ({"model": "m", "messages": USER, "max_completion_tokens": "9"}, "max_completion_tokens"),
    ({"model": "m", "messages": USER, "presence_penalty": 3}, "presence_penalty"),
    ({"model": "m", "messages": USER, "frequency_penalty": -3}, "frequency_penalty"),
    ({"model": "m", "messages": USER, "stop": 5}, "stop"),
    ({"model": "m", "messages": USER, "stop": ["a", 1]}, "stop"),
    ({"model": "m", "messages": USER, "seed": "x"}, "seed"),
    ({"model": "m", "messages": USER, "logit_bias": {"abc": 1}}, "logit_bias"),
    ({"model": "m", "messages": USER, "logit_bias": {"50256": 500}}, "logit_bias"),
    ({"model": "m", "messages": USER, "user": 7}, "user"),
    ({"model": "m", "messages": USER, "stream": "yes"}, "stream"),
    ({"model": "m", "messages": USER, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"model": "m", "messages": USER, "stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ({"model": "m", "messages": USER, "logprobs": "yes"}, "logprobs"),
    ({"model": "m", "messages": USER, "top_logprobs": 2}, "top_logprobs"),
    ({"model": "m", "messages": USER, "tools": {"type": "function"}}, "tools"),
    ({"model": "m", "messages": USER, "tools": [{"type": "function", "function": {}}]}, "tools[0]"),
    ({"model": "m", "messages": USER, "tool_choice": "sometimes"}, "tool_choice"),
    ({"model": "m", "messages": USER, "tool_choice": "required"}, "tool_choice"),
    ({"model": "m", "messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice"),
    ({"model": "m", "messages": USER, "response_format": {"type": "xml"}}, "response_format"),
    ({"model": "m", "messages": USER, "response_format": {"type": "json_schema"}}, "response_format.json_schema"),
]


@pytest.mark.parametrize(("body", "param"), CHAT_CASES)
async def test_chat_bad_bodies_are_400_naming_the_param(rosetta: Any, body: dict[str, Any], param: str) -> None:
    running = await rosetta(MOCK)
    status, headers, answer = await post(running, "/chat/completions", json=body)
    assert status == 400, answer
    check(answer, param)
    assert headers["Content-Type"].startswith("application/json")


COMPLETION_CASES = [
    ({"model": "m"}, "prompt"),
    ({"model": "m", "prompt": 5}, "prompt"),
    ({"model": "m", "prompt": []}, "prompt"),
    ({"model": "m", "prompt": ["a", 1]}, "prompt"),
    ({"model": "m", "prompt": "x", "logprobs": True}, "logprobs"),
    ({"model": "m", "prompt": "x", "logprobs": 9}, "logprobs"),
    ({"model": "m", "prompt": "x", "echo": "no"}, "echo"),
    ({"model": "m", "prompt": "x", "max_tokens": -1}, "max_tokens"),
]


@pytest.mark.parametrize(("body", "param"), COMPLETION_CASES)
async def test_completion_bad_bodies_are_400_naming_the_param(rosetta: Any, body: dict[str, Any], param: str) -> None:
    running = await rosetta(MOCK)
    status, _, answer = await post(running, "/completions", json=body)
    assert status == 400, answer
    check(answer, param)


async def test_unknown_model_is_404_model_not_found(rosetta: Any) -> None:
    running = await rosetta(MOCK)
    status, _, answer = await post(running, "/chat/completions", json={"model": "gpt-9", "messages": USER})
    assert status == 404
    check(answer, "model", code="model_not_found")
    status, _, answer = await post(running, "/chat/completions", json={"model": "nobackend/x", "messages": USER})
    assert status == 404


async def test_invalid_json_wrong_type_and_content_type(rosetta: Any) -> None:
    running = await rosetta(MOCK)
    status, _, answer = await post(running, "/chat/completions", data=b'{"model": "m", ', headers={"Content-Type": "application/json"})
    assert status == 400 and "could not parse the JSON body" in answer["error"]["message"]
    status, _, answer = await post(running, "/chat/completions", data=b"[1, 2]", headers={"Content-Type": "application/json"})
    assert status == 400 and "JSON object" in answer["error"]["message"]
    status, _, answer = await post(running, "/chat/completions", data=b"model=m", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415
    check(answer, None, code="unsupported_media_type")


async def test_body_too_large_is_413(rosetta: Any) -> None:
    running = await rosetta({**MOCK, "server": {"max_body_bytes": 2048}})
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}
    status, _, answer = await post(running, "/chat/completions", json=big)
    assert status == 413
    check(answer, None, code="request_too_large")


async def test_unknown_path_and_wrong_method(rosetta: Any) -> None:
    running = await rosetta(MOCK)
    async with aiohttp.ClientSession() as http:
        async with http.get(running.base_url + "/chat/completions") as r:
            assert r.status == 405
            check(await r.json(), None)
        async with http.post(running.base_url + "/embeddings", json={}) as r:
            assert r.status == 404
            check(await r.json(), None)


async def test_gateway_keys(rosetta: Any) -> None:
    running = await rosetta({**MOCK, "server": {"api_keys": ["sk-team-1", "sk-team-2"]}})
    body = {"model": "m", "messages": USER}
    status, _, answer = await post(running, "/chat/completions", json=body)
    assert status == 401
    check(answer, None, code="missing_api_key", type_="authentication_error")
    status, _, answer = await post(running, "/chat/completions", json=body, headers={"Authorization": "Bearer wrong"})
    assert status == 401 and "sk-team" not in str(answer)
    status, _, _ = await post(running, "/chat/completions", json=body, headers={"Authorization": "Bearer sk-team-2"})
    assert status == 200
    async with aiohttp.ClientSession() as http:
        async with http.get(running.url + "/health") as r:
            assert r.status == 200  # liveness needs no key


async def test_unsupported_meaningful_parameter_is_400(rosetta: Any) -> None:
    running = await rosetta(
        {"backends": {"box": {"type": "openai", "url": "http://127.0.0.1:9/v1"}}, "models": []}
    )
    # several prompts are fine for the passthrough, but not for a chat-only backend: checked in
    # the pipeline tests; here a neutral value must never be rejected
    status, _, answer = await post(running, "/chat/completions", json={"model": "box/x", "messages": USER, "n": 1, "logit_bias": {}})
    assert status == 502  # reached the (dead) upstream: nothing was rejected


async def test_cors_preflight_and_headers_for_configured_origins(rosetta: Any) -> None:
    running = await rosetta({**MOCK, "server": {"api_keys": ["sk-team-1"], "cors_origins": ["http://ui.local"]}})
    async with aiohttp.ClientSession() as http:
        preflight = {"Origin": "http://ui.local", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}
        async with http.options(running.base_url + "/chat/completions", headers=preflight) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "http://ui.local"
            assert "authorization" in r.headers["Access-Control-Allow-Headers"]
        headers = {"Origin": "http://ui.local", "Authorization": "Bearer sk-team-1"}
        async with http.post(running.base_url + "/chat/completions", json={"model": "m", "messages": USER}, headers=headers) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "http://ui.local"
        async with http.post(running.base_url + "/chat/completions", json={"model": "m", "messages": USER}, headers={"Origin": "http://evil.local", "Authorization": "Bearer sk-team-1"}) as r:
            assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers


def test_url_credentials_with_an_api_key_are_a_config_error() -> None:
    from proxy.config import ConfigError, load_settings

    with pytest.raises(ConfigError) as caught:
        load_settings({"backends": {"b": {"type": "openai", "url": "http://u:p@host/v1", "api_key": "sk-x"}}}, env={})
    assert "backends.b.url: credentials in the URL cannot be combined with api_key" in caught.value.problems[0]
