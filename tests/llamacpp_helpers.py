"""Helpers for the llama.cpp translator tests: the captures of a real ``llama-server`` in
``transcripts/llamacpp/``, requests built for them, and their answers as frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from translators.base import Backend
from translators.llamacpp import LlamaCpp
from translators.request import Request

HERE = Path(__file__).parent / "transcripts" / "llamacpp"
URL = "http://127.0.0.1:8080"
GEMMA = "/data/llm/models/gemma-3-270m-q4_k_m.gguf"
JSON = {"Content-Type": "application/json"}


def captured_request(name: str) -> dict[str, Any]:
    """The JSON body of a captured ``.request.http``."""
    return orjson.loads((HERE / f"{name}.request.http").read_bytes().split(b"\r\n\r\n", 1)[1])


def body(name: str) -> bytes:
    """A captured response body (de-chunked)."""
    return (HERE / f"{name}.response.body").read_bytes()


def translator(**options: Any) -> LlamaCpp:
    return LlamaCpp(Backend("llama", "llamacpp", URL, options=options))


def completion(body_: dict[str, Any], **kw: Any) -> Request:
    full = {"model": "gemma", **body_}
    prompt = full["prompt"]
    stop = full.get("stop")
    return Request(
        id="cmpl-0123456789abcdef", operation="completion", model="gemma", upstream_model="gemma", body=full,
        stream=bool(full.get("stream")), prompt=prompt if isinstance(prompt, str) else None,
        stop=tuple([stop] if isinstance(stop, str) else stop or ()), max_tokens=full.get("max_tokens"), **kw,
    )


def rendered_chat(body_: dict[str, Any], prompt: str) -> Request:
    """A chat after ``prepare`` rendered it into ``prompt``."""
    full = {"model": "gemma", "messages": [{"role": "user", "content": "hi"}], **body_}
    return Request(
        id="chatcmpl-0123456789abcdef", operation="chat", model="gemma", upstream_model="gemma", body=full,
        stream=bool(full.get("stream")), messages=tuple(full["messages"]), prompt=prompt,
        max_tokens=full.get("max_tokens"),
    )


# --- answers ------------------------------------------------------------------------------

STREAM_TOKENS = [" the", " capital", " of", " the", " country", " of", " France", ".", " It", " is", " the"]


# --- end to end: the OpenAI client → Rosetta → a fake llama-server replaying captured bytes --

def wire(name: str) -> bytes:
    return (HERE / f"{name}.response.wire").read_bytes()
