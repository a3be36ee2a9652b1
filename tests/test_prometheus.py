"""The dashboard and the exposition against the real tools: a real Prometheus (Debian package,
installed by ``.ci/services``) scrapes a running Rosetta after traffic from the mock backend,
and every PromQL expression of ``grafana/rosetta.json`` must parse and return data through
Prometheus's HTTP API; ``promtool`` must pass the exposition (lint warnings fail too: every
name is ours) and the shipped scrape config.

Without the binaries these tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
import yaml
from harness import RunningRosetta, eventually, http_response, post_then_hang_up, replay_upstream, run_rosetta
from observe_helpers import QueuedMock, free_port, get_text, require_tool, rosetta_process, stop_process, total

from proxy.app import METRICS
from proxy.metrics import Metrics
from translators.registry import TRANSLATORS

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "grafana" / "rosetta.json"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus.yml"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
USER = [{"role": "user", "content": "Tell me a story."}]
# Grafana's variables as the test evaluates them: every backend and model, and a rate window
# that spans the test's scrapes (one per second).
VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m", "backend": ".*", "model": ".*"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$")
WAIT = 45.0


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels() -> list[dict[str, Any]]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out += panel.get("panels", [])
    return out


def expressions() -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel."""
    return [(p["title"], t["expr"]) for p in panels() for t in p.get("targets", [])]


def variable_queries() -> list[str]:
    return [v["query"]["query"] for v in dashboard()["templating"]["list"] if v["type"] == "query"]


def concrete(expr: str) -> str:
    """``expr`` with Grafana's variables replaced (an unknown variable fails the test)."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        assert name in VARIABLES, f"the test does not know Grafana variable ${name} in {expr!r}"
        return VARIABLES[name]

    return VARIABLE.sub(value, expr)


# --- static checks (no binaries) ---------------------------------------------------------------


def test_the_dashboard_covers_what_the_issue_asks() -> None:
    titles = " | ".join(p["title"].lower() for p in panels())
    for wanted in (
        "requests per second by backend", "errors per second by backend", "request duration",
        "time to first token", "tokens per second by backend and model", "overhead",
        "upstream errors per second by kind", "queue position", "kudos",
    ):
        assert wanted in titles, wanted
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"] and t["datasource"] == panel["datasource"] for t in panel["targets"])


def test_every_metric_the_dashboard_uses_exists() -> None:
    metrics = Metrics()
    names = {sample for family in metrics.registry.collect() for sample in _sample_names(family)}
    used = {name for _, expr in expressions() for name in re.findall(r"\b(?:gen_ai|rosetta)_[a-z_]+", expr)}
    used |= {name for query in variable_queries() for name in re.findall(r"\b(?:gen_ai|rosetta)_[a-z_]+", query)}
    assert used and used <= names, used - names


def _sample_names(family: Any) -> set[str]:
    if family.type == "histogram":
        return {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    if family.type == "counter":
        return {family.name + "_total"}
    return {family.name}


def test_every_expression_uses_only_known_variables() -> None:
    for _, expr in expressions():
        assert "$" not in concrete(expr)


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http")
    scrape = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert source["jsonData"]["timeInterval"] == scrape["global"]["scrape_interval"]
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "rosetta.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    assert [job["job_name"] for job in scrape["scrape_configs"]] == ["rosetta"]
    assert scrape["scrape_configs"][0]["metrics_path"] == "/metrics"


def test_promtool_accepts_the_scrape_config() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run([promtool, "check", "config", str(SCRAPE_CONFIG)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the real tools ----------------------------------------------------------------------------


def promtool_check_metrics(promtool: str, exposition: str) -> None:
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60
    )
    # lint problems are printed and fail too: all names here are ours to get right
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        f"promtool check metrics ({result.returncode}):\n{result.stdout}{result.stderr}"
    )


@contextlib.asynccontextmanager
async def prometheus_server(binary: str, workdir: Path, target: str) -> AsyncIterator[str]:
    """A real Prometheus on a free loopback port scraping ``target`` every second, with the
    shipped scrape config (targets and intervals replaced) and its own storage."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text(encoding="utf-8"))
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    output = workdir / "prometheus.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [
                binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
            ],
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                if process.poll() is not None:
                    raise AssertionError(f"prometheus exited with {process.returncode}:\n{output.read_text()}")
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with http.get(url + "/-/ready") as response:
                        if response.status == 200:
                            break
                if loop.time() > deadline:
                    raise AssertionError(f"prometheus not ready within {WAIT} s:\n{output.read_text()}")
                await asyncio.sleep(0.1)
        yield url
    finally:
        await stop_process(process)


async def prom_get(url: str, path: str, params: dict[str, str]) -> Any:
    async with aiohttp.ClientSession() as http:
        async with http.get(url + path, params=params) as response:
            body = await response.json(content_type=None)
    assert body.get("status") == "success", f"{path} {params}: {body}"
    return body["data"]


