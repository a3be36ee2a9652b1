"""Helpers for the Ollama translator tests: the documented answers in ``transcripts/ollama/``,
requests built for them, and their answers as frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from translators.base import Backend
from translators.ollama import ModelOptions, Ollama
from translators.request import Request

HERE = Path(__file__).parent / "transcripts" / "ollama"
URL = "http://127.0.0.1:11434"


def translator(**options: Any) -> Ollama:
    return Ollama(Backend("ollama", "ollama", URL, options=options))


def chat(body: dict[str, Any], **kw: Any) -> Request:
    full = {"model": "llama", **body}
    return Request(
        id="chatcmpl-0123456789abcdef", operation="chat", model="llama", upstream_model=kw.pop("upstream", "llama3.2"),
        body=full, stream=bool(full.get("stream")), messages=tuple(full["messages"]),
        stop=tuple(kw.pop("stop", ())), max_tokens=full.get("max_tokens"), options=kw.pop("options", ModelOptions(num_ctx=8192)),
    )


def completion(body: dict[str, Any], **kw: Any) -> Request:
    full = {"model": "x", **body}
    return Request(
        id="cmpl-0123456789abcdef", operation="completion", model="x", upstream_model=kw.pop("upstream", "capture-model"),
        body=full, stream=bool(full.get("stream")), prompt=full["prompt"], stop=tuple(kw.pop("stop", ())),
        max_tokens=full.get("max_tokens"), options=kw.pop("options", ModelOptions()),
    )
