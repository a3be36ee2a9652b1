"""AI Horde wire shapes and what they mean: status answers → events, error bodies → errors.

The ``horde`` translator (``horde.py``) drives the submit → poll → cancel exchange; this module
holds the pure interpretation of what the Horde answers, as recorded from a real AI Horde server
(Haidra-Org/AI-Horde, Aug 2026; ``tests/transcripts/horde/``).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence, TypedDict
from urllib.parse import quote

import orjson

from .errors import UpstreamError, upstream_error
from .events import Cost, Event, Finish, FinishReason, Meta, Progress, TextDelta
from .horde_request import HORDE_DEFAULT_MAX_LENGTH
from .stops import StopCutter

# The Horde gives no token counts and no finish reason. A generation that ends without a stop
# string is judged "length" when its UTF-8 size, at about 4 bytes a token (English BPE; CJK
# comes out near one token a character), reaches this share of the ``max_length`` asked for.
# Guessing "length" for an answer that nearly filled its budget is the cheaper mistake.
BYTES_PER_TOKEN = 4.0
LENGTH_SHARE = 0.75


class HordeGeneration(TypedDict, total=False):
    """One ``generations[]`` entry of a status answer."""

    text: str
    seed: int
    worker_id: str
    worker_name: str
    model: str
    state: Literal["ok", "censored", "csam", "faulted"]
    gen_metadata: list[dict[str, Any]]


class HordeStatus(TypedDict, total=False):
    """``GET /v2/generate/text/status/{id}`` (also what ``DELETE`` returns)."""

    generations: list[HordeGeneration]
    finished: int
    processing: int
    restarted: int
    waiting: int
    done: bool
    faulted: bool
    wait_time: int
    queue_position: int
    kudos: float
    is_possible: bool


# --- errors -------------------------------------------------------------------------------

# The Horde's native field names (as its validation errors spell them) → the client's field.
NATIVE_PARAM_NAMES: dict[str, str] = {
    "prompt": "prompt",
    "models": "model",
    "params.max_length": "max_tokens",
    "params.max_context_length": "max_context_length",
    "params.n": "n",
    "params.temperature": "temperature",
    "params.top_p": "top_p",
    "params.top_k": "top_k",
    "params.stop_sequence": "stop",
    "params.sampler_order": "sampler_order",
}
# Return codes (``rc``) that blame one request field.
RC_PARAMS: dict[str, str] = {
    "MissingPrompt": "prompt",
    "CorruptPrompt": "prompt",
    "TokenOverflow": "max_tokens",
    "TooManyStopSequences": "stop",
    "ExcessiveStopSequence": "stop",
    "MissingFullSamplerOrder": "sampler_order",
}
# Fields Rosetta itself sets (not the client): the Horde refusing them is the gateway's fault.
GATEWAY_FIELDS = frozenset({"apikey", "Client-Agent"})
# Return codes that mean the Horde cannot serve anyone right now: try again later.
RC_UNAVAILABLE = frozenset({"MaintenanceMode", "RequestExpired", "NoValidWorkers"})


def horde_error(status: int, body: bytes, headers: Mapping[str, str], *, retry_after: float | None) -> UpstreamError:
    """The error for an AI Horde HTTP error answer.

    Bodies are ``{"message", "rc"}``, or ``{"message", "errors": {field: reason}}`` for a payload
    validation failure (400). Rate limits stay 429 with the Horde's ``Retry-After``; a rejected
    API key is 401; a 400 names the client's field where the Horde named one."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        text = body.decode("utf-8", "replace").strip()[:200]
        # An HTML 404 is Flask's answer to a path that is not the Horde API: a wrong base URL.
        mapped = 502 if status == 404 else None
        err = upstream_error(status, text, backend_type="horde", retry_after=retry_after)
        if mapped is not None:
            err.status = mapped
            err.type = "upstream_error"
            err.message = f"upstream horde has no such API path (HTTP 404); check the backend url: {text[:80]}"
        return err
    message = str(data.get("message") or "").strip()
    rc = data.get("rc") if isinstance(data.get("rc"), str) else None
    errors = data.get("errors") if isinstance(data.get("errors"), dict) else {}
    param: str | None = None
    if errors:
        field, reason = next(iter(errors.items()))
        message = f"{message}: {field}: {reason}" if message else f"{field}: {reason}"
        if field in GATEWAY_FIELDS:
            return UpstreamError(f"the AI Horde rejected the gateway's request ({message})", kind="4xx", status=502)
        param = NATIVE_PARAM_NAMES.get(str(field), str(field).removeprefix("params."))
    elif rc in RC_PARAMS:
        param = RC_PARAMS[rc]
    if status == 429:
        return UpstreamError(
            f"the AI Horde rate limit was hit ({message or 'too many requests'})",
            kind="4xx", status=429, type="rate_limit_error", code="rate_limit_exceeded",
            retry_after=retry_after,
        )
    if status == 401:
        return UpstreamError(
            f"the AI Horde rejected this backend's API key ({message})",
            kind="4xx", status=401, type="authentication_error", code="invalid_api_key",
        )
    if rc in RC_UNAVAILABLE or status in (410, 503):
        return UpstreamError(
            f"the AI Horde cannot serve this request now ({rc or status}): {message}",
            kind="5xx", status=503, retry_after=retry_after,
        )
    err = upstream_error(status, message, backend_type="horde", code=rc, retry_after=retry_after, param=param)
    return err


