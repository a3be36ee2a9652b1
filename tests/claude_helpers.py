"""Helpers for the ``claude`` translator tests: the anthropic SDK as the judge of every body we
build, and requests built the way the pipeline builds them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from anthropic.types import MessageCreateParams
from pydantic import TypeAdapter

from proxy.intake import request_from_body
from translators.base import Backend
from translators.claude import Claude
from translators.request import Request

HERE = Path(__file__).parent / "transcripts" / "claude"
KEY = "sk-ant-test-key"


# --- the anthropic SDK as the judge of every body we build ------------------------------
REQUEST_SCHEMA: TypeAdapter[Any] = TypeAdapter(MessageCreateParams)


def materialize(value: Any) -> Any:
    """Pydantic validates ``Iterable`` fields lazily: walk them so every element is checked."""
    if isinstance(value, (Iterator, list, tuple)):
        return [materialize(v) for v in value]
    if isinstance(value, dict):
        return {k: materialize(v) for k, v in value.items()}
    return value


# anthropic SDK 1.0+ dropped temperature/top_p/top_k from its typed params (simonw/llm-anthropic#82,
# thetahealth/mirobody#72); the API still takes them on models before Claude 4.7. They are
# checked against the ranges of the published spec (shared/specs/anthropic/hosted_spec.yaml).
SAMPLING_RANGES: dict[str, tuple[type, float, float | None]] = {
    "temperature": (float, 0.0, 1.0), "top_p": (float, 0.0, 1.0), "top_k": (int, 0, None),
}


def assert_valid_claude_request(body: dict[str, Any]) -> None:
    """Valid for the SDK's TypedDicts, and nothing dropped: TypedDict validation ignores unknown
    keys, so an equal round trip proves there were none (a typo'd field fails here)."""
    rest = {k: v for k, v in body.items() if k not in SAMPLING_RANGES}
    for name, (kind, low, high) in SAMPLING_RANGES.items():
        if name in body:
            value = body[name]
            assert isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool), name
            assert value >= low and (high is None or value <= high), name
    assert materialize(REQUEST_SCHEMA.validate_python(rest)) == rest


# --- building requests the way the pipeline does ------------------------------------------
def capture_body(ref: str) -> dict[str, Any]:
    """``@file.jsonl`` or ``@file.jsonl#N``: the body of line N (1-based) of a capture."""
    name, _, line = ref[1:].partition("#")
    lines = (HERE / name).read_text().splitlines()
    return orjson.loads(lines[int(line or 1) - 1])["body_json"]


def translator(**options: Any) -> Claude:
    return Claude(Backend("anthropic", "claude", "", api_key=KEY, options=options))


def make_request(
    body: dict[str, Any], model: str, claude: Claude, *, operation: str = "chat", model_options: dict[str, Any] | None = None
) -> Request:
    """A Request as proxy/pipeline builds it: edge validation, then a prompt becomes a message."""
    return request_from_body(
        body,
        operation,  # type: ignore[arg-type]
        request_id="req-test",
        model="public-name",
        upstream_model=model,
        translator=claude,
        # the proxy passes the validated ModelOptions instance (proxy/config.py ModelSettings.options)
        options=Claude.ModelOptions.model_validate(model_options or {}),
    )


# --- headers, URL, configuration -----------------------------------------------------------
def simple_request(claude: Claude, model: str = "claude-3-5-sonnet-20240620") -> Request:
    return make_request({"model": "m", "messages": [{"role": "user", "content": "Q"}]}, model, claude)
