"""Structured logs with structlog: JSON by default, readable on a terminal.

One line per request (``request``) with its id, key owner, route, backend, upstream model,
status, error type and upstream error kind, tokens, durations and retries. Prompts and
completions are never logged unless ``server.log_prompts`` is on (then one more line,
``request_content``, carries the request's messages or prompt and the answer text).

Configured secrets are masked in every line, whatever field or text they end up in: in each
value before rendering, and once more in the rendered line (an object's ``repr``, a
traceback). The standard library's loggers (aiohttp, asyncio) go through the same redaction
and renderer, so nothing reaches the output around it.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit

import orjson
import structlog
from aiohttp import web

from translators.events import Cost, Progress

from .observe import RequestRecord

MASK = "[REDACTED]"
# Shorter values would mask ordinary words and numbers all over the logs.
MIN_SECRET_CHARS = 4
# A header, query parameter or option whose name says it holds a credential.
SENSITIVE_NAME = re.compile(r"auth|key|token|secret|passw|cookie|credential|session|signature", re.IGNORECASE)
AUTH_SCHEME = re.compile(r"^(bearer|basic|token|digest)\s+(\S+)$", re.IGNORECASE)


def needles_of(secrets: Iterable[str]) -> list[str]:
    """The secrets worth masking, longest first (so a secret containing another is masked whole)."""
    return sorted({s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)


def mask(text: str, needles: list[str]) -> str:
    """``text`` with every needle (from :func:`needles_of`) replaced by the mask."""
    for needle in needles:
        if needle in text:
            text = text.replace(needle, MASK)
    return text


def redactor(secrets: Iterable[str]) -> Any:
    """A structlog processor replacing each secret (of 4+ characters) in any string value,
    nested ones included; values of other types are turned into their ``repr`` first when
    that shows a secret."""
    needles = needles_of(secrets)

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            return mask(value, needles)
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [scrub(v) for v in value]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        text = repr(value)
        masked = mask(text, needles)
        return value if masked == text else masked

    def processor(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        return {k: scrub(v) for k, v in event.items()} if needles else event

    return processor


def text_redactor(secrets: Iterable[str]) -> Any:
    """The last structlog processor: masks secrets in the rendered line itself."""
    needles = needles_of(secrets)

    def processor(_logger: Any, _name: str, line: Any) -> Any:
        return mask(line, needles) if needles and isinstance(line, str) else line

    return processor


def _sensitive_values(items: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Iterable[str]:
    pairs = items.items() if isinstance(items, Mapping) else items
    for name, value in pairs:
        if isinstance(value, Mapping):
            yield from _sensitive_values(value)
        elif isinstance(value, str) and SENSITIVE_NAME.search(str(name)):
            yield value
            scheme = AUTH_SCHEME.match(value.strip())
            if scheme:
                yield scheme.group(2)


def secrets_of(settings: Any) -> tuple[str, ...]:
    """Every credential a config holds: ``settings.secrets`` (keys, auth-like headers, secret
    options) plus the bare token of an ``Authorization``-style value (``Bearer xyz`` → ``xyz``),
    URL passwords and key-like query parameters, and options whose name says credential."""
    found: list[str] = list(settings.secrets)
    for backend in settings.backends.values():
        found += _sensitive_values(backend.headers)
        found += _sensitive_values(backend.options)
        try:
            url = urlsplit(backend.url)
        except ValueError:
            continue
        if url.password:
            found.append(url.password)
        found += _sensitive_values(parse_qsl(url.query))
    return tuple(dict.fromkeys(found))


_HANDLER_MARK = "_rosetta_handler"


def _orjson_line(event: Any, **_: Any) -> str:
    """One JSON log line with orjson (several times faster than json.dumps on the hot path);
    values orjson does not know are shown by their repr."""
    return orjson.dumps(event, default=repr).decode()


def configure_logging(fmt: str, level: str, secrets: Iterable[str], stream: Any = None) -> None:
    """Set up structlog and the standard library's logging for the process (log format:
    auto|json|console; auto is console on a terminal, JSON otherwise)."""
    out = stream or sys.stderr
    secrets = tuple(secrets)
    tty = hasattr(out, "isatty") and out.isatty()
    console = fmt == "console" or (fmt == "auto" and tty)
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=tty)
        if console
        else structlog.processors.JSONRenderer(serializer=_orjson_line)
    )
    numeric = getattr(logging, level.upper())
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            redactor(secrets),
            renderer,
            text_redactor(secrets),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        # each create_app asks for a fresh logger, so caching cannot outlive a reconfiguration
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.stdlib.add_log_level, timestamper],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redactor(secrets),
                renderer,
                text_redactor(secrets),
            ],
        )
    )
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class RequestLog:
    """Observer writing the one line per request (``warning`` level for 5xx answers)."""

    def __init__(self, log: Any) -> None:
        self.log = log

    def started(self, record: RequestRecord) -> None:
        """Nothing is logged when a request arrives."""

    def progress(self, record: RequestRecord, event: Progress | Cost) -> None:
        """Queue reports are in the request line (last position), not lines of their own."""

    def finished(self, record: RequestRecord) -> None:
        """The request line."""
        fields: dict[str, Any] = {
            "request_id": record.request_id,
            "key_owner": record.key_owner,
            "operation": record.operation,
            "stream": record.stream,
            "route": record.route,
            "backend": record.backend,
            "backend_type": record.backend_type,
            "upstream_model": record.upstream_model,
            "status": record.status,
            "error_type": record.error_type,
            "error_kind": record.error_kind,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "cached_tokens": record.cached_tokens,
            "usage_source": record.usage_source,
            "finish_reasons": record.finish_reasons,
            "duration_ms": _ms(record.duration),
            "ttft_ms": _ms(record.ttft),
            "upstream_ms": _ms(record.upstream_wait),
            "overhead_ms": _ms(record.overhead),
            "retries": record.retries,
            "client_disconnected": record.client_disconnected,
        }
        if record.queue_position is not None or record.queue_wait is not None:
            fields["queue_position"] = record.queue_position
            fields["queue_wait_s"] = record.queue_wait
        if record.cost_unit is not None:
            fields["cost"] = record.cost
            fields["cost_unit"] = record.cost_unit
        if record.status >= 500:
            self.log.warning("request", **fields)
        else:
            self.log.info("request", **fields)


# Bodies that were never read (or cannot be) are not read again just to log them.
_UNREAD = frozenset({413, 415})


async def log_content(log: Any, request: web.Request, record: RequestRecord) -> None:
    """With ``server.log_prompts`` on: one ``request_content`` line with the request's messages
    (or prompt) and the answer text of each choice. The body is the one the pipeline already
    read (aiohttp keeps it)."""
    body: Any = None
    if record.status not in _UNREAD:
        try:
            body = orjson.loads(await request.read())
        except Exception:  # an unreadable body was already answered with its error
            body = None
    if not isinstance(body, dict):
        body = {}
    log.info(
        "request_content",
        request_id=record.request_id,
        messages=body.get("messages"),
        prompt=body.get("prompt"),
        completion=["".join(record.answer[index]) for index in sorted(record.answer)],
    )