def expired_error(job_id: str) -> UpstreamError:
    """A status poll answered 404: the Horde dropped the job (it expires 20 minutes after submit)."""
    return UpstreamError(
        f"the AI Horde no longer knows job {job_id}: it expired (20 minutes after submit) or was removed",
        kind="5xx", status=503,
    )


def faulted_error(job_id: str, status: HordeStatus) -> UpstreamError:
    """``faulted: true`` (also ``done: true``, no generations): the workers failed the job."""
    restarts = int(status.get("restarted") or 0)
    return UpstreamError(
        f"the AI Horde job {job_id} faulted: its workers failed it"
        + (f" ({restarts} restarts)" if restarts else ""),
        kind="5xx", status=503,
    )


def impossible_error(job_id: str, models: Sequence[str]) -> UpstreamError:
    """``is_possible: false``: no worker now online can serve the request (model or limits)."""
    which = ", ".join(models) if models else "any model"
    return UpstreamError(
        f"no AI Horde worker online can serve this request (models: {which}); ask for fewer "
        f"tokens or less context, or another model (job {job_id} was cancelled)",
        kind="5xx", status=503,
    )


def timeout_error(job_id: str, seconds: float) -> UpstreamError:
    """The configured total wait ran out (the job is cancelled)."""
    return UpstreamError(
        f"the AI Horde did not finish job {job_id} within {seconds:g} s (it was cancelled)",
        kind="timeout", status=504,
    )


# --- status → events ----------------------------------------------------------------------


def progress_of(status: HordeStatus) -> Progress:
    """The keep-alive event for a status answer of a job still waiting or running."""
    return Progress(
        queue_position=_int(status.get("queue_position")),
        wait_seconds=_float(status.get("wait_time")),
        detail={
            "kudos": _float(status.get("kudos")),
            "waiting": _int(status.get("waiting")),
            "processing": _int(status.get("processing")),
            "finished": _int(status.get("finished")),
            "restarted": _int(status.get("restarted")),
        },
    )


def finish_of(generation: HordeGeneration, stopped: bool, text: str, max_length: int) -> FinishReason:
    """The finish reason the Horde does not report (see BYTES_PER_TOKEN)."""
    if generation.get("state") in ("censored", "csam"):
        return "content_filter"
    if stopped:
        return "stop"
    estimated = len(text.encode("utf-8")) / BYTES_PER_TOKEN
    return "length" if estimated >= LENGTH_SHARE * max_length else "stop"


def answer_events(
    job_id: str, status: HordeStatus, stops: Sequence[str], max_length: int | None
) -> Iterator[Event]:
    """Events for a ``done`` status: Meta (worker, model and kudos as headers), each generation's
    text with stop strings cut, its Finish, then the kudos Cost."""
    generations = [g for g in status.get("generations") or () if isinstance(g, dict)]
    if not generations:
        raise UpstreamError(f"the AI Horde finished job {job_id} with no generations", kind="malformed", status=502)
    kudos = _float(status.get("kudos")) or 0.0
    workers = _unique(g.get("worker_name") for g in generations)
    models = _unique(g.get("model") for g in generations)
    yield Meta(
        upstream_id=job_id,
        model=models[0] if models else None,
        headers={
            "x-rosetta-horde-worker": header_value(", ".join(workers)),
            "x-rosetta-horde-model": header_value(", ".join(models)),
            "x-rosetta-horde-kudos": f"{kudos:g}",
        },
    )
    limit = max_length or HORDE_DEFAULT_MAX_LENGTH
    for index, generation in enumerate(generations):
        cutter = StopCutter(stops)
        text = cutter.feed(str(generation.get("text") or "")) + cutter.flush()
        stopped = cutter.stopped
        if text:
            yield TextDelta(text, index)
        yield Finish(finish_of(generation, stopped, text, limit), index)
    yield Cost(kudos, "kudos")


# --- small helpers ------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def header_value(text: str, limit: int = 200) -> str:
    """A safe HTTP header value from worker-chosen text: no control characters (no header
    injection), non-ASCII percent-encoded (headers are latin-1 on the wire)."""
    return quote(_CONTROL.sub(" ", text)[:limit], safe=" !#$&'()*+,-./:;=?@[]_~|<>{}^`\"\\%")


def _unique(values: Iterable[Any]) -> list[str]:
    return list(dict.fromkeys(str(v) for v in values if v))


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
