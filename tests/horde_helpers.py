"""Helpers for the ``horde`` translator tests: the recorded answers of a real AI Horde
(``transcripts/horde/``) and a fake AI Horde on a fake clock built on them.

The fake transport owns a fake clock: ``sleep`` advances it instantly and records the delay, so
the polling cadence, the timeout and the Retry-After handling are asserted without waiting.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

from translators.base import Backend, Upstream
from translators.errors import UpstreamError
from translators.horde import Horde
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


# --- the native request ----------------------------------------------------------------------


CHAT = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"})
CHATML = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
