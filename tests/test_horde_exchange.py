"""The ``horde`` translator, the exchange: submit, poll, answer; failures; cancel when the client goes
away.

The fake AI Horde (horde_helpers) is built on the real server's recorded answers
(``transcripts/horde/``, copied from a real AI Horde run locally with a scripted worker), on a
fake clock: the polling cadence, the timeout and the Retry-After handling are asserted without waiting.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncGenerator, cast

import pytest
from horde_helpers import AGENT, BASE, ECHO, MODEL, PROMPT, FakeHorde, FakeResponse, completion, horde

from translators.base import Upstream
from translators.errors import UpstreamError
from translators.events import Cost, Event, Finish, Meta, Progress, TextDelta
from translators.horde import Horde
from translators.request import Request

# --- a fake AI Horde on a fake clock ---------------------------------------------------------


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
