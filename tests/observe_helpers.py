"""Helpers for the observability tests: a mock that queues and costs, Rosetta as a real
process (for multiprocess metrics and whole-output log checks), external tools that CI must
have, and reading the Prometheus exposition."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from translators.base import Transport, Upstream
from translators.events import Cost, Event, Progress
from translators.mock import Mock
from translators.request import Request

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0


class QueuedMock(Mock):
    """The mock model behind a job queue: it reports its place in the queue (``Progress``)
    before answering and what the job cost (``Cost`` in kudos) after, the generic events a
    queueing backend sends. Test-only; registered with ``monkeypatch.setitem``."""

    name = "queued_mock"

    async def exchange(self, transport: Transport, upstream: Upstream, req: Request) -> AsyncIterator[Event]:
        yield Progress(queue_position=4, wait_seconds=30.0)
        yield Progress(queue_position=2, wait_seconds=12.0, detail={"waiting": 1})
        async for event in super().exchange(transport, upstream, req):
            yield event
        yield Cost(2.5, "kudos")


def require_tool(name: str) -> str:
    """The path of an external program; skip without it, except in CI (``CI=true``), where a
    missing install must fail the run."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"{name} is not installed; .ci/services must install it (CI=true)")
    pytest.skip(f"{name} is not installed (run .ci/services)")


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def samples(exposition: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a text exposition as (name, labels, value)."""
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    ]


def total(exposition: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        value
        for sample, have, value in samples(exposition)
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    )


async def get_text(url: str) -> str:
    """GET ``url`` and return the body (raises on a non-2xx status)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            response.raise_for_status()
            return await response.text()


@dataclass
class RosettaProcess:
    """``python -m proxy serve`` running on a loopback port, its whole output in ``output``."""

    url: str
    process: subprocess.Popen[bytes]
    output: Path

    @property
    def base_url(self) -> str:
        """The ``/v1`` base URL."""
        return self.url + "/v1"

    def text(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.output.read_text(encoding="utf-8", errors="replace")


async def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time; always reaped."""
    if process.poll() is None:
        process.terminate()
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, process.wait, timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        await loop.run_in_executor(None, process.wait)


@contextlib.asynccontextmanager
async def rosetta_process(
    config: dict[str, Any], workdir: Path, *, env: dict[str, str] | None = None
) -> AsyncIterator[RosettaProcess]:
    """Start Rosetta as its own process with ``config`` (written as YAML) and wait for /ready."""
    port = free_port()
    config_path = workdir / f"rosetta-{port}.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    output = workdir / f"rosetta-{port}.out"
    environment = {k: v for k, v in os.environ.items() if k.upper() != "PROMETHEUS_MULTIPROC_DIR"}
    environment.update(env or {})
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=environment, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    running = RosettaProcess(f"http://127.0.0.1:{port}", process, output)
    try:
        await wait_ready(running)
        yield running
    finally:
        await stop_process(process)


async def wait_ready(running: RosettaProcess) -> None:
    """Poll /ready until it answers 200 (bounded); fail with the process output otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            if running.process.poll() is not None:
                raise AssertionError(f"Rosetta exited with {running.process.returncode}:\n{running.text()}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with http.get(running.url + "/ready") as response:
                    if response.status == 200:
                        return
            if loop.time() > deadline:
                raise AssertionError(f"Rosetta was not ready within {START_TIMEOUT} s:\n{running.text()}")
            await asyncio.sleep(0.05)
