"""The ``rosetta`` command: ``serve`` and ``check-config``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from typing import Sequence

from . import __version__
from .config import ConfigError, Settings, default_config, load_file, load_settings


def _settings(path: str | None) -> Settings:
    env = dict(os.environ)
    if path:
        return load_file(path, env=env)
    return load_settings(default_config(env), env=env, source="embedded default")


def serve(args: argparse.Namespace) -> int:
    """Run the gateway until interrupted (``--workers N``: N processes on one port)."""
    try:
        settings = _settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    if args.workers > 1:
        return _supervise(args, host, port)
    _run_worker(args.config, host, port, reuse_port=False)
    return 0


def _run_worker(config: str | None, host: str, port: int, *, reuse_port: bool) -> None:
    """One serving process."""
    from aiohttp import web

    from .app import create_app

    settings = _settings(config)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # uvloop is optional (not on Windows)
        pass
    app = create_app(settings)
    # Everything built so far lives as long as the process: keep it out of the collector's
    # sight, and collect the young generation less often. A full collection over the whole
    # heap paused the loop 40-80 ms under 500 streams (bench/, py-spy).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    print(f"Rosetta {__version__} listening on http://{host}:{port}/v1 (config: {settings.source}, pid {os.getpid()})", file=sys.stderr)
    web.run_app(
        app, host=host, port=port, handler_cancellation=True, access_log=None, print=None, reuse_port=reuse_port or None
    )


def _supervise(args: argparse.Namespace, host: str, port: int) -> int:
    """Start ``--workers`` processes sharing the port (SO_REUSEPORT: the kernel spreads the
    connections) and one Prometheus multiprocess directory, so ``/metrics`` on any worker
    shows them all. Stops them all on SIGINT/SIGTERM; exits when any of them dies."""
    import multiprocessing
    import shutil
    import signal
    import tempfile

    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        # samples of an earlier run would be added to this one's
        shutil.rmtree(metrics_dir, ignore_errors=True)
    else:
        metrics_dir = tempfile.mkdtemp(prefix="rosetta-metrics-")
    os.makedirs(metrics_dir, exist_ok=True)
    # read by prometheus-client when each worker imports it (spawned: a fresh interpreter)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_run_worker, args=(args.config, host, port), kwargs={"reuse_port": True}, daemon=False)
        for _ in range(args.workers)
    ]
    for worker in workers:
        worker.start()

    def stop(*_: object) -> None:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        from multiprocessing.connection import wait

        wait([w.sentinel for w in workers])
    finally:
        stop()
        for worker in workers:
            worker.join(10)
    return 0 if all(w.exitcode in (0, -signal.SIGTERM) for w in workers) else 1


def check_config(args: argparse.Namespace) -> int:
    """Validate a config file; print every problem; exit 1 on error."""
    try:
        settings = load_file(args.file, env=dict(os.environ))
    except ConfigError as exc:
        print(f"{args.file}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK ({len(settings.backends)} backends, {len(settings.models)} models)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rosetta`` console script."""
    parser = argparse.ArgumentParser(prog="rosetta", description="OpenAI-compatible gateway for role-play and creative-writing backends.")
    parser.add_argument("--version", action="version", version=f"rosetta {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the gateway")
    p_serve.add_argument("--config", help="YAML config file (default: the embedded default)")
    p_serve.add_argument("--host", help="bind address (default from config, 127.0.0.1)")
    p_serve.add_argument("--port", type=int, help="port (default from config, 8000)")
    p_serve.add_argument(
        "--workers", type=int, default=1, help="serving processes sharing the port (default 1; Linux SO_REUSEPORT)"
    )
    p_serve.set_defaults(func=serve)
    p_check = sub.add_parser("check-config", help="validate a config file and print every problem")
    p_check.add_argument("file")
    p_check.set_defaults(func=check_config)
    args = parser.parse_args(argv)
    return int(args.func(args))
