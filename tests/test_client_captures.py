"""Replay what real clients sent (the openai Python and Node SDKs, langchain, SillyTavern's
Custom OpenAI-compatible connector) through Rosetta, byte for byte, and check each succeeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from harness import TRANSCRIPTS

CAPTURES = sorted((TRANSCRIPTS / "clients").glob("*.jsonl"))
CONFIG = {
    "backends": {"mock": {"type": "mock", "tokens_per_second": 0}},
    "models": [{"name": "capture-model", "backend": "mock", "model": "lorem"}],
}
# Headers the client set that describe the old connection, not the request.
HOP = {"host", "content-length", "connection", "accept-encoding"}


def captured(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.mark.parametrize("path", CAPTURES, ids=[p.stem for p in CAPTURES])
async def test_captured_client_request_succeeds(rosetta: Any, path: Path) -> None:
    running = await rosetta(CONFIG)
    async with aiohttp.ClientSession() as http:
        for request in captured(path):
            headers = {k: v for k, v in request["headers"].items() if k.lower() not in HOP}
            body = orjson.dumps(request["body_json"]) if request["body_json"] is not None else None
            async with http.request(request["method"], running.url + request["path"], data=body, headers=headers) as r:
                raw = await r.read()
                assert r.status == 200, raw
                if request["path"].endswith("/models"):
                    assert "capture-model" in [m["id"] for m in orjson.loads(raw)["data"]]
                    continue
                wants_stream = bool((request["body_json"] or {}).get("stream"))
                if wants_stream:
                    assert r.headers["Content-Type"] == "text/event-stream"
                    events = [e[6:] for e in raw.decode().split("\n\n") if e.startswith("data: ")]
                    assert events[-1] == "[DONE]"
                    chunks = [orjson.loads(e) for e in events[:-1]]
                    assert all("choices" in c for c in chunks)
                    usage_asked = ((request["body_json"] or {}).get("stream_options") or {}).get("include_usage")
                    assert (chunks[-1]["choices"] == []) == bool(usage_asked)
                else:
                    answer = orjson.loads(raw)
                    assert answer["choices"] and answer["usage"]["total_tokens"] > 0
                    kind = "chat.completion" if request["path"].endswith("chat/completions") else "text_completion"
                    assert answer["object"] == kind
