"""Turns the runner's results into the printed tables, the target checks and a Markdown table
for the README. Works on the JSON the runner writes, so an old result can be re-printed:
``python bench/report.py bench/results/latest.json [--markdown]``."""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from typing import Any, Iterable

import orjson


def dig(data: Any, path: str) -> Any:
    """``data["a"]["b"]`` for path ``a.b`` (None when missing)."""
    for key in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def median_of(runs: list[dict[str, Any]], path: str) -> float | None:
    values = [v for v in (dig(r, path) for r in runs) if isinstance(v, (int, float)) and not math.isnan(v)]
    return statistics.median(values) if values else None


def spread_of(runs: list[dict[str, Any]], path: str) -> float | None:
    """(max - min) / median across repeats, in percent (None with fewer than two)."""
    values = [v for v in (dig(r, path) for r in runs) if isinstance(v, (int, float)) and not math.isnan(v)]
    if len(values) < 2 or not statistics.median(values):
        return None
    return 100 * (max(values) - min(values)) / statistics.median(values)


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: list[str], rows: Iterable[list[str]]) -> str:
    rows = list(rows)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(out)


def markdown(headers: list[str], rows: Iterable[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def traffic_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for w in results["workloads"]:
        for via in ("direct", "rosetta"):
            runs = w.get(via) or []
            if not runs:
                continue
            if w["mode"] == "idle":
                rows.append([
                    w["name"], via, f"{fmt(median_of(runs, 'load.still_open_at_end'))}/{w['streams']} held open",
                    "-", "-", "-", "", "-", "-", "-", "-", "-", str(int(sum(dig(r, "load.errors") or 0 for r in runs))),
                ])
                continue
            added = w.get("added") or {}
            rows.append([
                w["name"], via,
                fmt(median_of(runs, "load.requests_per_second")),
                fmt(median_of(runs, "load.latency_ms.p50"), 2),
                fmt(median_of(runs, "load.latency_ms.p90"), 2),
                fmt(median_of(runs, "load.latency_ms.p99"), 2),
                fmt(added.get("latency_p50_ms"), 2) if via == "rosetta" else "",
                fmt(median_of(runs, "load.ttft_ms.p50"), 2) if w["stream"] else "-",
                fmt(median_of(runs, "load.events_per_second"), 0) if w["stream"] else "-",
                (fmt(median_of(runs, "load.gap_ms.p50"), 1) + "/" + fmt(median_of(runs, "load.gap_ms.p99"), 1)) if w["mode"] == "streams" else "-",
                (fmt(median_of(runs, "load.max_gap_ms.p50"), 1) + "/" + fmt(median_of(runs, "load.max_gap_ms.p99"), 1)) if w["stream"] else "-",
                fmt(spread_of(runs, "load.requests_per_second" if not w["stream"] else "load.events_per_second"), 0),
                str(int(sum(dig(r, "load.errors") or 0 for r in runs))),
            ])
    return rows


TRAFFIC_HEADERS = ["workload", "via", "req/s", "p50 ms", "p90 ms", "p99 ms", "+p50 ms", "TTFT p50", "chunks/s",
                   "gap p50/p99", "max gap p50/p99", "spread %", "errors"]


def cost_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for w in results["workloads"]:
        runs = w.get("rosetta") or []
        if not runs:
            continue
        rows.append([
            w["name"],
            fmt(median_of(runs, "gateway.cpu_percent"), 0),
            fmt(median_of(runs, "gateway.cpu_ms_per_request"), 3),
            fmt(median_of(runs, "gateway.cpu_us_per_chunk"), 1) if w["stream"] else "-",
            fmt(median_of(runs, "gateway.requests_per_cpu_second"), 0),
            fmt(median_of(runs, "gateway.chunks_per_cpu_second"), 0) if w["stream"] else "-",
            fmt(median_of(runs, "load.overhead_header_ms.p50"), 3),
            fmt(median_of(runs, "gateway.rss_max_mib"), 1),
            fmt(median_of(runs, "noise.other_on_gateway_core_percent"), 0),
            fmt(median_of(runs, "noise.irq_on_gateway_core_percent"), 0),
            fmt(median_of(runs, "noise.steal_on_gateway_core_percent"), 0),
            fmt(median_of(runs, "noise.load_cores_busy_percent"), 0),
        ])
    return rows


COST_HEADERS = ["workload", "gw CPU %", "CPU s/1k req", "CPU µs/chunk", "req/s per core", "chunks/s per core",
                "x-rosetta-overhead-ms p50", "RSS max MiB", "other tasks on gw core %", "irq %", "steal %", "load cores busy %"]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets with the measured value and a verdict."""
    by_name = {w["name"]: w for w in results["workloads"]}
    out: list[dict[str, Any]] = []

    def add(name: str, target: str, value: Any, ok: bool | None, note: str = "") -> None:
        out.append({"target": name, "goal": target, "value": value, "ok": ok, "note": note})

    def rosetta(name: str, path: str) -> Any:
        w = by_name.get(name)
        return median_of(w["rosetta"], path) if w and w.get("rosetta") else None

    added = dig(by_name.get("ns_c1"), "added.latency_p50_ms")
    add("added latency, c=1 non-stream, p50", "< 1 ms", added, None if added is None else added < 1.0)
    cpu = rosetta("ns_c64", "gateway.cpu_ms_per_request")
    add("gateway CPU per non-stream request (c=64)", "< 1 ms", cpu, None if cpu is None else cpu < 1.0)
    rps = rosetta("ns_c64", "load.requests_per_second")
    add("non-stream req/s on one core (c=64)", ">= 1,000", rps, None if rps is None else rps >= 1000,
        "load limited" if rps and (rosetta("ns_c64", "gateway.cpu_percent") or 0) < 85 else "")
    chunks = rosetta("st64_c16", "load.events_per_second")
    add("stream relay chunks/s (64-chunk streams, c=16)", ">= 15,000", chunks, None if chunks is None else chunks >= 15000)
    if "claude_st64_c16" in by_name:
        cc = rosetta("claude_st64_c16", "load.events_per_second")
        add("Claude -> OpenAI chunks/s (c=16)", ">= 10,000", cc, None if cc is None else cc >= 10000)
    else:
        add("Claude -> OpenAI chunks/s (c=16)", ">= 10,000", None, None, "skipped: " + results.get("skipped", {}).get("claude", "not run"))
    slow = by_name.get("slow")
    if slow and slow.get("rosetta"):
        gap = dig(slow, "added.gap_p99_ms")
        errors = sum(dig(r, "load.errors") or 0 for r in slow["rosetta"])
        peak = min(dig(r, "load.peak_concurrency") or 0 for r in slow["rosetta"])
        full = peak >= 500 and slow["delay_ms"] <= 50
        add(f"{slow['streams']} streams x {slow['tokens']} tokens at {slow['delay_ms']} ms: added p99 gap, errors",
            "< 20 ms, 0 errors", f"{fmt(gap, 1)} ms, {errors} errors, {peak} at once",
            None if gap is None else (gap < 20 and errors == 0), "" if full else "scaled down (not the 500-stream target)")
    idle = by_name.get("idle")
    if idle and idle.get("rosetta"):
        held = min(dig(r, "load.still_open_at_end") or 0 for r in idle["rosetta"])
        add(f"idle streams held open ({idle['streams']})", "5,000", held, held >= 5000 if idle["streams"] >= 5000 else None,
            "" if idle["streams"] >= 5000 else "scaled down")
    rss = dig(results, "gateway.rss_idle_start_mib")
    add("idle RSS (after start-up)", "< 80 MiB", rss, None if rss is None else rss < 80)
    soak = results.get("soak")
    if soak:
        slope = soak.get("growth_mib_per_minute")
        add(f"RSS growth over a {soak['seconds']:.0f} s soak", "~0 (no growth beyond noise)", slope,
            None if slope is None else slope <= 0.25, "MiB/min; 'ok' means <= 0.25 MiB/min")
    return out


def render(results: dict[str, Any], as_markdown: bool = False) -> str:
    render_table = markdown if as_markdown else table
    parts = []
    meta = results.get("meta", {})
    parts.append(
        f"Rosetta benchmark {meta.get('started', '')}  commit {meta.get('commit', '?')[:10]}{' (dirty tree)' if meta.get('dirty') else ''}  "
        f"profile {meta.get('profile')}  repeats {meta.get('repeat')}  cpus {meta.get('cpus')}  pinning {meta.get('pinning')}  "
        f"load avg at start {meta.get('loadavg_start')}"
    )
    parts.append(render_table(TRAFFIC_HEADERS, traffic_rows(results)))
    parts.append("Gateway cost (Rosetta runs; CPU from /proc/<pid>/stat over the measured window):")
    parts.append(render_table(COST_HEADERS, cost_rows(results)))
    idle_lines = []
    for w in results["workloads"]:
        if w["mode"] == "idle":
            for via in ("direct", "rosetta"):
                for r in w.get(via) or []:
                    load = r["load"]
                    idle_lines.append(
                        f"  idle {via}: opened {load.get('opened')}/{load.get('streams')} in {load.get('open_seconds')} s, "
                        f"still open after {load.get('held_seconds')} s: {load.get('still_open_at_end')}, errors {load.get('errors')}, "
                        f"upstream open during {load.get('upstream_open_during')}, released in {load.get('upstream_released_seconds')} s"
                        + (f", gateway CPU while holding {fmt(dig(r, 'gateway.cpu_percent'), 1)}%, RSS {fmt(dig(r, 'gateway.rss_max_mib'))} MiB"
                           if via == "rosetta" else "")
                    )
    if idle_lines:
        parts.append("Idle streams:\n" + "\n".join(idle_lines))
    gw = results.get("gateway", {})
    soak = results.get("soak") or {}
    parts.append(
        f"Gateway RSS: idle after start-up {fmt(gw.get('rss_idle_start_mib'))} MiB, idle after the load "
        f"{fmt(gw.get('rss_idle_end_mib'))} MiB, max {fmt(gw.get('rss_max_mib'))} MiB."
        + (f"  Soak {soak.get('seconds')} s ({soak.get('requests')} requests, {soak.get('errors')} errors): RSS "
           f"{fmt(soak.get('rss_start_mib'))} -> {fmt(soak.get('rss_end_mib'))} MiB, fitted growth "
           f"{fmt(soak.get('growth_mib_per_minute'), 3)} MiB/min." if soak else "")
    )
    target_rows = [[t["target"], t["goal"], t["value"] if isinstance(t["value"], str) else fmt(t["value"], 2),
                    {True: "ok", False: "MISSED", None: "n/a"}[t["ok"]], t["note"]] for t in results.get("targets", [])]
    parts.append("Targets (issue 5):")
    parts.append(render_table(["target", "goal", "measured", "verdict", "note"], target_rows))
    for name, reason in (results.get("skipped") or {}).items():
        parts.append(f"Skipped {name}: {reason}")
    return "\n\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description="Print a saved benchmark result.")
    parser.add_argument("file")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    with open(args.file, "rb") as f:
        results = orjson.loads(f.read())
    print(render(results, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
