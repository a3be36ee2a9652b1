"""Intake: an HTTP request body → the validated :class:`Request` a translator gets.

Reading the JSON (415/413/400), route defaults merged under the client's values, edge
validation, and the input the translator takes (a prompt becomes a user message for a
chat-only backend). Used by the pipeline and by tests that build requests the same way.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Mapping

import orjson
from aiohttp import web

from translators.base import Translator
from translators.errors import InvalidRequest, PayloadTooLarge, Unsupported, UnsupportedMediaType
from translators.params import ParamMap
from translators.request import Operation, Request

from .validate import PARSERS

ID_PREFIX: dict[Operation, str] = {"chat": "chatcmpl-", "completion": "cmpl-"}
# OpenAI's two names for one limit: a client's max_tokens beats a default max_completion_tokens.
SYNONYMS: dict[str, str] = {"max_completion_tokens": "max_tokens"}


def merge_params(defaults: Mapping[str, Any], body: Mapping[str, Any], params: ParamMap | None = None) -> dict[str, Any]:
    """Route defaults under the client's body: a client value wins, a client null does not.

    A client value also wins over a default that names the same field differently (SillyTavern's
    ``repetition_penalty`` for a default written as llama.cpp's ``repeat_penalty``): ``params``,
    the translator's table, says which names set the same native field."""

    def field(name: str) -> str:
        spec = params.mapped.get(name) if params is not None else None
        target = spec.to if spec is not None and spec.to else name
        return SYNONYMS.get(target, target)

    asked = {field(key) for key, value in body.items() if value is not None}
    merged = {key: value for key, value in defaults.items() if field(key) not in asked}
    for key, value in body.items():
        if value is not None or key not in merged:
            merged[key] = value
    return merged


async def read_json(request: web.Request, limit: int) -> Any:
    """The request's JSON body: 415 for another content type, 413 past the size limit, 400 for
    JSON that does not parse."""
    kind = request.headers.get("Content-Type", "")
    if kind and kind.split(";", 1)[0].strip().lower() not in ("application/json", "text/json"):
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {kind!r}")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(
            f"the request body is larger than this gateway accepts ({limit} bytes)"
        ) from exc
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({exc.msg} at position {exc.pos}). "
            "The body must be a JSON object."
        ) from None


def request_from_body(
    body: Mapping[str, Any],
    operation: Operation,
    *,
    request_id: str,
    model: str,
    upstream_model: str,
    translator: Translator,
    options: Any,
    defaults: Mapping[str, Any] | None = None,
) -> Request:
    """The Request for ``body``: ``defaults`` merged under it, validated (400s name the
    param), and adapted to what ``translator`` takes."""
    merged = merge_params(defaults or {}, body, translator.params)
    parsed = PARSERS[operation](merged)
    req = Request(
        id=request_id,
        operation=operation,
        model=model,
        upstream_model=upstream_model,
        body=merged,
        stream=parsed.stream,
        include_usage=parsed.include_usage,
        messages=parsed.messages,
        stop=parsed.stop,
        max_tokens=parsed.max_tokens,
        n=parsed.n,
        options=options,
    )
    return adapt(req, translator, parsed.prompt)


def adapt(req: Request, translator: Translator, prompt: Any) -> Request:
    """Give the translator the input it takes: a prompt to a chat-only backend becomes one user
    message; a chat to a text backend is left for its ``prepare`` (the instruct template)."""
    if req.operation == "chat":
        return req
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        if translator.multi_prompt:
            return req
        raise Unsupported(
            "this backend takes one text prompt: several prompts or token arrays are not supported", param="prompt"
        )
    if "completion" in translator.accepts:
        return replace(req, prompt=prompt)
    return replace(req, messages=({"role": "user", "content": prompt},))


def new_request_id(operation: Operation) -> str:
    """A fresh response id (``chatcmpl-…`` or ``cmpl-…``)."""
    return ID_PREFIX[operation] + os.urandom(16).hex()
