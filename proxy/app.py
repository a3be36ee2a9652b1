"""The aiohttp application: routes, middlewares, and the process-wide HTTP client session.

``create_app(settings)`` builds everything; nothing is registered at import time.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any, AsyncIterator

import aiohttp
import orjson
import structlog
from aiohttp import web

from translators.base import Backend as TranslatorBackend
from translators.errors import AuthenticationFailed, MethodNotAllowed, NotFound, PayloadTooLarge, RosettaError
from translators.registry import TRANSLATORS

from .config import Settings
from .errors import error_response
from .intake import new_request_id
from .log import RequestLog, configure_logging, log_content, secrets_of
from .metrics import Metrics
from .models import ModelCatalog
from .observe import RequestRecord
from .pipeline import Pipeline
from .router import Backend, Router
from .tokens import TokenCounter
from .upstream import HttpTransport

SETTINGS = web.AppKey("settings", Settings)
SESSION = web.AppKey("session", aiohttp.ClientSession)
ROUTER = web.AppKey("router", Router)
PIPELINE = web.AppKey("pipeline", Pipeline)
CATALOG = web.AppKey("catalog", ModelCatalog)
METRICS = web.AppKey("metrics", Metrics)
READY = web.AppKey("ready", asyncio.Event)
LOG = web.AppKey("log", structlog.typing.FilteringBoundLogger)
KEY_OWNER = web.RequestKey("key_owner", str)

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})
PROBE_TIMEOUT = 1.0


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON response encoded with orjson."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's own HTTP errors (unknown path, wrong method, body too large) in OpenAI's envelope."""
    try:
        return await handler(request)
    except RosettaError as error:
        return error_response(error)
    except web.HTTPException as exc:
        if exc.status == 404:
            return error_response(NotFound(f"Unknown path {request.method} {request.path}"))
        if exc.status == 405:
            return error_response(MethodNotAllowed(f"Method {request.method} is not allowed on {request.path}"))
        if exc.status == 413:
            return error_response(PayloadTooLarge("the request body is larger than this gateway accepts"))
        raise


def cors_middleware(origins: list[str]) -> Any:
    """CORS for browser front ends on ``server.cors_origins``: preflights are answered here
    (before the key check, as browsers send no credentials on them)."""
    allow_any = "*" in origins

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and (allow_any or origin in origins)
        if request.method == "OPTIONS" and allowed and "Access-Control-Request-Method" in request.headers:
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": "*" if allow_any else origin or "",
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", "*"),
                    "Access-Control-Max-Age": "600",
                    "Vary": "Origin",
                },
            )
        response = await handler(request)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = "*" if allow_any else origin or ""
            response.headers["Access-Control-Expose-Headers"] = "x-request-id, x-rosetta-backend, x-rosetta-warning, x-rosetta-usage-source, x-rosetta-overhead-ms"
            response.headers["Vary"] = "Origin"
        return response

    return middleware


def auth_middleware(keys: list[str]) -> Any:
    """Require one of the gateway keys as ``Authorization: Bearer`` (or ``x-api-key``) on /v1."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in OPEN_PATHS or not keys:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        if not given:
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        for number, key in enumerate(keys):
            if hmac.compare_digest(given.encode(), key.encode()):
                request[KEY_OWNER] = f"key{number}"
                return await handler(request)
        raise AuthenticationFailed("Incorrect API key provided.")

    return middleware


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """POST /v1/chat/completions."""
    return await _generate(request, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    """POST /v1/completions."""
    return await _generate(request, "completion")


async def _generate(request: web.Request, operation: Any) -> web.StreamResponse:
    capture = request.app[SETTINGS].server.log_prompts
    record = RequestRecord(
        new_request_id(operation), operation, stream=False, key_owner=request.get(KEY_OWNER), capture_content=capture
    )
    response = await request.app[PIPELINE].handle(request, operation, record)
    if capture:
        await log_content(request.app[LOG], request, record)
    return response


async def list_models(request: web.Request) -> web.Response:
    """GET /v1/models."""
    return json_response(await request.app[CATALOG].list())


async def get_model(request: web.Request) -> web.Response:
    """GET /v1/models/{id}."""
    return json_response(request.app[CATALOG].get(request.match_info["model"]))


async def health(request: web.Request) -> web.Response:
    """GET /health: the process answers."""
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """GET /ready: start-up probes are done and at least one backend is live."""
    router = request.app[ROUTER]
    if not request.app[READY].is_set():
        return json_response({"status": "starting"}, status=503)
    if not router.backends:
        return json_response({"status": "no backend", "backends": []}, status=503)
    return json_response({"status": "ready", "backends": sorted(router.backends)})


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus exposition (every worker's samples in multiprocess mode)."""
    collectors = request.app[METRICS]
    return web.Response(body=collectors.exposition(), headers={"Content-Type": collectors.content_type})


async def _probe(session: aiohttp.ClientSession, url: str) -> bool:
    """True if anything answers HTTP at ``url``."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT), allow_redirects=False):
            return True
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """One client session per process; autodetected backends probed at start-up."""
    settings = app[SETTINGS]
    log = app[LOG]
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    session = aiohttp.ClientSession(connector=connector, json_serialize=lambda o: orjson.dumps(o).decode())
    app[SESSION] = session
    router = app[ROUTER]
    for name, backend in settings.backends.items():
        translator = TRANSLATORS[backend.type](
            TranslatorBackend(name, backend.type, backend.url, backend.api_key, backend.headers, backend.options)
        )
        router.backends[name] = Backend(
            name, backend.type, translator, HttpTransport(session, name, backend.timeout), backend.retries, backend.retry_max_wait
        )
    probes = {n: b.url for n, b in settings.backends.items() if b.autodetect}
    if probes:
        results = await asyncio.gather(*(_probe(session, url) for url in probes.values()))
        for name, alive in zip(probes, results, strict=True):
            if not alive:
                router.drop_backend(name)
                log.info("backend_absent", backend=name, url=probes[name])
    log.info("ready", backends=sorted(router.backends), config=settings.source)
    app[READY].set()
    yield
    await session.close()


async def _close_metrics(app: web.Application) -> None:
    """This process stops: its live gauges leave the shared multiprocess samples."""
    app[METRICS].close()


def cors_list(settings: Settings) -> list[Any]:
    """The CORS middleware when any origin is configured (none by default)."""
    origins = settings.server.cors_origins
    return [cors_middleware(origins)] if origins else []


def create_app(settings: Settings) -> web.Application:
    """The whole gateway for ``settings``."""
    configure_logging(settings.server.log_format, settings.server.log_level, secrets_of(settings))
    log = structlog.get_logger("rosetta")
    keys = [k.get_secret_value() for k in settings.server.api_keys]
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[errors_middleware, *cors_list(settings), auth_middleware(keys)],
    )
    app[SETTINGS] = settings
    app[LOG] = log
    app[READY] = asyncio.Event()
    router = Router(settings, {})
    app[ROUTER] = router
    metrics_ = Metrics(known_models=[m.name for m in settings.models])
    app[METRICS] = metrics_
    app[CATALOG] = ModelCatalog(router, settings.server.models_cache_seconds, log)
    app[PIPELINE] = Pipeline(
        router,
        TokenCounter(),
        (metrics_, RequestLog(log)),
        keepalive=settings.server.keepalive_seconds,
        max_body=settings.server.max_body_bytes,
        log=log,
        secrets=secrets_of(settings),
    )
    app.cleanup_ctx.append(_lifecycle)
    app.on_cleanup.append(_close_metrics)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app
