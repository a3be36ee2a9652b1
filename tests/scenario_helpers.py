"""The OpenAI side of the end-to-end scenarios, checked strictly.

Requests go through the official ``openai`` client, or raw aiohttp where wire details matter.
Every answer is validated with the openai SDK's own pydantic models (``ChatCompletion``,
``ChatCompletionChunk``, ``Completion``): the SDK itself only ``construct``s them, which checks
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import orjson
from harness import RunningRosetta
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk


# --- the OpenAI side, checked strictly ------------------------------------------------------------
@dataclass
class Streamed:
    """A streamed answer read off the wire."""

    status: int
    headers: Any
    chunks: list[dict[str, Any]]
    comments: list[str]
    done: bool
    body: bytes

    @property
    def text(self) -> str:
        out = ""
        for chunk in self.chunks:
            for choice in chunk.get("choices") or ():
                out += choice.get("text") or (choice.get("delta") or {}).get("content") or ""
        return out

    @property
    def finishes(self) -> list[str]:
        return [c["finish_reason"] for chunk in self.chunks for c in chunk.get("choices") or () if c.get("finish_reason")]


async def post_stream(running: RunningRosetta, path: str, body: dict[str, Any]) -> Streamed:
    """POST with ``stream: true`` and read the SSE answer event by event."""
    async with aiohttp.ClientSession() as http:
        async with http.post(running.base_url + path, json={**body, "stream": True}) as response:
            data = await response.read()
            status, headers = response.status, response.headers
    chunks: list[dict[str, Any]] = []
    comments: list[str] = []
    done = False
    if headers.get("Content-Type", "").startswith("text/event-stream"):
        assert data.endswith(b"\n\n"), data[-200:]
        for event in data.decode().split("\n\n")[:-1]:
            for line in event.split("\n"):
                assert not done, f"an event after [DONE]: {event!r}"
                if line.startswith(":"):
                    comments.append(line)
                elif line == "data: [DONE]":
                    done = True
                else:
                    assert line.startswith("data: {"), line
                    chunks.append(orjson.loads(line[6:]))
    return Streamed(status, headers, chunks, comments, done, data)


def check_stream(streamed: Streamed, *, model: str, operation: str = "chat", include_usage: bool = False) -> Streamed:
    """The stream is OpenAI's: valid chunks, one id, role first, one finish per choice, the usage
    chunk last and only when asked, ``[DONE]``."""
    assert streamed.status == 200, streamed.body[:500]
    assert streamed.done, streamed.body[-500:]
    chunks = streamed.chunks
    assert chunks
    assert not [c for c in chunks if "error" in c], chunks
    for chunk in chunks:
        if operation == "chat":
            ChatCompletionChunk.model_validate(chunk)
        else:
            # OpenAI streams legacy completions with "finish_reason": null until the last chunk,
            # which the SDK's Completion type (made for whole answers) does not allow
            Completion.model_validate({**chunk, "choices": [{**c, "finish_reason": c["finish_reason"] or "stop"} for c in chunk["choices"]]})
        assert chunk["object"] == ("chat.completion.chunk" if operation == "chat" else "text_completion")
        assert chunk["model"] == model
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    with_choices = [c for c in chunks if c["choices"]]
    if operation == "chat":
        assert with_choices[0]["choices"][0]["delta"].get("role") == "assistant"
    indexes = {choice["index"] for c in with_choices for choice in c["choices"]}
    for index in indexes:
        reasons = [ch["finish_reason"] for c in with_choices for ch in c["choices"] if ch["index"] == index and ch["finish_reason"]]
        assert len(reasons) == 1, (index, reasons)
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] is not None
        usage = chunks[-1]["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert all(c.get("usage", "absent") is None for c in chunks[:-1])
    else:
        assert all(c["choices"] for c in chunks) and all(c.get("usage") is None for c in chunks)
    return streamed


def check_answer(data: dict[str, Any], *, model: str, operation: str = "chat") -> dict[str, Any]:
    """A whole answer is OpenAI's, with usage."""
    (ChatCompletion if operation == "chat" else Completion).model_validate(data)
    assert data["object"] == ("chat.completion" if operation == "chat" else "text_completion")
    assert data["model"] == model
    usage = data["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    return data


def check_error(data: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's error envelope, nothing else."""
    assert set(data) == {"error"}, data
    assert set(data["error"]) == {"message", "type", "param", "code"}, data
    assert isinstance(data["error"]["message"], str) and data["error"]["message"]
    assert "Traceback" not in data["error"]["message"]
    return data["error"]


async def post_json(running: RunningRosetta, path: str, body: Any) -> tuple[int, Any, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(running.base_url + path, json=body) as response:
            return response.status, response.headers, orjson.loads(await response.read())


def client(running: RunningRosetta) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=running.base_url, api_key="sk-client", max_retries=0)


def split_body(body: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """A SillyTavern body as the openai client's messages and everything else (sent as is)."""
    rest = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
    return body["messages"], rest
