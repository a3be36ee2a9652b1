"""Load generator: one workload against any base URL, with an aiohttp client.

Modes:
- ``closed``: ``--concurrency`` workers send requests back to back for ``--warmup`` +
  ``--duration`` seconds; only requests that finish inside the measured window count.
- ``streams``: ``--streams`` streaming requests started evenly over ``--ramp`` seconds (slow
  streams: give the model a ``@d<ms>`` delay when the target is the fake upstream or Rosetta in
  front of it); the window is from the start until the last one ends.
- ``idle``: ``--streams`` streams opened (at most ``--open-concurrency`` waiting for their
  200 status at a time), then all held open for ``--hold`` seconds, then dropped by the client.
  The upstream's ``/bench/stats`` (``--stats-url``) says how many it saw open, and whether the
  gateway released them after the client went away.

The client speaks ``--protocol`` (``openai``: chat completions, the only one Rosetta's clients
speak; ``anthropic`` and ``kobold``: the native APIs, for the direct baselines). Request bodies
are those of the official openai SDK (captures sdk/sdk_py_chat_*.jsonl), of the anthropic SDK
and of SillyTavern's KoboldCpp connector, reduced to the common fields.

Stream bytes are split into SSE events on blank lines; comments (``: keep-alive``) are not
counted. Per stream it measures the time to the first token (the first event with non-empty
generated text), every gap between two reads that brought events after the first token, and
checks the end marker (``[DONE]``, ``message_stop``, Kobold's final ``finish_reason``) and,
with ``--expect-events``, the event count.

Progress marks go to stdout as ``MARK start <t>`` / ``MARK end <t>`` (so the runner can read
the gateway's CPU counters exactly over the measured window) and the result as one
``RESULT <json>`` line. Everything stops by ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys
import time
from typing import Any

import aiohttp
import orjson
from loadclient import Client, Outcome

MAX_ERROR_SAMPLES = 5


def mark(name: str) -> None:
    print(f"MARK {name} {time.time():.6f}", flush=True)


async def closed_loop(client: Client, args: argparse.Namespace) -> tuple[list[Outcome], float, float]:
    """``concurrency`` workers back to back; returns the outcomes that finished inside the
    measured window, and the window (the marks are printed at its exact edges)."""
    start = time.perf_counter()
    window_start = start + args.warmup
    window_end = window_start + args.duration
    outcomes: list[Outcome] = []
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set() and time.perf_counter() < window_end:
            out = await client.one()
            if out.started >= window_start and out.ended <= window_end:
                outcomes.append(out)
                if args.max_requests and len(outcomes) >= args.max_requests:
                    stop.set()

    async def marker() -> float:
        await asyncio.sleep(max(window_start - time.perf_counter(), 0))
        mark("start")
        try:
            await asyncio.wait_for(stop.wait(), max(window_end - time.perf_counter(), 0))
        except asyncio.TimeoutError:
            pass
        mark("end")
        return time.perf_counter()

    mark_task = asyncio.create_task(marker())
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    stop.set()
    real_end = min(await mark_task, window_end)
    return outcomes, window_start, real_end


async def streams_at_once(client: Client, args: argparse.Namespace) -> tuple[list[Outcome], float, float]:
    """``streams`` requests started evenly over ``--ramp`` seconds (0: all at once); the
    window ends with the last."""
    mark("start")
    start = time.perf_counter()

    async def one(i: int) -> Outcome:
        if args.ramp > 0:
            await asyncio.sleep(max(start + args.ramp * i / args.streams - time.perf_counter(), 0))
        return await client.one()

    outcomes = await asyncio.gather(*(one(i) for i in range(args.streams)))
    end = time.perf_counter()
    mark("end")
    return list(outcomes), start, end


def peak_concurrency(outcomes: list[Outcome]) -> int:
    """The most requests in flight at one time."""
    edges = sorted([(o.started, 1) for o in outcomes] + [(o.ended, -1) for o in outcomes])
    peak = now = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


async def fetch_stats(session: aiohttp.ClientSession, url: str | None) -> dict[str, Any] | None:
    if not url:
        return None
    try:
        async with session.get(url) as response:
            return orjson.loads(await response.read())  # type: ignore[no-any-return]
    except (aiohttp.ClientError, OSError, orjson.JSONDecodeError):
        return None


async def idle_streams(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    """Open ``streams`` streams, hold them ``hold`` seconds, drop them; report what held."""
    pending = asyncio.Semaphore(args.open_concurrency)
    opened = 0
    all_open = asyncio.Event()
    stats_session = aiohttp.ClientSession()
    before = await fetch_stats(stats_session, args.stats_url)

    async def one() -> Outcome:
        nonlocal opened
        await pending.acquire()
        released = False

        def first() -> None:
            nonlocal opened, released
            opened += 1
            released = True
            pending.release()
            if opened == args.streams:
                all_open.set()

        try:
            return await client.one(first)
        finally:
            if not released:
                pending.release()

    t0 = time.perf_counter()
    tasks = [asyncio.create_task(one()) for _ in range(args.streams)]
    done_early: list[Outcome] = []
    try:
        await asyncio.wait_for(all_open.wait(), args.open_timeout)
    except asyncio.TimeoutError:
        pass
    open_time = time.perf_counter() - t0
    mark("start")
    held_from = time.perf_counter()
    await asyncio.sleep(args.hold / 2)
    during = await fetch_stats(stats_session, args.stats_url)
    await asyncio.sleep(args.hold / 2)
    still_open = sum(1 for t in tasks if not t.done())
    held = time.perf_counter() - held_from
    mark("end")
    for task in tasks:
        if task.done() and not task.cancelled():
            done_early.append(task.result())
        else:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.close()  # the client goes away: the gateway must release its upstream streams
    released_after = None
    after = None
    settle_start = time.perf_counter()
    while time.perf_counter() - settle_start < args.settle:
        after = await fetch_stats(stats_session, args.stats_url)
        if after is None or before is None or after["streams_open"] <= before["streams_open"]:
            released_after = time.perf_counter() - settle_start
            break
        await asyncio.sleep(0.1)
    await stats_session.close()
    errors = [o.error for o in done_early if o.error and o.error != "cancelled"]
    ended_early = [o for o in done_early if o.error is None]
    return {
        "streams": args.streams,
        "opened": opened,
        "open_seconds": round(open_time, 3),
        "held_seconds": round(held, 3),
        "still_open_at_end": still_open,
        "ended_early": len(ended_early),
        "errors": len(errors),
        "error_samples": errors[:MAX_ERROR_SAMPLES],
        "upstream_open_before": before and before["streams_open"],
        "upstream_open_during": during and during["streams_open"],
        "upstream_open_after": after and after["streams_open"],
        "upstream_released_seconds": None if released_after is None else round(released_after, 3),
        "upstream_dropped_total": after and after["streams_dropped"],
    }


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between ranks."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float], scale: float = 1000.0) -> dict[str, float | None]:
    """p50/p90/p99/mean/max in milliseconds."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None, "n": 0}
    return {
        "p50": _r(percentile(values, 50), scale), "p90": _r(percentile(values, 90), scale),
        "p99": _r(percentile(values, 99), scale), "mean": _r(sum(values) / len(values), scale),
        "max": _r(max(values), scale), "n": len(values),
    }


