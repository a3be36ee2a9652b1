"""``horde``: AI Horde text generation (the volunteer KoboldAI Horde), behind OpenAI's endpoints.

The Horde has no streaming and no synchronous call: a request is submitted
(``POST /v2/generate/text/async`` → a job id), its status polled
(``GET /v2/generate/text/status/{id}``) until ``done``, and cancelled with ``DELETE`` on the same
path. ``exchange`` drives that on the transport's clock: polls start 2 s apart and back off (the
Horde allows 60 polls a minute per id and caches status for about a second), each answer while
the job waits becomes a ``Progress`` event (queue position, wait time, kudos) that the proxy
turns into SSE keep-alive comments, and the job is cancelled the moment the generator is closed
early (client gone), the total wait runs out, or no worker can serve it.

Clamping: the Horde's ``/v2/status/models`` lists no limits, so ``prepare`` reads
``/v2/workers?type=text`` (cached on the instance for ``workers_ttl``) and ``build_request``
clamps ``max_length``/``max_context_length`` to what the workers that may take the job offer.
``build_request`` stays synchronous and deterministic: it reads only that cache, which
``prepare`` refreshed; without it (no ``prepare``, or the lookup failed) nothing is clamped
beyond the Horde's own schema ranges, and a warning says so when the lookup failed.
Siblings: ``horde_params.py`` (the field table, backend and per-model options),
``horde_request.py`` (what is submitted: prompt, stops, models, budget),
``horde_lists.py`` (the cached worker and model lists, worker limits), ``horde_wire.py`` (what the
Horde answers means: status → events, error bodies → errors).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, ClassVar, Mapping, Sequence

from .base import Backend, Translator, Transport, Upstream, parse_json, retry_after_of
from .errors import UpstreamError
from .events import Event
from .horde_lists import (
    HordeModel,
    HordeWorker,
    ListCache,
    WorkerFilter,
    WorkerLimits,
    model_detail,
    worker_limits,
)
from .horde_params import ModelOptions, Options, params
from .horde_request import (
    clamp_budget,
    horde_models,
    model_option,
    prompt_fit_warning,
    prompt_of,
    requested_context,
    requested_length,
    stop_strings,
)
from .horde_wire import (
    HordeStatus,
    answer_events,
    expired_error,
    faulted_error,
    horde_error,
    impossible_error,
    progress_of,
    timeout_error,
)
from .request import OPENAI_FIELDS, Request
from .textgen import TemplatedText

ANONYMOUS_KEY = "0000000000"


class Horde(TemplatedText, Translator):
    """AI Horde text generation: submit, poll (with Progress), cancel."""

    name = "horde"
    framing = "json"
    params = params
    accepts = frozenset({"completion"})
    default_url = "https://aihorde.net/api"
    Options = Options
    ModelOptions = ModelOptions
    client_version: ClassVar[str] = "0.1.0"

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        self.worker_list = ListCache(self.options.workers_ttl, self.options.lists_timeout)
        self.model_list = ListCache(self.options.workers_ttl, self.options.lists_timeout)

    # --- helpers ------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``…/api`` (a configured ``…/api/v2`` is accepted too)."""
        base = (self.backend.url or self.default_url).rstrip("/")
        return base.removesuffix("/v2")

    @property
    def client_agent(self) -> str:
        """The ``Client-Agent`` header the Horde asks every client to send."""
        opts = self.options
        return opts.client_agent or f"rosetta:{opts.client_version or self.client_version}:{opts.contact}"

    def headers(self, *, auth: bool, json_body: bool = False) -> dict[str, str]:
        """Headers for one Horde call: the key only where it matters (jobs), never elsewhere."""
        # configured headers first: they must not replace the key or the Client-Agent
        out = {**self.backend.headers}
        if json_body:
            out["Content-Type"] = "application/json"
        if auth:
            out["apikey"] = self.backend.api_key or ANONYMOUS_KEY
        out["Client-Agent"] = self.client_agent
        return out

    def job_url(self, job_id: str) -> str:
        """The status / cancel URL of a job."""
        return f"{self.base_url}/v2/generate/text/status/{job_id}"

    def worker_filter(self, models: Sequence[str]) -> WorkerFilter:
        """The workers this backend's options let take a job on ``models``."""
        opts = self.options
        return WorkerFilter(tuple(models), opts.trusted_workers, tuple(opts.workers), opts.worker_blacklist)

    # --- the Horde's lists (cached) -----------------------------------------------------
    async def _get_list(self, transport: Transport, path: str) -> list[dict[str, Any]]:
        response = await transport.send(Upstream("GET", self.base_url + path, self.headers(auth=False)))
        try:
            body = await response.read()
        finally:
            response.close()
        if response.status >= 400:
            raise self.parse_error(response.status, body, response.headers)
        data = parse_json(body, self.name)
        if not isinstance(data, list):
            raise UpstreamError(f"upstream horde answered {path} with no list", kind="malformed")
        return [item for item in data if isinstance(item, dict)]

    async def refresh_workers(self, transport: Transport) -> None:
        """Read ``/v2/workers?type=text`` unless the cached copy is fresh."""
        await self.worker_list.refresh(transport, lambda: self._get_list(transport, "/v2/workers?type=text"))

    async def model_details(self, transport: Transport) -> list[dict[str, Any]]:
        """The Horde's live text models with their worker counts, queue and speed (cached)."""
        await self.model_list.refresh(transport, lambda: self._get_list(transport, "/v2/status/models?type=text"))
        models: list[HordeModel] = self.model_list.value or []  # type: ignore[assignment]
        return [model_detail(m) for m in models if m.get("name")]

    async def list_models(self, transport: Transport) -> Sequence[str | Mapping[str, Any]]:
        """The Horde's live text models with their worker counts ([] if it cannot be read)."""
        return list(await self.model_details(transport))

    # --- to the backend -----------------------------------------------------------------
    async def prepare(self, transport: Transport, req: Request) -> Request:
        """Render the chat (instruct template), then make sure the worker limits that
        ``build_request`` clamps to are fresh."""
        req = await super().prepare(transport, req)
        await self.refresh_workers(transport)
        return req

    def cached_limits(self, models: Sequence[str], warnings: list[str]) -> WorkerLimits | None:
        """The limits of the workers that may take a job on ``models``, from the cache only."""
        if not self.worker_list.read:
            return None
        if self.worker_list.value is None:
            warnings.append(
                f"the AI Horde worker list could not be read ({self.worker_list.error}); "
                "max_length and max_context_length were not clamped to the workers' limits"
            )
            return None
        workers: list[HordeWorker] = self.worker_list.value  # type: ignore[assignment]
        return worker_limits(workers, self.worker_filter(models), self.options.clamp_to)

    def budget(self, req: Request, models: Sequence[str], warnings: list[str]) -> tuple[int | None, int | None]:
        """``max_length`` and ``max_context_length`` to send: the client's, the model's or the
        backend's default, clamped to the workers that may take the job."""
        length = requested_length(req) or self.options.default_max_length
        context = requested_context(req) or model_option(req, "max_context_length") or self.options.max_context_length
        limits = self.cached_limits(models, warnings)
        which = f"{', '.join(models) or 'any model'}, {self.options.clamp_to}"
        return clamp_budget(length, context, limits, which, warnings)

    def build_request(self, req: Request) -> Upstream:
        native, more = self.params.apply(req.body, openai_fields=OPENAI_FIELDS)
        warnings = [*self.template_warnings(req), *more]
        models = horde_models(req, model_option(req, "models"))
        prompt = prompt_of(req)
        job_params: dict[str, Any] = dict(native.get("params") or {})
        length, context = self.budget(req, models, warnings)
        if length is not None:
            job_params["max_length"] = length
        if context is not None:
            job_params["max_context_length"] = context
        fit = prompt_fit_warning(prompt, length, context)
        if fit:
            warnings.append(fit)
        stops = stop_strings(req)
        if stops:
            job_params["stop_sequence"] = stops
        body: dict[str, Any] = {
            "prompt": prompt,
            "params": job_params,
            "models": models,
            "trusted_workers": self.options.trusted_workers,
            "slow_workers": self.options.slow_workers,
            "validated_backends": self.options.validated_backends,
        }
        body.update(self.extra_submit_fields())
        url = self.base_url + "/v2/generate/text/async"
        return Upstream("POST", url, self.headers(auth=True, json_body=True), body, False, tuple(warnings))

    def extra_submit_fields(self) -> dict[str, Any]:
        """Submit fields sent only when the config asks for them."""
        opts = self.options
        extra: dict[str, Any] = {}
        if opts.workers:
            extra["workers"] = list(opts.workers)
            extra["worker_blacklist"] = opts.worker_blacklist
        for flag in ("extra_slow_workers", "allow_downgrade", "disable_batching"):
            if getattr(opts, flag):
                extra[flag] = True
        if opts.proxied_account:
            extra["proxied_account"] = opts.proxied_account
        return extra

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
        return horde_error(status, body, headers, retry_after=retry_after_of(headers))

    # --- the exchange -------------------------------------------------------------------
    async def exchange(self, transport: Transport, upstream: Upstream, req: Request) -> AsyncIterator[Event]:
        """Submit, poll until done (Progress while waiting), then the answer; cancel on any
        early exit: the client gone (``aclose``/cancellation), timeout, impossible job."""
        opts = self.options
        deadline = transport.now() + opts.job_timeout
        submitting = asyncio.ensure_future(self._submit(transport, upstream))
        try:
            job_id = await asyncio.shield(submitting)
        except asyncio.CancelledError:
            # The client left while the Horde was taking the job: cancel it once its id is known.
            with contextlib.suppress(BaseException):
                await self._cancel(transport, await submitting)
            raise
        sent = upstream.json.get("params") or {}
        settled = False  # done, faulted or gone: nothing left to cancel
        try:
            delay = opts.poll_interval
            failures = 0
            while True:
                remaining = deadline - transport.now()
                if remaining <= 0:
                    raise timeout_error(job_id, opts.job_timeout)
                await transport.sleep(min(delay, remaining))
                delay = min(opts.max_poll_interval, delay * opts.poll_backoff)
                try:
                    response = await transport.send(Upstream("GET", self.job_url(job_id), self.headers(auth=True)))
                except UpstreamError:
                    failures += 1
                    if failures > opts.poll_retries:
                        raise
                    continue
                try:
                    body = await response.read()
                finally:
                    response.close()
                match response.status:
                    case 200:
                        failures = 0
                    case 404:
                        settled = True
                        raise expired_error(job_id)
                    case 429:
                        # Our own poll rate cannot cause this; a shared IP can. Wait as told.
                        wait = retry_after_of(response.headers) or opts.max_poll_interval
                        delay = max(delay, min(wait, max(deadline - transport.now(), 0)))
                        continue
                    case code if code >= 500:
                        failures += 1
                        if failures > opts.poll_retries:
                            raise self.parse_error(code, body, response.headers)
                        continue
                    case code:
                        raise self.parse_error(code, body, response.headers)
                status: HordeStatus = parse_json(body, self.name)
                if not isinstance(status, dict):
                    raise UpstreamError(f"upstream horde status of job {job_id} is not an object", kind="malformed")
                if status.get("faulted"):
                    settled = True
                    raise faulted_error(job_id, status)
                if status.get("done"):
                    settled = True
                    break
                if status.get("is_possible") is False:
                    raise impossible_error(job_id, upstream.json.get("models") or [])
                yield progress_of(status)
            for event in answer_events(job_id, status, sent.get("stop_sequence") or (), sent.get("max_length")):
                yield event
        finally:
            if not settled:
                await self._cancel(transport, job_id)

    async def _submit(self, transport: Transport, upstream: Upstream) -> str:
        response = await transport.send(upstream)
        try:
            body = await response.read()
        finally:
            response.close()
        if response.status >= 400:
            raise self.parse_error(response.status, body, response.headers)
        data = parse_json(body, self.name)
        job_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(job_id, str) or not job_id:
            raise UpstreamError("upstream horde accepted the job without an id", kind="malformed")
        return job_id

    async def _cancel(self, transport: Transport, job_id: str) -> None:
        """``DELETE`` the job. Shielded: it runs to the end even when the caller is being
        cancelled (a client that hung up), and never hides the error that ended the exchange."""

        async def send() -> None:
            response = await transport.send(Upstream("DELETE", self.job_url(job_id), self.headers(auth=True)))
            try:
                await response.read()
            finally:
                response.close()

        # best effort: a job nobody cancels expires on its own 20 minutes after submit
        with contextlib.suppress(Exception):
            await asyncio.shield(send())
