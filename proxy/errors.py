"""Errors rendered in one place, as OpenAI's envelope ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import web

from translators.errors import RosettaError

from .render import error_json


def error_response(error: RosettaError, request_id: str | None = None) -> web.Response:
    """The HTTP response for ``error`` (with ``Retry-After`` when the error has one)."""
    headers: dict[str, str] = {}
    if request_id:
        headers["x-request-id"] = request_id
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return web.Response(
        status=error.status,
        body=orjson.dumps({"error": error_json(error)}),
        content_type="application/json",
        headers=headers,
    )


def unexpected(exc: BaseException, request_id: str, log: Any) -> RosettaError:
    """Log a bug with its traceback (server side only) and return what the client sees."""
    log.error("unexpected_error", request_id=request_id, exc_info=exc)
    return RosettaError(f"internal error in the gateway (request id {request_id})", status=500, type="server_error")


def header_safe(value: str, limit: int = 1000) -> str:
    """A header value with no line breaks and only latin-1 characters, cut to ``limit``."""
    text = " ".join(str(value).split())
    return text.encode("latin-1", "replace").decode("latin-1")[:limit]
