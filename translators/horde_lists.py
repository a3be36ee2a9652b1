"""The AI Horde's live lists, read over the transport and cached on the translator instance:
the workers (``/v2/workers?type=text``: who may take a job, and their ``max_length`` /
``max_context_length``, which the ``horde`` translator clamps requests to) and the text models
(``/v2/status/models?type=text``: names, worker counts, queue; it lists no limits).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Literal, TypedDict

from .base import Transport
from .errors import UpstreamError

# A failed read is tried again after this long, whatever the list's own TTL says.
FAILED_LOOKUP_TTL = 30.0

ClampTo = Literal["best_worker", "every_worker"]


class HordeWorker(TypedDict, total=False):
    """One entry of ``GET /v2/workers?type=text`` (the fields we read)."""

    id: str
    name: str
    models: list[str]
    max_length: int
    max_context_length: int
    online: bool
    maintenance_mode: bool
    trusted: bool


class HordeModel(TypedDict, total=False):
    """One entry of ``GET /v2/status/models?type=text``."""

    name: str
    count: int
    performance: float
    queued: float
    jobs: float
    eta: int
    type: str


@dataclass(frozen=True, slots=True)
class _Entry:
    at: float
    value: list[dict[str, Any]] | None
    error: str | None = None


class ListCache:
    """One Horde list, read at most once per ``ttl`` seconds of the transport's clock (a failure
    is kept too, for at most FAILED_LOOKUP_TTL, so an outage does not add a call per request).
    Concurrent refreshes share one read; a read that takes longer than ``timeout`` seconds is a
    failure (requests wait for it, so it must not take the transport's long read timeout)."""

    def __init__(self, ttl: float, timeout: float) -> None:
        self.ttl = ttl
        self.timeout = timeout
        self._entry: _Entry | None = None
        self._lock = asyncio.Lock()

    @property
    def read(self) -> bool:
        """Whether a read was tried at all."""
        return self._entry is not None

    @property
    def value(self) -> list[dict[str, Any]] | None:
        """The list as last read (None: never read, or the last read failed)."""
        return self._entry.value if self._entry else None

    @property
    def error(self) -> str | None:
        """Why the last read failed."""
        return self._entry.error if self._entry else None

    def fresh(self, now: float) -> bool:
        """Whether the cached read (good or failed) is still to be used."""
        if self._entry is None:
            return False
        ttl = self.ttl if self._entry.error is None else min(self.ttl, FAILED_LOOKUP_TTL)
        return now - self._entry.at < ttl

    async def refresh(self, transport: Transport, fetch: Callable[[], Awaitable[list[dict[str, Any]]]]) -> None:
        """Read the list with ``fetch`` unless the cached copy is fresh."""
        if self.fresh(transport.now()):
            return
        async with self._lock:
            if self.fresh(transport.now()):
                return
            try:
                self._entry = _Entry(transport.now(), await asyncio.wait_for(fetch(), self.timeout))
            except UpstreamError as exc:
                self._entry = _Entry(transport.now(), None, exc.message)
            except asyncio.TimeoutError:
                self._entry = _Entry(transport.now(), None, f"no answer within {self.timeout:g} s")


@dataclass(frozen=True, slots=True)
class WorkerLimits:
    """What the workers that may take a request offer: ``max_length`` and ``max_context_length``
    of the best one (or of the weakest, for ``every_worker``), and how many workers count."""

    max_length: int
    max_context_length: int
    workers: int


@dataclass(frozen=True, slots=True)
class WorkerFilter:
    """Which workers may take a request, as the submit body restricts them."""

    models: tuple[str, ...] = ()
    trusted_only: bool = False
    worker_ids: tuple[str, ...] = ()
    blacklist: bool = False


def worker_limits(workers: Iterable[HordeWorker], which: WorkerFilter, clamp_to: ClampTo) -> WorkerLimits | None:
    """The limits over the online workers ``which`` selects; None when none does (the Horde
    then answers ``is_possible: false``, which is the clearer error)."""
    lengths: list[int] = []
    contexts: list[int] = []
    for worker in workers:
        if not worker.get("online", True) or worker.get("maintenance_mode"):
            continue
        if which.trusted_only and not worker.get("trusted"):
            continue
        if which.worker_ids and (worker.get("id") in which.worker_ids) == which.blacklist:
            continue
        if which.models and not set(which.models) & set(worker.get("models") or ()):
            continue
        length, context = worker.get("max_length"), worker.get("max_context_length")
        if isinstance(length, int) and isinstance(context, int):
            lengths.append(length)
            contexts.append(context)
    if not lengths:
        return None
    pick = max if clamp_to == "best_worker" else min
    return WorkerLimits(pick(lengths), pick(contexts), len(lengths))


def model_detail(model: HordeModel) -> dict[str, Any]:
    """One live text model as ``/v1/models`` may show it: id, workers serving it, queue, speed."""
    return {
        "id": str(model.get("name")),
        "workers": model.get("count"),
        "performance": model.get("performance"),
        "queued": model.get("queued"),
        "jobs": model.get("jobs"),
        "eta": model.get("eta"),
    }
