"""What KoboldAI United and KoboldCpp answer, read into :class:`Generation` records.

Facts (../shared/protocols/local.md §1.3, §2.5-2.6; the KoboldCpp 1.76 captures):

- ``/api/v1/generate`` answers ``{"results": [{"text", "finish_reason"}]}``; United gives no
  finish reason; newer KoboldCpp adds ``prompt_tokens`` and ``completion_tokens``.
- ``/api/extra/generate/stream`` sends SSE events all named ``message`` with
  ``{"token": "<text, one or several tokens>", "finish_reason": ...}``: the string ``"null"``
  (1.76) or JSON null (newer) until the last event, which says ``"stop"`` (EOS) or ``"length"``
  (everything else: max_length, a stop sequence, an abort). No ``[DONE]``: the server closes.
- Errors are ``{"detail": {"msg", "type"}}`` (United validation: ``{"detail": {field: [..]}}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncGenerator, AsyncIterator

import orjson

from .base import Frame
from .errors import UpstreamError
from .events import Event, FinishReason, TextDelta, Usage
from .stops import StopCutter


@dataclass
class Generation:
    """What one native generation (one choice) produced, filled while it is read."""

    index: int = 0
    raw: str = ""  # as the server sent it, stop strings included
    sent: str = ""  # what the client got
    stop: str | None = None  # the stop string Rosetta cut at
    server_reason: str | None = None  # the server's finish_reason once it ended the generation
    completion_tokens: int | None = None  # counted by the server (newer KoboldCpp)
    prompt_tokens: int | None = None


def finish_reason(gen: Generation, max_length: int | None, completion_tokens: int | None) -> FinishReason:
    """The OpenAI finish reason, not the server's: KoboldCpp reports stop-string hits and
    aborts as "length"; "length" is only right when max_length tokens were produced."""
    if gen.stop is not None or gen.server_reason == "stop":
        return "stop"
    if completion_tokens is not None and max_length is not None:
        return "length" if completion_tokens >= max_length else "stop"
    return "length" if gen.server_reason == "length" else "stop"


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def generations_of(body: Any, stops: tuple[str, ...]) -> list[Generation]:
    """The choices of a whole ``/api/v1/generate`` answer, stop strings cut."""
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list) or not results:
        raise UpstreamError("upstream kobold answer has no 'results' list", kind="malformed")
    out = []
    for index, result in enumerate(results):
        result = result if isinstance(result, dict) else {}
        raw = result.get("text")
        raw = raw if isinstance(raw, str) else ""
        cutter = StopCutter(stops)
        sent = cutter.feed(raw) + cutter.flush()
        reason = result.get("finish_reason")
        out.append(
            Generation(
                index=index,
                raw=raw,
                sent=sent,
                stop=cutter.stop,
                server_reason=reason if isinstance(reason, str) else None,
                completion_tokens=_count(result.get("completion_tokens")),
                prompt_tokens=_count(result.get("prompt_tokens")),
            )
        )
    return out


def server_usage(gens: list[Generation]) -> Usage | None:
    """Usage from the counts newer KoboldCpp puts in each result, if it did."""
    if not gens or any(g.completion_tokens is None or g.prompt_tokens is None for g in gens):
        return None
    return Usage(gens[0].prompt_tokens or 0, sum(g.completion_tokens or 0 for g in gens))


async def stream_text(frames: AsyncIterator[Frame], stops: tuple[str, ...], gen: Generation) -> AsyncGenerator[Event, None]:
    """The text events of a KoboldCpp stream with stop strings cut and a held-back tail, so a
    stop string is never sent half-way; ``gen`` records the text and how it ended. Returns at
    the server's last event, or at a stop string (the server may still be generating)."""
    cutter = StopCutter(stops)
    async for frame in frames:
        match frame.event:
            case "message" | None:  # KoboldCpp names every event "message"
                pass
            case _:  # no other event name is sent; tolerated, not read
                continue
        try:
            data = orjson.loads(frame.data)
        except orjson.JSONDecodeError:
            raise UpstreamError("upstream kobold sent a malformed stream event", kind="malformed") from None
        if not isinstance(data, dict):
            raise UpstreamError("upstream kobold sent a stream event that is not an object", kind="malformed")
        token = data.get("token")
        if isinstance(token, str) and token:
            gen.raw += token
            text = cutter.feed(token)
            if text:
                gen.sent += text
                yield TextDelta(text, gen.index)
        match data.get("finish_reason"):
            case None | "null":  # 1.76: the string "null" on all events but the last; newer: null
                pass
            case "stop" | "length" | "tool_calls" as reason:
                gen.server_reason = reason
            case other:
                gen.server_reason = str(other)
        if cutter.stopped:
            gen.stop = cutter.stop
            return
        if gen.server_reason is not None:
            break
    tail = cutter.flush()
    if tail:
        gen.sent += tail
        yield TextDelta(tail, gen.index)
    if gen.server_reason is None:
        raise UpstreamError("upstream kobold stream ended before the answer finished", kind="cut_mid_stream")


def detail_message(data: Any) -> tuple[str | None, str | None]:
    """Message and type of a KoboldAI/KoboldCpp error body ``{"detail": {...}}``."""
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, dict):
        if "msg" in detail:
            return str(detail["msg"]), (str(detail["type"]) if detail.get("type") else None)
        # United's validation errors: {"detail": {"<field>": ["<message>", ...]}}
        return "; ".join(
            f"{field}: {' '.join(map(str, problem)) if isinstance(problem, list) else problem}"
            for field, problem in detail.items()
        ), None
    if isinstance(detail, str):
        return detail, None
    return None, None
