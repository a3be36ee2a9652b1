"""Benchmark runner: the fake upstream, one Rosetta process and the load generator, each workload
direct to the upstream (the baseline) and through Rosetta, in the same run.

    .venv/bin/python bench/run.py                 # quick profile (a few minutes)
    .venv/bin/python bench/run.py --full          # the issue's sizes, 3 repeats
    .venv/bin/python bench/run.py --soak 600      # with the 10-minute memory soak
    .venv/bin/python bench/run.py --profile       # then py-spy profiles of ns_c1 and st64_c16

On two or more CPUs the gateway gets the last CPU to itself and the upstream, the load
generator and this runner share the others (``os.sched_setaffinity``); other programs on the
machine are not moved, so the report says how busy the gateway's core was with other work.
Everything listens on 127.0.0.1, every child dies with the runner, every step has a deadline.
Results: a table on stdout and JSON in bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(ROOT))

import hotspots  # noqa: E402
import procfs  # noqa: E402
import report  # noqa: E402
from children import RESULTS, Children  # noqa: E402
from workloads import DIRECT_PROTOCOL, Workload, added, brief, slope_per_minute, workloads  # noqa: E402


class Bench(Children):
    """The children (``children.py``) and the measurements."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.rss_all: list[float] = []

    # one load run -----------------------------------------------------------------------
    def load_argv(self, w: Workload, via: str, duration: float, warmup: float) -> list[str]:
        base = f"http://127.0.0.1:{self.upstream_port if via == 'direct' else self.gateway_port}"
        argv = [sys.executable, str(HERE / "load.py"), "--url", base, "--model", w.model(via), "--mode", w.mode,
                "--protocol", DIRECT_PROTOCOL[w.backend] if via == "direct" else "openai", "--tokens", str(w.tokens),
                "--concurrency", str(w.concurrency), "--duration", str(duration), "--warmup", str(warmup)]
        if w.stream:
            argv += ["--stream", "--expect-events", str(w.tokens)]
        if w.mode != "closed":
            argv += ["--streams", str(w.streams)]
        if w.mode == "streams":
            argv += ["--ramp", str(self.args.slow_ramp)]
        if w.mode == "idle":
            argv += ["--hold", str(self.args.idle_hold), "--stats-url", f"http://127.0.0.1:{self.upstream_port}/bench/stats",
                     "--open-timeout", str(self.args.idle_open_timeout)]
        argv += ["--timeout", str(self.budget(w, duration, warmup))]
        return argv

    def budget(self, w: Workload, duration: float, warmup: float) -> float:
        if w.mode == "closed":
            return warmup + duration + 60
        if w.mode == "streams":
            return self.args.slow_ramp + w.tokens * w.delay_ms / 1000 * 3 + 120
        return self.args.idle_open_timeout + self.args.idle_hold + 60

    async def run_load(self, argv: list[str], timeout: float) -> dict[str, Any]:
        """Run the load generator; sample the gateway at its marks and its RSS meanwhile."""
        errors = tempfile.TemporaryFile()
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=errors, preexec_fn=procfs.child_setup(self.load_cores),
        )
        gateway_pid = self.pids["gateway"]
        rss: list[tuple[float, float]] = []
        marks: dict[str, procfs.Sample] = {}

        async def sample_rss() -> None:
            while True:
                try:
                    rss.append((time.perf_counter(), procfs.rss_mib(gateway_pid)))
                except OSError:
                    return
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample_rss())
        result: dict[str, Any] | None = None
        try:
            async with asyncio.timeout(timeout + 30):
                assert process.stdout is not None
                async for raw in process.stdout:
                    line = raw.decode().strip()
                    if line.startswith("MARK "):
                        marks[line.split()[1]] = procfs.Sample.take(self.pids)
                    elif line.startswith("RESULT "):
                        result = orjson.loads(line[7:])
                await process.wait()
        except TimeoutError:
            result = {"fatal": "the load generator overran its deadline"}
        finally:
            sampler.cancel()
            if process.returncode is None:
                process.kill()
                await process.wait()
        if result is None:
            errors.seek(0)
            stderr = errors.read().decode(errors="replace")[-2000:]
            result = {"fatal": f"no result (exit {process.returncode}): {stderr}"}
        errors.close()
        self.rss_all += [v for _, v in rss]
        return self.measure(result, marks, rss)

    def measure(self, load: dict[str, Any], marks: dict[str, procfs.Sample], rss: list[tuple[float, float]]) -> dict[str, Any]:
        out: dict[str, Any] = {"load": load}
        start, end = marks.get("start"), marks.get("end")
        if not (start and end):
            return out
        window = max(end.at - start.at, 1e-9)
        gw = end.cpu["gateway"] - start.cpu["gateway"]
        ok = load.get("ok") or 0
        events = load.get("events") or 0
        in_window = [v for t, v in rss if start.at <= t <= end.at] or [v for _, v in rss]
        out["gateway"] = {
            "cpu_seconds": round(gw, 3),
            "cpu_percent": round(100 * gw / window, 1),
            "cpu_ms_per_request": round(1000 * gw / ok, 4) if ok else None,
            "cpu_us_per_chunk": round(1e6 * gw / events, 2) if events else None,
            "requests_per_cpu_second": round(ok / gw, 1) if ok and gw > 0 else None,
            "chunks_per_cpu_second": round(events / gw, 1) if events and gw > 0 else None,
            "rss_max_mib": round(max(v for _, v in rss), 1) if rss else None,
            "rss_window_mean_mib": round(statistics.fmean(in_window), 1) if in_window else None,
        }
        noise: dict[str, Any] = {"upstream_cpu_percent": round(100 * (end.cpu["upstream"] - start.cpu["upstream"]) / window, 1)}
        if self.gateway_cores:
            spent = [end.cores[c] - start.cores[c] for c in self.gateway_cores]
            # tasks other than the gateway on its CPU (other people's programs, kernel threads)
            noise["other_on_gateway_core_percent"] = round(max(0.0, 100 * (sum(t.tasks for t in spent) - gw) / window), 1)
            noise["irq_on_gateway_core_percent"] = round(100 * sum(t.irq for t in spent) / window, 1)
            noise["steal_on_gateway_core_percent"] = round(100 * sum(t.steal for t in spent) / window, 1)
        if self.load_cores:
            spent = [end.cores[c] - start.cores[c] for c in self.load_cores]
            noise["load_cores_busy_percent"] = round(100 * sum(t.tasks + t.irq for t in spent) / window / len(spent), 1)
        noise["loadavg"] = procfs.loadavg()
        out["noise"] = noise
        return out

    # workloads --------------------------------------------------------------------------
    async def workload(self, w: Workload) -> dict[str, Any]:
        args = self.args
        entry: dict[str, Any] = {**asdict(w), "direct": [], "rosetta": []}
        for repeat in range(args.repeat):
            order = ("direct", "rosetta") if repeat % 2 == 0 else ("rosetta", "direct")
            for via in order:
                if via == "direct" and args.no_direct:
                    continue
                argv = self.load_argv(w, via, args.duration, args.warmup)
                result = await self.run_load(argv, self.budget(w, args.duration, args.warmup))
                entry[via].append(result)
                print(f"  {w.name:<16} {via:<8} {brief(w, result)}", flush=True)
                await asyncio.sleep(args.pause)
        entry["added"] = added(entry)
        return entry

    async def soak(self) -> dict[str, Any]:
        """Mixed traffic (non-stream c=8 and 64-chunk streams c=4) for ``--soak`` seconds,
        sampling the gateway's RSS every second; growth is the fitted slope after a warm-up."""
        seconds = self.args.soak
        procs = [
            Workload("soak_ns", "", "closed", "openai", False, 16, 8),
            Workload("soak_st", "", "closed", "openai", True, 64, 4),
        ]
        samples: list[tuple[float, float]] = []
        gateway_pid = self.pids["gateway"]

        async def sampler() -> None:
            while True:
                samples.append((time.perf_counter(), procfs.rss_mib(gateway_pid)))
                await asyncio.sleep(1.0)

        task = asyncio.create_task(sampler())
        try:
            results = await asyncio.gather(*(self.run_load(self.load_argv(w, "rosetta", seconds, 0), seconds + 60) for w in procs))
        finally:
            task.cancel()
        skip = min(max(seconds * 0.1, 5.0), seconds / 2)
        t0 = samples[0][0] if samples else 0
        fit = [(t - t0, v) for t, v in samples if t - t0 >= skip]
        slope = slope_per_minute(fit)
        return {
            "seconds": seconds,
            "requests": sum(r["load"].get("ok") or 0 for r in results),
            "errors": sum(r["load"].get("errors") or 0 for r in results),
            "rss_start_mib": round(samples[0][1], 1) if samples else None,
            "rss_end_mib": round(samples[-1][1], 1) if samples else None,
            "rss_max_mib": round(max(v for _, v in samples), 1) if samples else None,
            "growth_mib_per_minute": None if slope is None else round(slope, 4),
            "fit_skipped_seconds": skip,
            "samples": [(round(t - t0, 1), round(v, 2)) for t, v in samples],
        }

    async def profile(self, names: list[str], chosen: list[Workload]) -> dict[str, Any]:
        """py-spy record on the gateway while one workload runs through it."""
        spy = self.args.py_spy or shutil.which("py-spy")
        if not spy:
            return {"error": "py-spy not found (pip install py-spy, or pass --py-spy PATH)"}
        out: dict[str, Any] = {}
        for w in chosen:
            if w.name not in names:
                continue
            seconds = self.args.profile_seconds
            raw = RESULTS / f"{self.stamp}-profile-{w.name}.txt"
            recorder = procfs.spawn(
                [spy, "record", "--pid", str(self.pids["gateway"]), "--rate", str(self.args.profile_rate), "--format", "raw",
                 "--output", str(raw), "--duration", str(int(seconds + 1))]
                # --native must pause the process to unwind C stacks; otherwise sample without pausing
                + (["--native"] if self.args.profile_native else ["--nonblocking"]),
                self.load_cores, stdout=subprocess.DEVNULL, stderr=open(raw.with_suffix(".pyspy.log"), "wb"),
            )
            await asyncio.sleep(0.5)
            result = await self.run_load(self.load_argv(w, "rosetta", seconds, 0), seconds + 60)
            await asyncio.to_thread(recorder.wait, seconds + 30)
            spots = hotspots.hot_spots(raw.read_text()) if raw.exists() else {
                "error": "py-spy wrote nothing: " + raw.with_suffix(".pyspy.log").read_text(errors="replace")[-500:]}
            (RESULTS / f"{self.stamp}-profile-{w.name}.hot.txt").write_text(hotspots.render(spots) if "error" not in spots else spots["error"])
            out[w.name] = {"raw": str(raw), "load": result.get("load"), "gateway": result.get("gateway"), "hot_spots": spots}
            print(f"  profiled {w.name}: {spots.get('samples')} samples -> {raw}", flush=True)
        return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from translators.registry import TRANSLATORS

    available = set(TRANSLATORS)
    chosen, skipped = workloads(args, available)
    bench = Bench(args)
    commit, dirty = procfs.git_state(ROOT)
    results: dict[str, Any] = {
        "meta": {
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "commit": commit, "dirty": dirty,
            "profile": "full" if args.full else "quick", "repeat": args.repeat, "duration": args.duration, "warmup": args.warmup,
            "cpus": os.cpu_count(), "python": sys.version.split()[0],
            "pinning": (f"gateway on CPU {sorted(bench.gateway_cores)}, upstream+load on {sorted(bench.load_cores)}"
                        if bench.gateway_cores and bench.load_cores else "none (one CPU)"),
            "loadavg_start": procfs.loadavg(), "args": vars(args),
        },
        "skipped": skipped,
        "workloads": [],
    }
    print(f"Rosetta benchmark: {len(chosen)} workloads, {results['meta']['pinning']}", flush=True)
    bench.start(available)
    try:
        await asyncio.sleep(1.0)
        results["gateway"] = {"rss_idle_start_mib": round(procfs.rss_mib(bench.pids["gateway"]), 1)}
        for w in chosen:
            results["workloads"].append(await bench.workload(w))
        await asyncio.sleep(3.0)
        results["gateway"]["rss_idle_end_mib"] = round(procfs.rss_mib(bench.pids["gateway"]), 1)
        results["gateway"]["rss_max_mib"] = round(max(bench.rss_all), 1) if bench.rss_all else None
        results["gateway"]["cpu_seconds_total"] = round(procfs.cpu_seconds(bench.pids["gateway"]), 2)
        if args.soak > 0:
            # a fresh process: after the idle streams the old heap has room to hide a leak in
            print(f"  soak {args.soak:g} s on a fresh gateway ...", flush=True)
            bench.restart_gateway()
            await asyncio.sleep(1.0)
            results["soak"] = await bench.soak()
        if args.profile:
            results["profiles"] = await bench.profile(args.profile_workloads, chosen)
    finally:
        bench.stop()
    results["meta"]["loadavg_end"] = procfs.loadavg()
    results["targets"] = report.targets(results)
    path = RESULTS / f"{bench.stamp}.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    shutil.copyfile(path, RESULTS / "latest.json")
    print()
    print(report.render(results, args.markdown))
    for name, prof in (results.get("profiles") or {}).items():
        if "hot_spots" in prof and "error" not in prof["hot_spots"]:
            print(f"\nProfile {name} (gateway CPU {report.dig(prof, 'gateway.cpu_percent')}%):")
            print(hotspots.render({**prof["hot_spots"], **{k: prof["hot_spots"][k][:12] for k in ("self_by_package", "self", "inclusive", "project_innermost")}}))
    print(f"\nResults: {path}  (gateway log: {bench.gateway_log})")
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Rosetta benchmark: fake upstream + Rosetta + load generator.")
    parser.add_argument("--full", action="store_true", help="longer: 15 s per workload (3 s warm-up), 3 repeats, idle streams held 20 s")
    parser.add_argument("--duration", type=float, help="measured seconds per closed-loop workload (quick 5, full 15)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each (quick 1, full 3)")
    parser.add_argument("--repeat", type=int, help="runs of each workload, direct and Rosetta alternating first (quick 1, full 3)")
    parser.add_argument("--only", nargs="+", help="run only these workloads (ns_c1 ns_c16 ns_c64 st64_c1 st64_c16 claude_ns_c1 "
                        "claude_st64_c16 kobold_ns_c1 kobold_st64_c16 slow idle)")
    parser.add_argument("--slow-streams", type=int, default=500, help="concurrent slow streams")
    parser.add_argument("--slow-tokens", type=int, default=100, help="tokens per slow stream")
    parser.add_argument("--slow-delay-ms", type=int, default=50)
    parser.add_argument("--slow-ramp", type=float, default=2.0, help="start the slow streams evenly over this many seconds (0: at once)")
    parser.add_argument("--idle-streams", type=int, default=5000, help="idle streams to hold")
    parser.add_argument("--idle-hold", type=float, help="seconds to hold them once all are open (quick 5, full 20)")
    parser.add_argument("--idle-open-timeout", type=float, default=120.0)
    parser.add_argument("--soak", type=float, default=60.0, help="memory soak seconds (0: none; 600 for the 10-minute one)")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct baselines")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    parser.add_argument("--profile", action="store_true", help="after the measurements, py-spy the gateway under some workloads")
    parser.add_argument("--profile-workloads", nargs="+", default=["ns_c1", "st64_c16"])
    parser.add_argument("--profile-seconds", type=float, default=15.0)
    parser.add_argument("--profile-rate", type=int, default=250)
    parser.add_argument("--py-spy", help="path of the py-spy binary (default: on PATH)")
    parser.add_argument("--profile-native", action="store_true", help="py-spy --native: show C frames (uvloop, orjson) too")
    parser.add_argument("--gateway-prelude", help="experiments: Python run in the gateway process before it starts, "
                        "e.g. 'import gc; gc.freeze()'")
    parser.add_argument("--gateway-log-format", default="json", choices=("json", "console"))
    parser.add_argument("--gateway-log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for the README)")
    parser.add_argument("--max-time", type=float, default=3600.0, help="hard limit for the whole run, seconds")
    args = parser.parse_args(argv)
    quick = not args.full
    defaults = {"duration": (5.0, 15.0), "warmup": (1.0, 3.0), "repeat": (1, 3), "idle_hold": (5.0, 20.0)}
    for name, (q, f) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, q if quick else f)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    async def bounded() -> dict[str, Any]:
        return await asyncio.wait_for(main_async(args), args.max_time)

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(bounded())
    except asyncio.TimeoutError:
        print(f"stopped: the run took longer than --max-time {args.max_time:g} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
