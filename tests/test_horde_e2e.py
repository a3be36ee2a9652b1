"""The ``horde`` translator: /v1/models, options, and end to end (the real app, a replaying fake Horde,
real clients).

The fake AI Horde (horde_helpers) is built on the real server's recorded answers
(``transcripts/horde/``, copied from a real AI Horde run locally with a scripted worker), on a
fake clock: the polling cadence, the timeout and the Retry-After handling are asserted without waiting.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from horde_helpers import CHAT, CHATML, ECHO, MODEL, PROMPT, FakeHorde, capture, completion, horde
from pydantic import ValidationError

from translators.horde import Horde

# --- /v1/models ------------------------------------------------------------------------------


async def test_list_models_and_details_from_the_live_model_list() -> None:
    fake = FakeHorde(models="40_models_text_after_worker")
    t = horde()
    listed = await t.list_models(fake)
    assert [m["id"] for m in listed] == [MODEL]  # type: ignore[index]
    assert all(isinstance(m, dict) and m["workers"] >= 1 for m in listed)
    assert await t.model_details(fake) == [
        {"id": MODEL, "workers": 4, "performance": 840.3, "queued": 0.0, "jobs": 0.0, "eta": 0},
    ]
    assert len(fake.requests("models")) == 1  # cached
    fake.t += 301
    await t.list_models(fake)
    assert len(fake.requests("models")) == 2


async def test_list_models_is_empty_when_the_horde_cannot_be_read() -> None:
    assert await horde().list_models(FakeHorde(models="67_err_wrong_path")) == []


def test_options_are_validated() -> None:
    for bad in ({"poll_interval": 0.5}, {"poll_interval": 6, "max_poll_interval": 5}, {"workers": ["1"] * 6},
                {"typo": 1}):
        with pytest.raises(ValidationError):
            horde(**bad)


def test_model_options_as_the_pipeline_passes_them() -> None:
    # req.options is the validated ModelOptions instance (config: models list, context, template)
    options = Horde.ModelOptions.model_validate({"models": ["x/y", "x/z"], "max_context_length": 2048})
    up = horde().build_request(completion(options=options))
    assert up.json["models"] == ["x/y", "x/z"]
    assert up.json["params"]["max_context_length"] == 2048
    with pytest.raises(ValidationError):
        Horde.ModelOptions.model_validate({"template": "no-such-template"})


# --- end to end: the real app, a replaying fake Horde, real clients ---------------------------

JOB = "4ccd956e-bfc1-40e9-9d9e-dfb82dd06ea1"
STATUS_PATH = f"/api/v2/generate/text/status/{JOB}"


def wire_of(name: str) -> bytes:
    """The recorded answer of capture ``name`` as HTTP bytes (status, headers, exact body)."""
    from harness import http_response

    data = capture(name)
    headers = {k: v for k, v in data["headers"].items() if k.lower() not in ("content-length", "content-type")}
    kind = data["headers"].get("Content-Type", "application/json")
    return http_response(data["status"], data["body_raw"], headers={**headers, "Connection": "close"}, content_type=kind)


def app_config(url: str, **options: Any) -> dict[str, Any]:
    # polls 1 s apart: the fastest the options allow (the Horde's limit), to keep the test short
    backend = {"type": "horde", "url": url + "/api", "poll_interval": 1, "max_poll_interval": 1, **options}
    return {"backends": {"horde": backend}, "models": [{"name": "smol", "backend": "horde", "model": MODEL}]}


def fake_horde(upstream: Any, *statuses: str) -> None:
    upstream.add("GET", "/api/v2/workers", wire_of("42_workers_text"))
    upstream.add("POST", "/api/v2/generate/text/async", wire_of("20_submit_async_user"))
    upstream.add("GET", STATUS_PATH, *(wire_of(s) for s in statuses))
    upstream.add("DELETE", STATUS_PATH, wire_of("24_cancel_after_done"))


async def test_e2e_stream_sends_queue_comments_then_the_text(upstream: Any, rosetta: Any) -> None:
    import aiohttp

    fake_horde(upstream, "21_status_queued_before_pop", "22_status_3_done")
    running = await rosetta(app_config(upstream.url))
    body = {"model": "smol", "prompt": PROMPT, "max_tokens": 32, "stream": True}
    async with aiohttp.ClientSession() as http, http.post(running.base_url + "/completions", json=body) as r:
        assert r.status == 200
        raw = (await r.read()).decode()
    assert ": queue_position=1 wait_seconds=0 kudos=1.0 waiting=1 processing=0 finished=0 restarted=0\n\n" in raw
    chunks = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == ECHO
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] == [
        "stop"
    ]
    assert raw.rstrip().endswith("data: [DONE]")
    # the worker is known only at the end: streaming clients get it as a comment
    assert ": x-rosetta-horde-worker=lab-capture-worker x-rosetta-horde-model=" in raw
    submitted = upstream.requests("/api/v2/generate/text/async")[0]
    assert submitted.headers["apikey"] == "0000000000"
    assert submitted.headers["client-agent"].startswith("rosetta:")
    assert submitted.json["params"] == {"max_length": 32, "max_context_length": 4096}
    assert upstream.requests(STATUS_PATH) and all(r.method == "GET" for r in upstream.requests(STATUS_PATH))


async def test_e2e_non_stream_answer_with_horde_headers(upstream: Any, rosetta: Any) -> None:
    import openai

    fake_horde(upstream, "22_status_3_done")
    running = await rosetta(app_config(upstream.url))
    client = openai.AsyncOpenAI(base_url=running.base_url, api_key="sk-client", max_retries=0)
    raw = await client.completions.with_raw_response.create(model="smol", prompt=PROMPT, max_tokens=32)
    answer = raw.parse()
    assert answer.choices[0].text == ECHO and answer.choices[0].finish_reason == "stop"
    assert raw.headers["x-rosetta-horde-worker"] == "lab-capture-worker"
    assert raw.headers["x-rosetta-horde-model"] == MODEL
    assert raw.headers["x-rosetta-horde-kudos"] == "2"
    assert raw.headers["x-rosetta-usage-source"] == "estimated"


async def test_e2e_impossible_job_is_a_503_error_response(upstream: Any, rosetta: Any) -> None:
    import openai

    job = "4cb78d1c-adab-4b35-9c1d-f81e4b7d8dd0"
    upstream.add("GET", "/api/v2/workers", wire_of("42_workers_text"))
    upstream.add("POST", "/api/v2/generate/text/async", wire_of("62_submit_unknown_model"))
    upstream.add("GET", f"/api/v2/generate/text/status/{job}", wire_of("63_status_unknown_model"))
    upstream.add("DELETE", f"/api/v2/generate/text/status/{job}", wire_of("64_cancel_unknown_model"))
    running = await rosetta(app_config(upstream.url))
    client = openai.AsyncOpenAI(base_url=running.base_url, api_key="sk-client", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        await client.completions.create(model="smol", prompt=PROMPT, max_tokens=32, stream=True)
    assert caught.value.status_code == 503
    assert "no AI Horde worker online can serve" in str(caught.value)
    assert len(upstream.requests(f"/api/v2/generate/text/status/{job}")) == 2  # the poll, then the DELETE


async def test_e2e_chat_stream_through_the_instruct_template(upstream: Any, rosetta: Any) -> None:
    import openai

    fake_horde(upstream, "22_status_3_done")
    running = await rosetta(app_config(upstream.url, template="chatml"))
    client = openai.AsyncOpenAI(base_url=running.base_url, api_key="sk-client", max_retries=0)
    messages: Any = list(CHAT)
    stream = await client.chat.completions.create(model="smol", messages=messages, max_tokens=32, stream=True)
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ECHO
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    submitted = upstream.requests("/api/v2/generate/text/async")[0].json
    assert submitted["prompt"] == CHATML
    assert submitted["params"]["stop_sequence"] == ["<|im_end|>", "<|im_start|>"]


async def test_e2e_client_disconnect_sends_delete_within_100ms(upstream: Any, rosetta: Any) -> None:
    fake_horde(upstream, "21_status_queued_before_pop")
    running = await rosetta(app_config(upstream.url))
    reader, writer = await asyncio.open_connection("127.0.0.1", int(running.url.rsplit(":", 1)[1]))
    body = json.dumps({"model": "smol", "prompt": PROMPT, "max_tokens": 32, "stream": True}).encode()
    writer.write(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )
    await writer.drain()
    received = b""
    while b"queue_position=" not in received:  # the first keep-alive comment: the job is queued
        received += await reader.read(4096)
    writer.close()
    hung_up = asyncio.get_running_loop().time()
    for _ in range(100):
        if any(r.method == "DELETE" for r in upstream.requests(STATUS_PATH)):
            break
        await asyncio.sleep(0.005)
    deletes = [r for r in upstream.requests(STATUS_PATH) if r.method == "DELETE"]
    assert deletes, "the Horde job was not cancelled"
    assert deletes[0].at - hung_up < 0.1
    assert deletes[0].headers["apikey"] == "0000000000"
