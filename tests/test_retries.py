"""Retries and fallbacks: before anything reached the client, a retryable upstream failure is
tried again on the same backend, then on the model's fallbacks."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest
from harness import TRANSCRIPTS, http_response

OK = (TRANSCRIPTS / "openai" / "llamacpp__post_v1_chat_completions.response.wire").read_bytes()
STREAM = (TRANSCRIPTS / "openai" / "llamacpp__post_v1_chat_completions_stream.response.wire").read_bytes()
USER = [{"role": "user", "content": "What is the capital of France?"}]


def failure(status: int, headers: dict[str, str] | None = None) -> bytes:
    return http_response(status, {"error": {"message": f"status {status}", "type": "server_error"}}, headers=headers)


def config(url: str, *, retries: int = 1, fallbacks: list[str] | None = None, **backend: Any) -> dict[str, Any]:
    return {
        "backends": {
            "up": {"type": "openai", "url": url + "/v1", "retries": retries, "retry_max_wait": 0.05, **backend},
            "dead": {"type": "openai", "url": "http://127.0.0.1:9/v1"},
            "mock": {"type": "mock", "tokens_per_second": 0},
        },
        "models": [
            {"name": "main", "backend": "up", "model": "m", "fallbacks": fallbacks or []},
            {"name": "broken", "backend": "dead", "model": "m", "fallbacks": ["main", "mock/lorem"]},
        ],
    }


def client(running: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=running.base_url, api_key="x", max_retries=0)


async def metric(running: Any, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(running.url + "/metrics") as r:
        text = await r.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


@pytest.mark.parametrize("stream", [False, True])
async def test_a_retryable_failure_is_tried_again(upstream: Any, rosetta: Any, stream: bool) -> None:
    upstream.add("POST", "/v1/chat/completions", failure(503), STREAM if stream else OK)
    running = await rosetta(config(upstream.url))
    answer = await client(running).chat.completions.create(model="main", messages=USER, stream=stream)
    if stream:
        text = "".join([c.choices[0].delta.content or "" async for c in answer if c.choices])  # type: ignore[union-attr]
    else:
        text = answer.choices[0].message.content or ""  # type: ignore[union-attr]
    assert text.startswith("What is the capital of France?")
    assert len(upstream.requests("/v1/chat/completions")) == 2
    assert await metric(running, "rosetta_retries_total") == 1


async def test_retry_after_is_honoured_up_to_retry_max_wait(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/chat/completions", failure(429, {"Retry-After": "30"}), OK)
    running = await rosetta(config(upstream.url))
    answer = await client(running).chat.completions.create(model="main", messages=USER)
    assert answer.choices[0].finish_reason == "length"
    first, second = upstream.requests("/v1/chat/completions")
    assert second.at - first.at < 1.0  # capped at retry_max_wait (0.05 s), not 30 s


async def test_client_errors_are_not_retried_and_retries_run_out(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/chat/completions", failure(400))
    running = await rosetta(config(upstream.url, retries=2))
    with pytest.raises(openai.BadRequestError):
        await client(running).chat.completions.create(model="main", messages=USER)
    assert len(upstream.requests("/v1/chat/completions")) == 1
    upstream.routes.clear()
    upstream.add("POST", "/v1/chat/completions", failure(503))
    with pytest.raises(openai.InternalServerError) as caught:
        await client(running).chat.completions.create(model="main", messages=USER)
    assert caught.value.status_code == 503
    assert len(upstream.requests("/v1/chat/completions")) == 1 + 3  # the 400, then 1 + 2 retries


async def test_fallbacks_are_tried_in_order_and_keep_the_asked_name(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/chat/completions", failure(503))
    running = await rosetta(config(upstream.url, retries=0))
    answer = await client(running).chat.completions.create(model="broken", messages=USER, max_tokens=4)
    # dead (refused) -> main (503) -> mock/lorem answers
    assert answer.model == "broken" and answer.choices[0].message.content == "Lorem ipsum dolor sit"
    assert len(upstream.requests("/v1/chat/completions")) == 1
    assert await metric(running, "rosetta_fallbacks_total") == 2


def test_fallback_names_are_checked_at_load() -> None:
    from proxy.config import ConfigError, load_settings

    raw = {
        "backends": {"mock": {"type": "mock"}},
        "models": [{"name": "a", "backend": "mock", "model": "lorem", "fallbacks": ["a", "nosuch", "mock/echo"]}],
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(raw, env={})
    assert caught.value.problems == [
        "models[0].fallbacks[0]: a model cannot fall back to itself",
        "models[0].fallbacks[1]: 'nosuch' is neither a model name nor '<backend>/<model>'",
    ]
