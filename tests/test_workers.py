"""``rosetta serve --workers 2``: two processes on one port, one aggregated /metrics."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

REQUESTS = 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def requests_total(exposition: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith("rosetta_requests_total{")
    )


async def test_two_workers_share_the_port_and_their_metrics(tmp_path: Path) -> None:
    config = tmp_path / "rosetta.yaml"
    config.write_text(
        "server: {log_level: warning}\n"
        "backends:\n  mock: {type: mock, tokens_per_second: 0}\n"
        "models:\n  - {name: m, backend: mock, model: lorem}\n"
    )
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--config", str(config), "--port", str(port), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # a new connection per request, so the kernel spreads them over both workers
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            for _ in range(200):
                try:
                    async with http.get(base + "/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
            for _ in range(REQUESTS):
                body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
                async with http.post(base + "/v1/chat/completions", json=body) as r:
                    assert r.status == 200
            # every scrape, whichever worker answers it, counts the requests of both
            for _ in range(6):
                async with http.get(base + "/metrics") as r:
                    assert requests_total(await r.text()) == REQUESTS
    finally:
        process.terminate()
        _, err = process.communicate(timeout=20)
    started = [line for line in err.decode().splitlines() if "listening on" in line]
    assert len(started) == 2 and len({line.rsplit("pid ", 1)[1] for line in started}) == 2
    assert process.returncode == 0