def _r(value: float | None, scale: float) -> float | None:
    return None if value is None else round(value * scale, 3)


def report(outcomes: list[Outcome], start: float, end: float) -> dict[str, Any]:
    window = max(end - start, 1e-9)
    good = [o for o in outcomes if o.ok]
    errors = [o.error for o in outcomes if not o.ok]
    gaps = [g for o in good for g in o.gaps]
    events = sum(o.events for o in good)
    return {
        "window_seconds": round(window, 3),
        "requests": len(outcomes),
        "ok": len(good),
        "errors": len(errors),
        "error_samples": sorted(set(e or "?" for e in errors))[:MAX_ERROR_SAMPLES],
        "requests_per_second": round(len(good) / window, 2),
        "latency_ms": summary([o.ended - o.started for o in good]),
        "ttft_ms": summary([o.ttft for o in good if o.ttft is not None]),
        "max_gap_ms": summary([o.max_gap for o in good if o.max_gap is not None]),
        "gap_ms": summary(gaps),
        "events": events,
        "events_per_second": round(events / window, 1),
        "overhead_header_ms": summary([o.overhead for o in good if o.overhead is not None]),
        "peak_concurrency": peak_concurrency(outcomes),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    client = Client(args)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        if args.mode == "idle":
            result = await idle_streams(client, args)
        else:
            if args.mode == "closed":
                outcomes, start, end = await closed_loop(client, args)
            else:
                outcomes, start, end = await streams_at_once(client, args)
            result = report(outcomes, start, end)
    finally:
        await client.close()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    result["client_cpu_seconds"] = round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 3)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000 (no /v1)")
    parser.add_argument("--protocol", choices=("openai", "anthropic", "kobold"), default="openai")
    parser.add_argument("--model", default="fake")
    parser.add_argument("--mode", choices=("closed", "streams", "idle"), default="closed")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--tokens", type=int, default=16, help="max_tokens asked for (the fake generates exactly this many)")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--max-requests", type=int, default=0, help="stop a closed loop after this many (0: no limit)")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--ramp", type=float, default=0.0, help="streams mode: start the streams evenly over this many seconds")
    parser.add_argument("--open-concurrency", type=int, default=64)
    parser.add_argument("--open-timeout", type=float, default=120.0)
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=10.0, help="idle: how long to wait for the upstream streams to be released")
    parser.add_argument("--stats-url", help="the fake upstream's /bench/stats")
    parser.add_argument("--expect-events", type=int, default=0, help="streams with fewer events are errors (the fake sends one per token)")
    parser.add_argument("--keep-gaps", action="store_true", help="closed mode: keep every gap (for gap percentiles)")
    parser.add_argument("--timeout", type=float, default=600.0, help="hard limit for the whole run")
    args = parser.parse_args(argv)
    if args.mode != "closed" and not args.stream:
        parser.error("--mode streams/idle needs --stream")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def bounded() -> dict[str, Any]:
        return await asyncio.wait_for(run(args), args.timeout)

    try:
        result = asyncio.run(bounded())
    except asyncio.TimeoutError:
        result = {"fatal": f"timed out after {args.timeout} s"}
    print("RESULT " + orjson.dumps(result).decode(), flush=True)
    return 0 if "fatal" not in result else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
