"""Helpers for the ``ooba`` (text-generation-webui) tests: the captures of the real server in
``tests/transcripts/ooba/`` and a translator configured for them."""

from __future__ import annotations

from typing import Any

from harness import TRANSCRIPTS
from textgen_fakes import captured_request

from translators.base import Backend
from translators.ooba import Ooba

HERE = TRANSCRIPTS / "ooba"
URL = "http://127.0.0.1:5002"
MODEL = "gemma-3-270m-q4_k_m.gguf"
AUTH = {"Content-Type": "application/json", "Authorization": "Bearer ooba-secret"}


def translator(**options: Any) -> Ooba:
    return Ooba(Backend("ooba", "ooba", URL, api_key="ooba-secret", options=options))


def body(name: str) -> bytes:
    return (HERE / f"{name}.response.body").read_bytes()


def sent_json(name: str) -> Any:
    return captured_request(HERE / f"{name}.request.http")


# --- answers ------------------------------------------------------------------------------

CHAT_STREAM_TEXT = ["What", " is", " the", " capital", " of", " France", "?"]