async def wait_scraped(prometheus: str, requests: float) -> None:
    """Poll (bounded) until Prometheus has scraped a Rosetta that had answered ``requests``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    seen: Any = None
    while loop.time() < deadline:
        data = await prom_get(prometheus, "/api/v1/query", {"query": "sum(rosetta_requests_total)"})
        seen = data["result"]
        if seen and float(seen[0]["value"][1]) == requests:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"Prometheus did not scrape {requests} requests within {WAIT} s (last: {seen})")


async def post(url: str, body: dict[str, Any]) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body) as response:
            await response.read()
            return response.status


async def traffic(running: RunningRosetta) -> float:
    """Streams and not, chat and completion, a queueing backend, errors of several kinds and a
    client that hangs up; returns the requests Rosetta has answered so far."""
    chat = running.base_url + "/chat/completions"
    for model in ("m", "queued"):
        assert await post(chat, {"model": model, "messages": USER}) == 200
        assert await post(chat, {"model": model, "messages": USER, "stream": True}) == 200
    assert await post(running.base_url + "/completions", {"model": "m", "prompt": "Once", "stream": True}) == 200
    assert await post(running.base_url + "/completions", {"model": "m", "prompt": "Once"}) == 200
    assert await post(chat, {"model": "m", "messages": USER, "temperature": 9}) == 400
    assert await post(chat, {"model": "no-such-model", "messages": USER}) == 404
    assert await post(chat, {"model": "flaky", "messages": USER}) == 502
    assert await post(chat, {"model": "dead", "messages": USER, "stream": True}) == 502
    await post_then_hang_up(running, "/v1/chat/completions", {"model": "slow", "messages": USER, "stream": True}, after=b"data:")
    registry = running.app[METRICS].registry
    assert await eventually(lambda: registry.get_sample_value("rosetta_requests_in_flight", {"operation": "chat"}) == 0, 10)
    return total(await get_text(running.url + "/metrics"), "rosetta_requests_total")


async def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prometheus_binary = require_tool("prometheus")
    promtool = require_tool("promtool")
    monkeypatch.setitem(TRANSLATORS, QueuedMock.name, QueuedMock)
    async with replay_upstream() as upstream:
        upstream.add("POST", "/v1/chat/completions", http_response(500, {"error": {"message": "overloaded"}}))
        config = {
            "backends": {
                "mock": {"type": "mock", "tokens_per_second": 400, "default_max_tokens": 16},
                "queue": {"type": QueuedMock.name, "tokens_per_second": 400, "default_max_tokens": 16},
                "slow": {"type": "mock", "tokens_per_second": 10, "default_max_tokens": 400},
                "up": {"type": "openai", "url": upstream.url + "/v1", "api_key": "sk-prometheus-test"},
                "down": {"type": "openai", "url": f"http://127.0.0.1:{free_port()}/v1"},
            },
            "models": [
                {"name": "m", "backend": "mock", "model": "lorem"},
                {"name": "queued", "backend": "queue", "model": "lorem"},
                {"name": "slow", "backend": "slow", "model": "lorem"},
                {"name": "flaky", "backend": "up", "model": "x"},
                {"name": "dead", "backend": "down", "model": "x"},
            ],
        }
        async with run_rosetta(config) as running:
            answered = await traffic(running)
            target = running.url.removeprefix("http://")
            async with prometheus_server(prometheus_binary, tmp_path, target) as prometheus:
                await wait_scraped(prometheus, answered)
                # a second round, so every rate sees an increase between two scrapes
                answered = await traffic(running)
                await wait_scraped(prometheus, answered)

                failures = []
                for title, expr in expressions():
                    query = concrete(expr)
                    data = await prom_get(prometheus, "/api/v1/query", {"query": query})
                    values = [float(sample["value"][1]) for sample in data["result"]]
                    if not values:
                        failures.append(f"{title}: no data for {query}")
                    elif not any(math.isfinite(v) for v in values):
                        failures.append(f"{title}: only {values} for {query}")
                for query in variable_queries():
                    match = LABEL_VALUES.match(concrete(query))
                    assert match, query
                    selector, label = match.groups()
                    params = {"match[]": selector} if selector else {}
                    if not await prom_get(prometheus, f"/api/v1/label/{label}/values", params):
                        failures.append(f"variable {query}: no values")
                assert not failures, "\n".join(failures)

            promtool_check_metrics(promtool, await get_text(running.url + "/metrics"))


async def test_promtool_passes_the_multiprocess_exposition(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    shared = tmp_path / "multiproc"
    shared.mkdir()
    config = {
        "backends": {"mock": {"type": "mock", "tokens_per_second": 0}},
        "models": [{"name": "m", "backend": "mock", "model": "lorem"}],
    }
    async with rosetta_process(config, tmp_path, env={"PROMETHEUS_MULTIPROC_DIR": str(shared)}) as running:
        chat = running.base_url + "/chat/completions"
        assert await post(chat, {"model": "m", "messages": USER, "stream": True}) == 200
        assert await post(chat, {"model": "nope", "messages": USER}) == 404
        exposition = await get_text(running.url + "/metrics")
    assert total(exposition, "rosetta_requests_total") == 2
    promtool_check_metrics(promtool, exposition)
