"""Structured logs with structlog: JSON by default, readable on a terminal.

One line per request (``request``) with its id, key owner, route, backend, upstream model,
status, tokens, durations and retries. Prompts and completions are never logged unless
``server.log_prompts`` is on; configured secrets are masked in every line, whatever field
they end up in.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Iterable

import structlog

from translators.events import Cost, Progress

from .observe import RequestRecord


def redactor(secrets: Iterable[str]) -> Any:
    """A structlog processor replacing each secret (of 4+ characters) in any string value."""
    needles = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            for needle in needles:
                if needle in value:
                    value = value.replace(needle, "[REDACTED]")
            return value
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [scrub(v) for v in value]
        return value

    def processor(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        return {k: scrub(v) for k, v in event.items()} if needles else event

    return processor


def configure_logging(fmt: str, level: str, secrets: Iterable[str], stream: Any = None) -> None:
    """Set up structlog for the process (log format: auto|json|console)."""
    out = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and hasattr(out, "isatty") and out.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer(colors=False) if console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redactor(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


class RequestLog:
    """Observer writing the one line per request."""

    def __init__(self, log: Any) -> None:
        self.log = log

    def started(self, record: RequestRecord) -> None:
        pass

    def progress(self, record: RequestRecord, event: Progress | Cost) -> None:
        pass

    def finished(self, record: RequestRecord) -> None:
        self.log.info(
            "request",
            request_id=record.request_id,
            key_owner=record.key_owner,
            operation=record.operation,
            stream=record.stream,
            route=record.route,
            backend=record.backend,
            upstream_model=record.upstream_model,
            status=record.status,
            error_type=record.error_type,
            error_kind=record.error_kind,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            usage_source=record.usage_source,
            finish_reasons=record.finish_reasons,
            duration_ms=round(record.duration * 1000, 3),
            ttft_ms=None if record.ttft is None else round(record.ttft * 1000, 3),
            overhead_ms=round(record.overhead * 1000, 3),
            retries=record.retries,
            client_disconnected=record.client_disconnected,
        )
