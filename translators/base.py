"""The translator contract: what one backend module provides, and what the proxy gives it.

A translator is pure protocol mapping. It never opens a socket, reads the environment or a
setting, or logs: the proxy hands it a :class:`Backend` (this backend's configuration slice)
and a :class:`Transport` (which does the HTTP, and owns the clock so tests can fake it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, ClassVar, Iterable, Literal, Mapping, Protocol, Sequence

import orjson
from pydantic import BaseModel, ConfigDict

from .errors import UpstreamError, upstream_error
from .events import Event
from .params import ParamMap
from .request import Request

Framing = Literal["sse", "ndjson", "json"]
Accepts = Literal["chat", "completion"]


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded stream unit: an SSE event (``event`` name, joined ``data``) or an NDJSON
    line (``event`` is None, ``data`` is the line)."""

    data: str
    event: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Upstream:
    """One native HTTP request, as a value a test can compare with ``==``."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    stream: bool = False
    # Things the translator changed or dropped; the proxy logs them and returns them in
    # ``x-rosetta-warning``. Not part of the wire request, so not compared.
    warnings: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Backend:
    """This backend's configuration as the translator sees it.

    ``api_key`` is the resolved secret (never logged by the proxy); ``options`` holds the
    translator-specific settings from config, validated by the translator's ``Options``.
    """

    name: str
    type: str
    url: str
    api_key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)


class UpstreamResponse(Protocol):
    """An upstream HTTP response as the transport exposes it."""

    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes:
        """The whole body."""

    def frames(self, framing: Framing) -> AsyncIterator[Frame]:
        """The body decoded as SSE events or NDJSON lines."""

    def close(self) -> None:
        """Drop the connection (this is the cancel for backends without a cancel call)."""


class Transport(Protocol):
    """What the proxy gives ``exchange``: HTTP and a clock."""

    async def send(self, upstream: Upstream) -> UpstreamResponse:
        """Send the request; returns once the status line and headers arrived. Raises
        UpstreamError(kind timeout|refused) on transport failure."""

    async def sleep(self, seconds: float) -> None:
        """Wait (a fake clock in tests)."""

    def now(self) -> float:
        """Monotonic seconds (a fake clock in tests)."""


def parse_json(body: bytes, backend_type: str) -> Any:
    """Decode a JSON body; leading whitespace (DeepSeek's keep-alive lines) is tolerated."""
    try:
        return orjson.loads(body.strip() or b"null")
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(
            f"upstream {backend_type} sent malformed JSON ({exc})", kind="malformed"
        ) from None


async def get_json(transport: "Transport", url: str, headers: Mapping[str, str]) -> Any:
    """GET ``url`` and return its JSON, or None when the server answers an error or non-JSON
    (for optional look-ups such as model lists). Transport failures still raise."""
    response = await transport.send(Upstream("GET", url, headers))
    try:
        if response.status >= 400:
            return None
        return orjson.loads(await response.read())
    except orjson.JSONDecodeError:
        return None
    finally:
        response.close()


def openai_model_ids(data: Any) -> list[str]:
    """The ids in an OpenAI-shaped model list (``{"data": [{"id": ...}]}``)."""
    entries = data.get("data", ()) if isinstance(data, dict) else ()
    return [str(m["id"]) for m in entries if isinstance(m, dict) and "id" in m]


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """The ``Retry-After`` seconds an upstream asked for, if it said a number."""
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class NoOptions(BaseModel):
    """Options of a translator that has none: any key is a config error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Translator:
    """Base class for one backend protocol. Subclasses set the class attributes and override
    ``build_request`` and the parse methods; ``exchange`` suits any plain HTTP backend.

    ``Options`` validates the backend's translator-specific config keys and ``ModelOptions``
    the per-model ones (both pydantic models with ``extra="forbid"``, so a typo is a config
    error with its location); validated values reach the translator as ``self.options`` and
    ``req.options``.
    """

    name: ClassVar[str]
    framing: ClassVar[Framing] = "sse"
    params: ClassVar[ParamMap]
    # What the backend takes natively: chat messages, a prompt, or both. The pipeline converts.
    accepts: ClassVar[frozenset[Accepts]] = frozenset({"chat", "completion"})
    # Whether a legacy completion with several prompts (or token arrays) can be sent as it is.
    multi_prompt: ClassVar[bool] = False
    # Default upstream base URL when config gives none.
    default_url: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions
    ModelOptions: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.options: Any = self.Options.model_validate(dict(backend.options))

    # --- to the backend -------------------------------------------------------------------
    async def prepare(self, transport: Transport, req: Request) -> Request:
        """A last look at the request before ``build_request``, with the network at hand:
        text-completion backends render the chat with the model's instruct template here
        (fetching the model's own template once for ``template: auto``) and check the
        context size. Returns a new Request; the default returns ``req`` unchanged."""
        return req

    def build_request(self, req: Request) -> Upstream:
        """The native request for ``req``."""
        raise NotImplementedError

    # --- from the backend -----------------------------------------------------------------
    def parse_response(self, body: Any, req: Request) -> Iterable[Event]:
        """Events for a complete (non-stream) native answer."""
        raise NotImplementedError

    async def parse_stream(self, frames: AsyncIterator[Frame], req: Request) -> AsyncIterator[Event]:
        """Events for a native stream."""
        raise NotImplementedError
        yield  # pragma: no cover

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
        """The error for an upstream HTTP error status; override to read the backend's body."""
        text = body.decode("utf-8", "replace").strip()
        message = text[:500]
        code = None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            err = data.get("error", data)
            if isinstance(err, dict):
                message = str(err.get("message") or err.get("detail") or message)[:500]
                code = err.get("code") if isinstance(err.get("code"), str) else None
            elif isinstance(err, str):
                message = err[:500]
        return upstream_error(
            status, message, backend_type=self.name, code=code, retry_after=retry_after_of(headers)
        )

    # --- the exchange ---------------------------------------------------------------------
    async def exchange(self, transport: Transport, upstream: Upstream, req: Request) -> AsyncIterator[Event]:
        """Send ``upstream`` and yield events. Override for odd transports (submit → poll →
        cancel). The proxy ``aclose()``s this generator when the client goes away, so cleanup
        that needs the network (a cancel call) belongs in ``finally``/``except GeneratorExit``."""
        response = await transport.send(upstream)
        try:
            if response.status >= 400:
                raise self.parse_error(response.status, await response.read(), response.headers)
            if upstream.stream:
                async for event in self.parse_stream(response.frames(self.framing), req):
                    yield event
            else:
                for event in self.parse_response(parse_json(await response.read(), self.name), req):
                    yield event
        finally:
            response.close()

    async def list_models(self, transport: Transport) -> Sequence[str | Mapping[str, Any]]:
        """What this backend serves now, for ``/v1/models``: ids, or dicts with an ``id`` and
        extra facts shown on the model object (worker counts...); [] if unknown."""
        return []
