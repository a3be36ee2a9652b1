"""The ``horde`` translator against a fake AI Horde built on the real server's recorded answers
(``transcripts/horde/``, copied from a real AI Horde run locally with a scripted worker).

The fake transport owns a fake clock: ``sleep`` advances it instantly and records the delay, so
the polling cadence, the timeout and the Retry-After handling are asserted without waiting.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, AsyncGenerator, AsyncIterator, Mapping, cast

import pytest
from pydantic import ValidationError

from translators.base import Backend, Upstream
from translators.errors import InvalidRequest, Unsupported, UpstreamError
from translators.events import Cost, Event, Finish, Meta, Progress, TextDelta
from translators.horde import Horde
from translators.horde_lists import HordeWorker, WorkerFilter, WorkerLimits, worker_limits
from translators.request import Request

HORDE = Path(__file__).parent / "transcripts" / "horde"
BASE = "http://horde.test/api"
MODEL = "koboldcpp/SmolLM2-135M"
AGENT = "rosetta:0.1.0:unknown"
PROMPT = "The quick brown fox jumps over the lazy dog. Then the fox"
ECHO = "[echo:koboldcpp/SmolLM2-135M] The quick brown fox jumps over the lazy dog. Then the fox"


def capture(name: str) -> dict[str, Any]:
    """One recorded exchange with the real AI Horde (request summary, status, headers, body)."""
    return json.loads((HORDE / f"{name}.json").read_text())


# --- a fake AI Horde on a fake clock ---------------------------------------------------------


class FakeResponse:
    """A recorded answer, as the transport exposes it."""

    def __init__(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers: Mapping[str, str] = dict(headers)
        self.closed = False

    async def read(self) -> bytes:
        return self.body

    def frames(self, framing: str) -> AsyncIterator[Any]:
        raise AssertionError("the Horde has no streams")

    def close(self) -> None:
        self.closed = True


def answer(name: str) -> FakeResponse:
    """The recorded answer of capture ``name``, byte for byte (body) with its headers."""
    data = capture(name)
    return FakeResponse(data["status"], data["body_raw"].encode(), data["headers"])


class FakeHorde:
    """A Transport whose upstream is a scripted AI Horde: answers are queued per route
    (``submit``, ``status``, ``cancel``, ``workers``, ``models``), used in order, the last one
    repeated. Every request is recorded with the fake time it was sent at."""

    def __init__(self, **routes: list[str] | str) -> None:
        self.routes = {k: [v] if isinstance(v, str) else list(v) for k, v in routes.items()}
        self.t = 1000.0
        self.sleeps: list[float] = []
        self.sent: list[tuple[float, Upstream]] = []
        self.responses: list[FakeResponse] = []
        self.block_sleep: asyncio.Event | None = None
        self.fail_status_with: list[UpstreamError] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        if self.block_sleep is not None:
            await self.block_sleep.wait()
        await asyncio.sleep(0)

    @staticmethod
    def route_of(upstream: Upstream) -> str:
        path = upstream.url.removeprefix(BASE)
        if upstream.method == "POST" and path == "/v2/generate/text/async":
            return "submit"
        if path.startswith("/v2/generate/text/status/"):
            return {"GET": "status", "DELETE": "cancel"}[upstream.method]
        if path == "/v2/workers?type=text":
            return "workers"
        if path == "/v2/status/models?type=text":
            return "models"
        raise AssertionError(f"unexpected request {upstream.method} {upstream.url}")

    async def send(self, upstream: Upstream) -> FakeResponse:
        self.sent.append((self.t, upstream))
        route = self.route_of(upstream)
        if route == "status" and self.fail_status_with:
            raise self.fail_status_with.pop(0)
        queue = self.routes.get(route) or ["67_err_wrong_path"]
        name = queue.pop(0) if len(queue) > 1 else queue[0]
        response = answer(name)
        self.responses.append(response)
        return response

    def requests(self, route: str) -> list[tuple[float, Upstream]]:
        return [(t, u) for t, u in self.sent if self.route_of(u) == route]


def horde(**options: Any) -> Horde:
    return Horde(Backend(name="horde", type="horde", url=BASE, options=options))


def completion(body: Mapping[str, Any] | None = None, **fields: Any) -> Request:
    """A validated /v1/completions request as the pipeline hands it over."""
    body = dict(body or {"model": "smol", "prompt": PROMPT, "max_tokens": 32, "temperature": 0.7})
    stop = body.get("stop")
    values: dict[str, Any] = {
        "id": "chatcmpl-test",
        "operation": "completion",
        "model": "smol",
        "upstream_model": MODEL,
        "body": body,
        "prompt": body.get("prompt"),
        "stop": (stop,) if isinstance(stop, str) else tuple(stop or ()),
        "max_tokens": body.get("max_tokens"),
        "n": body.get("n") or 1,
    }
    values.update(fields)
    return Request(**values)


async def run(translator: Horde, transport: FakeHorde, req: Request) -> list[Event]:
    req = await translator.prepare(transport, req)
    upstream = translator.build_request(req)
    return [event async for event in translator.exchange(transport, upstream, req)]


async def fails(translator: Horde, transport: FakeHorde, req: Request) -> tuple[UpstreamError, list[Event]]:
    events: list[Event] = []
    req = await translator.prepare(transport, req)
    upstream = translator.build_request(req)
    with pytest.raises(UpstreamError) as caught:
        async for event in translator.exchange(transport, upstream, req):
            events.append(event)
    return caught.value, events


def queued_progress(position: int = 1, kudos: float = 1.0, **detail: Any) -> Progress:
    base = {"kudos": kudos, "waiting": 1, "processing": 0, "finished": 0, "restarted": 0}
    return Progress(queue_position=position, wait_seconds=0.0, detail={**base, **detail})


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


CHAT = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"})
CHATML = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


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


# --- the exchange: submit, poll, answer ------------------------------------------------------


async def test_queued_processing_done_with_progress_and_polite_polling() -> None:
    fake = FakeHorde(
        workers="42_workers_text",
        submit="20_submit_async_user",
        status=["21_status_queued_before_pop", "22_status_1_waiting", "22_status_2_processing", "22_status_3_done"],
    )
    events = await run(horde(), fake, completion())
    processing = Progress(0, 0.0, {"kudos": 1.0, "waiting": 0, "processing": 1, "finished": 0, "restarted": 0})
    assert events == [
        queued_progress(),
        queued_progress(),
        processing,
        Meta(
            upstream_id="4ccd956e-bfc1-40e9-9d9e-dfb82dd06ea1",
            model=MODEL,
            headers={
                "x-rosetta-horde-worker": "lab-capture-worker",
                "x-rosetta-horde-model": MODEL,
                "x-rosetta-horde-kudos": "2",
            },
        ),
        TextDelta(ECHO),
        Finish("stop"),
        Cost(2.0, "kudos"),
    ]
    # polls start 2 s apart and back off by 1.5 up to 5 s
    assert fake.sleeps == [2.0, 3.0, 4.5, 5.0]
    polls = [t for t, _ in fake.requests("status")]
    assert all(b - a >= 1.0 for a, b in zip(polls, polls[1:], strict=False))
    assert all(u.url == BASE + "/v2/generate/text/status/4ccd956e-bfc1-40e9-9d9e-dfb82dd06ea1"
               for _, u in fake.requests("status"))
    assert all(u.headers == {"apikey": "0000000000", "Client-Agent": AGENT} for _, u in fake.requests("status"))
    assert fake.requests("cancel") == []  # done: nothing to cancel
    assert all(r.closed for r in fake.responses)


async def test_a_long_queue_never_polls_faster_than_the_horde_allows() -> None:
    # The Horde allows 60 polls a minute per id; we start 2 s apart and settle at one per 5 s,
    # so no minute sees more than 13 (2, 5, 9.5, 14.5, ... 59.5)
    fake = FakeHorde(workers="42_workers_text", submit="10_submit_async_anon_no_worker",
                     status=["11_status_queued"] * 100 + ["22_status_3_done"])
    events = await run(horde(), fake, completion())
    assert isinstance(events[-1], Cost)
    polls = [t for t, _ in fake.requests("status")]
    for i, start in enumerate(polls):
        assert sum(1 for t in polls[i:] if t < start + 60) <= 13
    assert max(fake.sleeps) == 5.0


async def test_n2_gives_two_choices() -> None:
    fake = FakeHorde(workers="42_workers_text", submit="30_submit_async_anon_n2", status="31_status_done_n2")
    events = await run(horde(), fake, completion({"model": "m", "prompt": PROMPT, "max_tokens": 32, "n": 2}))
    assert events[1:] == [
        TextDelta(ECHO, 0), Finish("stop", 0), TextDelta(ECHO, 1), Finish("stop", 1), Cost(3.0, "kudos"),
    ]
    assert events[0].headers["x-rosetta-horde-worker"] == "lab-capture-worker"  # type: ignore[union-attr]
    assert fake.requests("submit")[0][1].json["params"]["n"] == 2


async def test_stop_strings_are_cut_and_finish_is_stop() -> None:
    fake = FakeHorde(workers="42_workers_text", submit="20_submit_async_user", status="22_status_3_done")
    events = await run(horde(), fake, completion({"model": "m", "prompt": PROMPT, "max_tokens": 16, "stop": [" lazy"]}))
    assert events[1:3] == [TextDelta("[echo:koboldcpp/SmolLM2-135M] The quick brown fox jumps over the"), Finish("stop")]
    assert fake.requests("submit")[0][1].json["params"]["stop_sequence"] == [" lazy"]


async def test_length_is_judged_from_the_size_of_the_text() -> None:
    # 87 bytes is about 22 tokens: "length" for max_length 16 (clamped minimum), "stop" for 32
    fake = FakeHorde(workers="42_workers_text", submit="20_submit_async_user", status="22_status_3_done")
    events = await run(horde(), fake, completion({"model": "m", "prompt": PROMPT, "max_tokens": 16}))
    assert Finish("length") in events
    events = await run(horde(), fake, completion({"model": "m", "prompt": PROMPT, "max_tokens": 32}))
    assert Finish("stop") in events


async def test_censored_generation_finishes_with_content_filter() -> None:
    fake = FakeHorde(workers="42_workers_text", submit="120_submit_for_censored", status="121_status_censored")
    events = await run(horde(), fake, completion())
    assert Finish("content_filter") in events


async def test_a_worker_fault_that_the_horde_retries_still_answers() -> None:
    fake = FakeHorde(workers="42_workers_text", submit="110_submit_for_fault",
                     status=["111_status_after_worker_faulted", "112_status_after_retry"])
    events = await run(horde(), fake, completion())
    assert events[0] == Progress(1, 23.0, {"kudos": 1.0, "waiting": 1, "processing": 0, "finished": 0, "restarted": 1})
    assert isinstance(events[1], Meta) and events[1].headers["x-rosetta-horde-worker"] == "lab-capture-worker"


# --- the exchange: failures ------------------------------------------------------------------


async def test_faulted_after_three_worker_faults_is_a_503() -> None:
    fake = FakeHorde(workers="42_workers_text", submit="130_submit_for_triple_fault",
                     status=["131_status_after_fault_1", "131_status_after_fault_2", "131_status_after_fault_3",
                             "132_status_faulted"])
    error, events = await fails(horde(), fake, completion())
    assert error.status == 503 and error.kind == "5xx"
    assert "8e2e0627-17ea-4536-9ae5-d125a9091b3f faulted" in error.message and "3 restarts" in error.message
    assert [e.detail["restarted"] for e in events if isinstance(e, Progress)] == [1, 2, 3]
    assert fake.requests("cancel") == []  # done and faulted: nothing to cancel


async def test_impossible_request_is_a_503_and_the_job_is_cancelled() -> None:
    fake = FakeHorde(workers="42_workers_text", submit="62_submit_unknown_model", status="63_status_unknown_model",
                     cancel="64_cancel_unknown_model")
    error, events = await fails(horde(), fake, completion(upstream_model="no-such/model-7B"))
    assert error.status == 503
    assert "no AI Horde worker online can serve" in error.message and "no-such/model-7B" in error.message
    assert events == []  # before any event: the proxy can still answer with a plain 503
    [(_, cancel)] = fake.requests("cancel")
    assert cancel.url.endswith("/status/4cb78d1c-adab-4b35-9c1d-f81e4b7d8dd0")


async def test_expired_job_404_is_a_503_naming_why() -> None:
    fake = FakeHorde(workers="42_workers_text", submit="10_submit_async_anon_no_worker",
                     status=["11_status_queued", "50_err_status_unknown_id"])
    error, events = await fails(horde(), fake, completion())
    assert error.status == 503 and "expired" in error.message
    assert events == [queued_progress()]
    assert fake.requests("cancel") == []


async def test_timeout_cancels_the_job_and_is_a_504() -> None:
    fake = FakeHorde(workers="42_workers_text", submit="10_submit_async_anon_no_worker", status="11_status_queued",
                     cancel="12_cancel_queued")
    error, events = await fails(horde(job_timeout=20), fake, completion())
    assert (error.status, error.kind) == (504, "timeout")
    assert fake.sleeps == [2.0, 3.0, 4.5, 5.0, 5.0, 0.5]  # the last wait stops at the deadline
    assert len(events) == 6 and all(isinstance(e, Progress) for e in events)
    [(at, cancel)] = fake.requests("cancel")
    assert cancel.method == "DELETE" and cancel.url.endswith("/status/99f80942-db0b-47da-a814-ae5ab6746f57")
    assert at == 1020.0


async def test_status_rate_limit_waits_as_told_then_goes_on() -> None:
    fake = FakeHorde(workers="42_workers_text", submit="80_submit_for_ratelimit",
                     status=["81_err_status_rate_limited", "22_status_3_done"])
    events = await run(horde(), fake, completion())
    assert fake.sleeps == [2.0, 59.0]  # Retry-After: 59
    assert isinstance(events[-1], Cost)


async def test_transient_poll_failures_are_tolerated_up_to_the_limit() -> None:
    fake = FakeHorde(workers="42_workers_text", submit="20_submit_async_user", status="22_status_3_done",
                     cancel="12_cancel_queued")
    fake.fail_status_with = [UpstreamError("timed out", kind="timeout", status=504)] * 2
    assert isinstance((await run(horde(poll_retries=2), fake, completion()))[-1], Cost)
    fake.fail_status_with = [UpstreamError("timed out", kind="timeout", status=504)] * 3
    error, _ = await fails(horde(poll_retries=2), fake, completion())
    assert error.kind == "timeout"
    assert len(fake.requests("cancel")) == 1


@pytest.mark.parametrize(
    ("name", "status", "param", "words"),
    [
        ("83_err_async_rate_limited", 429, None, "2 per 1 second"),
        ("59_err_invalid_apikey", 401, None, "API key"),
        ("60_err_no_apikey", 502, None, "gateway's request"),
        ("53_err_missing_prompt", 400, "prompt", "Missing required parameter"),
        ("55_err_max_length_over_context", 400, "max_tokens", "more tokens than your context"),
        ("56_err_max_length_too_small", 400, "max_tokens", "less than the minimum of 16"),
        ("57_err_n_too_big", 400, "n", "greater than the maximum of 20"),
        ("58_err_models_not_list", 400, "model", "not of type"),
        ("61_err_empty_prompt", 400, "prompt", "empty prompt"),
        ("65_err_stop_sequence_too_long", 400, "stop", "2000 chars"),
        ("67_err_wrong_path", 502, None, "check the backend url"),
    ],
)
async def test_submit_errors_map_to_openai_errors(name: str, status: int, param: str | None, words: str) -> None:
    fake = FakeHorde(workers="42_workers_text", submit=name)
    error, events = await fails(horde(), fake, completion())
    assert (error.status, error.param) == (status, param)
    assert words in error.message
    assert events == [] and fake.requests("status") == [] and fake.requests("cancel") == []
    if status == 429:
        assert error.retry_after == 1.0 and error.type == "rate_limit_error" and error.retryable
    if status == 401:
        assert error.type == "authentication_error"


# --- cancel when the client goes away --------------------------------------------------------


async def test_aclose_while_queued_sends_delete_at_once() -> None:
    fake = FakeHorde(workers="42_workers_text", submit="10_submit_async_anon_no_worker", status="11_status_queued",
                     cancel="12_cancel_queued")
    t = horde()
    req = await t.prepare(fake, completion())
    stream = cast(AsyncGenerator[Event, None], t.exchange(fake, t.build_request(req), req))
    assert await stream.__anext__() == queued_progress()
    assert await stream.__anext__() == queued_progress()
    polls_before = len(fake.requests("status"))
    at = fake.t
    await stream.aclose()
    [(sent_at, cancel)] = fake.requests("cancel")
    assert sent_at == at  # no wait on the clock before the DELETE
    assert cancel.method == "DELETE"
    assert cancel.url == BASE + "/v2/generate/text/status/99f80942-db0b-47da-a814-ae5ab6746f57"
    assert cancel.headers == {"apikey": "0000000000", "Client-Agent": AGENT}
    assert len(fake.requests("status")) == polls_before  # no more polling
    assert all(r.closed for r in fake.responses)


async def test_cancelling_the_task_while_it_sleeps_sends_delete() -> None:
    # a job a worker already took (captures 94-98): cancel still answers with the status before it
    fake = FakeHorde(workers="42_workers_text", submit="94_submit_for_cancel_processing",
                     status="96_status_processing", cancel="97_cancel_processing")
    t = horde()
    req = await t.prepare(fake, completion())
    upstream = t.build_request(req)
    seen: list[Event] = []

    async def consume() -> None:
        async for event in t.exchange(fake, upstream, req):
            seen.append(event)
            if len(seen) == 2:
                fake.block_sleep = asyncio.Event()  # the next poll wait never ends

    task = asyncio.create_task(consume())
    while fake.block_sleep is None or len(fake.sleeps) < 3:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [(_, cancel)] = fake.requests("cancel")
    assert cancel.url.endswith("/status/142bd754-af3f-4dab-9b19-1f5833c1d6ec")


async def test_a_client_gone_during_the_submit_still_gets_the_job_cancelled() -> None:
    fake = FakeHorde(workers="42_workers_text", submit="10_submit_async_anon_no_worker", cancel="12_cancel_queued")
    gate = asyncio.Event()
    real_send = fake.send

    async def slow_submit(upstream: Upstream) -> FakeResponse:
        if fake.route_of(upstream) == "submit":
            await gate.wait()
        return await real_send(upstream)

    fake.send = slow_submit  # type: ignore[method-assign]
    t = horde()
    req = await t.prepare(fake, completion())
    upstream = t.build_request(req)

    async def consume() -> None:
        async for _ in t.exchange(fake, upstream, req):
            pass

    task = asyncio.create_task(consume())
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert fake.requests("cancel") == []  # the id is not known yet
    gate.set()  # the Horde answers the submit
    with pytest.raises(asyncio.CancelledError):
        await task
    [(_, cancel)] = fake.requests("cancel")
    assert cancel.url.endswith("/status/99f80942-db0b-47da-a814-ae5ab6746f57")
    assert fake.requests("status") == []


async def test_no_delete_after_the_answer_arrived() -> None:
    fake = FakeHorde(workers="42_workers_text", submit="20_submit_async_user", status="22_status_3_done")
    t = horde()
    req = await t.prepare(fake, completion())
    stream = cast(AsyncGenerator[Event, None], t.exchange(fake, t.build_request(req), req))
    assert isinstance(await stream.__anext__(), Meta)
    await stream.aclose()
    assert fake.requests("cancel") == []


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
