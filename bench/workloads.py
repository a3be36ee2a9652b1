"""The benchmark's workloads (what each sends, and to which translator) and the figures derived
from a workload's runs (Rosetta minus direct, one-line summaries, the soak's slope)."""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from typing import Any

import report

# Backend names in the generated config, by translator type.
BACKENDS = {"openai": "fake", "claude": "fakeclaude", "kobold": "fakekobold"}
# The model each translator type is asked for (timing suffixes are added per workload).
MODELS = {"openai": "fake", "claude": "claude-sonnet-4-5", "kobold": "koboldcpp"}
DIRECT_PROTOCOL = {"openai": "openai", "claude": "anthropic", "kobold": "kobold"}


@dataclass
class Workload:
    """One kind of traffic."""

    name: str
    title: str
    mode: str  # closed | streams | idle
    backend: str  # translator type: openai | claude | kobold
    stream: bool
    tokens: int
    concurrency: int = 1
    streams: int = 0
    delay_ms: int = 0
    hold_ms: int = 0

    def model(self, via: str) -> str:
        suffix = (f"@d{self.delay_ms}" if self.delay_ms else "") + (f"@h{self.hold_ms}" if self.hold_ms else "")
        upstream_model = MODELS[self.backend] + suffix
        return upstream_model if via == "direct" else f"{BACKENDS[self.backend]}/{upstream_model}"


def workloads(args: argparse.Namespace, available: set[str]) -> tuple[list[Workload], dict[str, str]]:
    """The workloads of this run, and those skipped with the reason."""
    hold_ms = 3_600_000  # the upstream holds idle streams until the client drops them
    chosen = [
        Workload("ns_c1", "non-stream, concurrency 1", "closed", "openai", False, 16, 1),
        Workload("ns_c16", "non-stream, concurrency 16", "closed", "openai", False, 16, 16),
        Workload("ns_c64", "non-stream, concurrency 64", "closed", "openai", False, 16, 64),
        Workload("st64_c1", "stream of 64 chunks, concurrency 1", "closed", "openai", True, 64, 1),
        Workload("st64_c16", "streams of 64 chunks, concurrency 16", "closed", "openai", True, 64, 16),
        Workload("claude_ns_c1", "Claude non-stream, concurrency 1", "closed", "claude", False, 16, 1),
        Workload("claude_st64_c16", "Claude streams of 64 chunks, concurrency 16", "closed", "claude", True, 64, 16),
        Workload("kobold_ns_c1", "KoboldCpp non-stream, concurrency 1", "closed", "kobold", False, 16, 1),
        Workload("kobold_st64_c16", "KoboldCpp streams of 64 chunks, concurrency 16", "closed", "kobold", True, 64, 16),
        Workload("slow", f"{args.slow_streams} streams of {args.slow_tokens} tokens at {args.slow_delay_ms} ms, started over {args.slow_ramp:g} s",
                 "streams", "openai", True, args.slow_tokens, streams=args.slow_streams, delay_ms=args.slow_delay_ms),
        Workload("idle", f"{args.idle_streams} idle streams held {args.idle_hold:g} s", "idle", "openai", True, 1,
                 streams=args.idle_streams, hold_ms=hold_ms),
    ]
    skipped: dict[str, str] = {}
    out = []
    for w in chosen:
        if args.only and w.name not in args.only:
            continue
        if w.backend not in available:
            reason = f"no '{w.backend}' translator in translators/registry.py"
            skipped[w.backend] = reason
            continue
        out.append(w)
    return out, skipped


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) points, in MiB per minute."""
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else None


def added(entry: dict[str, Any]) -> dict[str, Any]:
    """Rosetta minus direct, on the medians of the repeats."""
    d, r = entry["direct"], entry["rosetta"]
    if not d or not r:
        return {}
    out = {}
    for key, path in (("latency_p50_ms", "load.latency_ms.p50"), ("latency_p90_ms", "load.latency_ms.p90"),
                      ("latency_p99_ms", "load.latency_ms.p99"), ("ttft_p50_ms", "load.ttft_ms.p50"),
                      ("ttft_p99_ms", "load.ttft_ms.p99"), ("gap_p99_ms", "load.gap_ms.p99"),
                      ("max_gap_p99_ms", "load.max_gap_ms.p99")):
        a, b = report.median_of(r, path), report.median_of(d, path)
        if a is not None and b is not None:
            out[key] = round(a - b, 3)
    return out


def brief(w: Workload, result: dict[str, Any]) -> str:
    load = result.get("load", {})
    if "fatal" in load:
        return "FAILED: " + load["fatal"]
    gw = result.get("gateway") or {}
    cpu = f" gw cpu {gw.get('cpu_percent')}%" if gw else ""
    if w.mode == "idle":
        return (f"opened {load.get('opened')}/{load.get('streams')} in {load.get('open_seconds')} s, "
                f"{load.get('still_open_at_end')} open after {load.get('held_seconds')} s, errors {load.get('errors')}{cpu}")
    return (f"{load.get('requests_per_second')} req/s p50 {report.dig(load, 'latency_ms.p50')} ms"
            + (f" {load.get('events_per_second')} chunks/s" if w.stream else "") + f" errors {load.get('errors')}{cpu}")
