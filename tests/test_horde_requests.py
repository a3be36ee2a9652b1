"""The ``horde`` translator, requests: the native request, and clamping it to the workers.

The fake AI Horde (horde_helpers) is built on the real server's recorded answers
(``transcripts/horde/``, copied from a real AI Horde run locally with a scripted worker), on a
fake clock: the polling cadence, the timeout and the Retry-After handling are asserted without waiting.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from horde_helpers import (
    AGENT,
    BASE,
    CHAT,
    CHATML,
    HORDE,
    MODEL,
    PROMPT,
    FakeHorde,
    FakeResponse,
    capture,
    completion,
    horde,
)

from translators.base import Backend, Upstream
from translators.errors import InvalidRequest, Unsupported
from translators.horde import Horde
from translators.horde_lists import HordeWorker, WorkerFilter, WorkerLimits, worker_limits
from translators.request import Request

# --- the native request ----------------------------------------------------------------------


def test_build_request_matches_the_recorded_submit() -> None:
    # capture 20: what a client submitted to the real Horde for this prompt
    recorded = capture("20_submit_async_user")["request"]["body"]
    upstream = horde().build_request(completion(n=1, body={
        "model": "smol", "prompt": PROMPT, "max_tokens": 32, "temperature": 0.7, "n": 1,
        "max_context_length": 1024,
    }))
    assert upstream == Upstream(
        "POST",
        BASE + "/v2/generate/text/async",
        {"Content-Type": "application/json", "apikey": "0000000000", "Client-Agent": AGENT},
        {**recorded, "trusted_workers": False, "slow_workers": True, "validated_backends": True},
    )
    assert upstream.warnings == ()


def test_build_request_maps_sillytavern_sampler_names() -> None:
    # the body SillyTavern sends to a text-completion backend (captured), sent to Rosetta
    line = (HORDE / "sillytavern_tc_koboldcpp_nonstream.jsonl").read_text().splitlines()[0]
    body = json.loads(line)["body_json"]
    translator = Horde(Backend(name="horde", type="horde", url=BASE, api_key="horde-secret",
                               options={"trusted_workers": True, "contact": "ops@example.org"}))
    upstream = translator.build_request(completion(body, max_tokens=300))
    assert upstream.headers == {
        "Content-Type": "application/json", "apikey": "horde-secret", "Client-Agent": "rosetta:0.1.0:ops@example.org",
    }
    assert upstream.json == {
        "prompt": body["prompt"],
        "params": {
            "max_length": 300,
            "max_context_length": 8192,  # truncation_length; no worker list read (no prepare)
            "temperature": 0.7,
            "top_p": 0.5,
            "top_k": 40,
            "top_a": 0,
            "typical": 1,
            "tfs": 1,
            "min_p": 0,
            "rep_pen": 1.2,
            "rep_pen_range": 0,
            "rep_pen_slope": 1,
            "smoothing_factor": 0,
            "use_default_badwordsids": False,
            "sampler_order": [6, 0, 1, 3, 4, 2, 5],
            "stop_sequence": ["\nUser:"],
        },
        "models": [MODEL],
        "trusted_workers": True,
        "slow_workers": True,
        "validated_backends": True,
    }
    # what the Horde would drop silently is named instead
    assert any("dry_multiplier" in w and "mirostat" in w for w in upstream.warnings)


def test_build_request_sends_what_sillytavern_sends_to_the_horde() -> None:
    # SillyTavern 1.12.6's own Horde request (captured); the same settings as an OpenAI-style
    # body with SillyTavern's sampler names give the same native request
    line = (HORDE / "sillytavern_horde_generate.jsonl").read_text().splitlines()[0]
    tavern = json.loads(line)
    sent = tavern["body_json"]
    params = sent["params"]
    body = {
        "model": "horde-capture", "prompt": sent["prompt"], "max_tokens": params["max_length"],
        "max_context_length": params["max_context_length"], "rep_pen": params["rep_pen"],
        "temperature": params["temperature"], "top_p": params["top_p"], "top_k": params["top_k"],
        "singleline": params["singleline"], "stop": params["stop_sequence"], "n": params["n"],
    }
    t = Horde(Backend(name="horde", type="horde", url="https://aihorde.net/api", api_key="horde-secret"))
    up = t.build_request(completion(body, upstream_model="koboldcpp/capture-model"))
    assert (up.method, up.url) == ("POST", "https://" + tavern["headers"]["Host"] + tavern["path"])
    assert up.json == {**sent, "slow_workers": True, "validated_backends": True}
    assert up.headers["apikey"] == tavern["headers"]["apikey"]
    assert up.warnings == ()


def test_models_from_config_list_or_any() -> None:
    t = horde()
    assert t.build_request(completion(upstream_model="any")).json["models"] == []
    assert t.build_request(completion(upstream_model="")).json["models"] == []
    listed = completion(options={"models": ["a/one", "b/two"]})
    assert t.build_request(listed).json["models"] == ["a/one", "b/two"]


def test_worker_options_reach_the_submit_body() -> None:
    t = horde(workers=["w1", "w2"], worker_blacklist=True, slow_workers=False, validated_backends=False,
              extra_slow_workers=True, allow_downgrade=True, proxied_account="alice")
    body = t.build_request(completion()).json
    assert {k: v for k, v in body.items() if k not in ("prompt", "params", "models")} == {
        "trusted_workers": False, "slow_workers": False, "validated_backends": False, "workers": ["w1", "w2"],
        "worker_blacklist": True, "extra_slow_workers": True, "allow_downgrade": True, "proxied_account": "alice",
    }


def test_url_and_client_agent_options() -> None:
    t = Horde(Backend(name="h", type="horde", url="https://aihorde.net/api/v2/",
                      options={"client_version": "2.3", "contact": "me#1"}))
    up = t.build_request(completion())
    assert up.url == "https://aihorde.net/api/v2/generate/text/async"
    assert up.headers["Client-Agent"] == "rosetta:2.3:me#1"
    t = horde(client_agent="custom:1:x")
    assert t.build_request(completion()).headers["Client-Agent"] == "custom:1:x"
    assert Horde(Backend(name="h", type="horde", url="")).build_request(completion()).url == (
        "https://aihorde.net/api/v2/generate/text/async"
    )


def test_out_of_range_values_are_clamped_with_a_warning() -> None:
    up = horde().build_request(completion({"model": "m", "prompt": "x", "max_tokens": 4, "temperature": 9, "n": 50}))
    assert up.json["params"] == {"max_length": 16, "temperature": 5, "n": 20}
    assert len(up.warnings) == 3


def test_meaningful_unsupported_fields_are_400s_naming_them() -> None:
    with pytest.raises(Unsupported) as caught:
        horde().build_request(completion({"model": "m", "prompt": "x", "logprobs": 3}))
    assert caught.value.param == "logprobs"
    with pytest.raises(Unsupported) as caught:
        horde().build_request(completion({"model": "m", "prompt": ["a", "b"]}, prompt=None))
    assert caught.value.param == "prompt"
    chat = completion(operation="chat", prompt=None, body={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(InvalidRequest):
        horde().build_request(chat)


def chat(**fields: Any) -> Request:
    body = {"model": "smol", "messages": list(CHAT), "max_tokens": 32, "stop": ["\nUser:"]}
    return completion(body, operation="chat", prompt=None, messages=CHAT, **fields)


async def test_chat_is_rendered_with_the_instruct_template_and_its_stops() -> None:
    fake = FakeHorde(workers="42_workers_text")
    t = horde(template="chatml")
    up = t.build_request(await t.prepare(fake, chat()))
    assert up.json["prompt"] == CHATML
    assert up.json["params"]["stop_sequence"] == ["\nUser:", "<|im_end|>", "<|im_start|>"]
    assert up.warnings == ()
    # the model's own template setting wins over the backend's
    up = t.build_request(await t.prepare(fake, chat(options={"template": "alpaca"})))
    assert up.json["prompt"].startswith("Be brief.")


async def test_chat_without_a_template_uses_the_fallback_and_says_so() -> None:
    fake = FakeHorde(workers="42_workers_text")
    t = horde()
    up = t.build_request(await t.prepare(fake, chat()))
    assert up.json["prompt"] == CHATML
    assert any("no chat template" in w and "chatml" in w for w in up.warnings)


def test_the_request_body_is_not_mutated() -> None:
    body = {"model": "m", "prompt": "x", "max_tokens": 4000, "stop": ["\n"], "sampler_order": [6, 0, 1, 3, 4, 2, 5]}
    frozen = json.dumps(body)
    horde().build_request(completion(body))
    assert json.dumps(body) == frozen


# --- clamping to the workers -----------------------------------------------------------------


async def test_prepare_reads_the_workers_and_clamps_to_them() -> None:
    # capture 42: four online workers for SmolLM2, each max_length 512, max_context_length 4096
    fake = FakeHorde(workers="42_workers_text")
    t = horde()
    req = await t.prepare(fake, completion({"model": "m", "prompt": PROMPT, "max_tokens": 2000, "max_context_length": 9000}))
    up = t.build_request(req)
    assert up.json["params"]["max_length"] == 512
    assert up.json["params"]["max_context_length"] == 4096
    assert any("max_tokens=2000" in w for w in up.warnings)
    assert any("max_context_length=9000" in w for w in up.warnings)
    assert any("4 online" in w and MODEL in w for w in up.warnings)
    workers_call = fake.requests("workers")[0][1]
    assert workers_call.headers == {"Client-Agent": AGENT}  # no API key where none is needed
    # without a client context, the most the workers offer is asked for, silently
    up = t.build_request(await t.prepare(fake, completion()))
    assert up.json["params"] == {"max_length": 32, "max_context_length": 4096, "temperature": 0.7}
    assert up.warnings == ()
    assert len(fake.requests("workers")) == 1  # cached


async def test_the_worker_cache_expires_with_its_ttl() -> None:
    fake = FakeHorde(workers="42_workers_text")
    t = horde(workers_ttl=60)
    await t.prepare(fake, completion())
    fake.t += 59
    await t.prepare(fake, completion())
    assert len(fake.requests("workers")) == 1
    fake.t += 2
    await t.prepare(fake, completion())
    assert len(fake.requests("workers")) == 2


async def test_a_failed_worker_lookup_is_a_warning_and_retried_soon() -> None:
    fake = FakeHorde(workers="67_err_wrong_path")
    t = horde()
    up = t.build_request(await t.prepare(fake, completion({"model": "m", "prompt": "x", "max_tokens": 2000})))
    assert up.json["params"]["max_length"] == 2000
    assert any("worker list could not be read" in w for w in up.warnings)
    fake.t += 31
    await t.prepare(fake, completion())
    assert len(fake.requests("workers")) == 2


async def test_a_worker_lookup_that_hangs_does_not_hold_the_request() -> None:
    fake = FakeHorde(workers="42_workers_text")
    never = asyncio.Event()
    real_send = fake.send

    async def hanging(upstream: Upstream) -> FakeResponse:
        if fake.route_of(upstream) == "workers":
            await never.wait()
        return await real_send(upstream)

    fake.send = hanging  # type: ignore[method-assign]
    t = horde(lists_timeout=0.01)
    up = t.build_request(await t.prepare(fake, completion()))
    assert any("no answer within 0.01 s" in w for w in up.warnings)


def test_worker_limits_best_or_every_worker_and_filters() -> None:
    # the real worker list, with one worker given smaller limits to tell the policies apart
    workers: list[HordeWorker] = capture("42_workers_text")["body"]
    workers[0] = {**workers[0], "max_length": 128, "max_context_length": 1024, "trusted": False}
    smol = WorkerFilter((MODEL,))
    assert worker_limits(workers, smol, "best_worker") == WorkerLimits(512, 4096, 4)
    assert worker_limits(workers, smol, "every_worker") == WorkerLimits(128, 1024, 4)
    only_first = WorkerFilter((MODEL,), worker_ids=(workers[0]["id"],))
    assert worker_limits(workers, only_first, "best_worker") == WorkerLimits(128, 1024, 1)
    trusted = WorkerFilter((MODEL,), trusted_only=True)
    assert worker_limits(workers, trusted, "every_worker") == WorkerLimits(512, 4096, 3)
    blocked = WorkerFilter((MODEL,), worker_ids=(workers[0]["id"],), blacklist=True)
    assert worker_limits(workers, blocked, "every_worker") == WorkerLimits(512, 4096, 3)
    assert worker_limits(workers, WorkerFilter(("other/model",)), "best_worker") is None
    assert worker_limits(workers, WorkerFilter(), "every_worker") == WorkerLimits(128, 1024, 4)
