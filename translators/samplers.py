"""Request building shared by the OpenAI-style servers that take sampler extras:
text-generation-webui (``ooba``), TabbyAPI (``tabby``) and Mancer (``mancer``).

Each of those backends declares a ParamMap whose aliases (SillyTavern's names and the other
servers' names for one sampler, e.g. ``rep_pen`` for ``repetition_penalty``) rename to the
server's own field. SillyTavern sends several names for one field in the same body; the server's
own name must win whatever the key order, and names that disagree are reported, not guessed.
"""

from __future__ import annotations

from typing import Any, Mapping

from .base import Transport, Upstream, get_json, openai_model_ids
from .params import ParamMap
from .request import OPENAI_FIELDS, Request


def is_alias(params: ParamMap, name: str) -> bool:
    """Whether ``name`` is another name for a field the table sends under its own name."""
    spec = params.mapped.get(name)
    return spec is not None and spec.to is not None and spec.to != name


def canonical_last(params: ParamMap, body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with every alias moved before the server's own names: ``ParamMap.apply`` writes
    fields in order, so the own name wins when a client sends both."""
    aliases = {k: v for k, v in body.items() if is_alias(params, k)}
    return {**aliases, **{k: v for k, v in body.items() if k not in aliases}}


def alias_conflicts(params: ParamMap, body: Mapping[str, Any]) -> list[str]:
    """Warnings for names of one native field that carry different values."""
    by_target: dict[str, list[tuple[str, Any]]] = {}
    for name, value in canonical_last(params, body).items():
        spec = params.mapped.get(name)
        if spec is None or value is None:
            continue
        by_target.setdefault(spec.to or name, []).append((name, value))
    warnings = []
    for target, pairs in by_target.items():
        if any(value != pairs[0][1] for _, value in pairs[1:]):
            names = " and ".join(name for name, _ in pairs)
            warnings.append(f"{names} disagree; sent {target}={pairs[-1][1]!r} (from {pairs[-1][0]})")
    return warnings


def native_fields(params: ParamMap, req: Request, *, forward_unknown: bool) -> tuple[dict[str, Any], list[str]]:
    """The native fields for ``req.body`` (model, messages/prompt and stream excluded: see
    :func:`openai_style_request`) and the warnings about what was changed or dropped.

    ``params`` must be built with ``forward_unknown=True``; fields nobody knows are sent as they
    are (the servers ignore what they do not read) unless the backend's option says otherwise."""
    body = dict(req.body)
    warnings: list[str] = []
    if not forward_unknown:
        unknown = sorted(
            k for k, v in body.items() if v is not None and k not in OPENAI_FIELDS and not params.accounts_for(k)
        )
        if unknown:
            warnings.append("fields this backend does not take were not sent: " + ", ".join(unknown))
            body = {k: v for k, v in body.items() if k not in unknown}
    warnings += alias_conflicts(params, body)
    native, more = params.apply(canonical_last(params, body), openai_fields=OPENAI_FIELDS)
    # The pipeline's normalized values are authoritative (route defaults, max_completion_tokens).
    if req.max_tokens is not None:
        native["max_tokens"] = req.max_tokens
    if req.stop:
        native["stop"] = list(req.stop)
    return native, warnings + more


def openai_style_request(
    req: Request, native: dict[str, Any], base: str, headers: Mapping[str, str], warnings: list[str]
) -> Upstream:
    """The OpenAI-shaped POST for ``req``: ``native`` plus model, messages or prompt, and the
    stream flags (usage is always asked for on streams). ``base`` ends before ``/completions``."""
    body = {**native, "model": req.upstream_model}
    if req.operation == "chat":
        body["messages"] = list(req.messages)
        url = base + "/chat/completions"
    else:
        body["prompt"] = req.body.get("prompt") if req.prompt is None else req.prompt
        url = base + "/completions"
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {**(req.get("stream_options") or {}), "include_usage": True}
    return Upstream("POST", url, {"Content-Type": "application/json", **headers}, body, req.stream, tuple(warnings))


def server_root(url: str, api_path: str) -> str:
    """The server's root URL whether config gave it with or without the API path
    (``http://host:5000`` and ``http://host:5000/v1`` are the same server)."""
    root = url.rstrip("/")
    if root.endswith(api_path):
        root = root[: -len(api_path)]
    return root


def model_option(req: Request, name: str) -> Any:
    """A per-model option: ``req.options`` is the validated ModelOptions (or a plain mapping)."""
    options = req.options
    if isinstance(options, Mapping):
        return options.get(name)
    return getattr(options, name, None)


def token_list(value: Any) -> Any:
    """Token ids as an int list (``"1, 2,3"`` → ``[1, 2, 3]``); other values unchanged."""
    if isinstance(value, str):
        return [int(part) for part in value.replace(" ", "").split(",") if part.strip().lstrip("-").isdigit()]
    return value


def token_string(value: Any) -> Any:
    """Token ids as a comma-separated string (``[1, 2]`` → ``"1,2"``); other values unchanged."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(int(v)) for v in value)
    return value


async def list_openai_models(transport: Transport, url: str, headers: Mapping[str, str]) -> list[str]:
    """The ids of an OpenAI-shaped model list at ``url``; [] when the server will not say."""
    return openai_model_ids(await get_json(transport, url, headers))
