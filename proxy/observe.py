"""What the pipeline tells observers (metrics, the request log) about one request.

The pipeline fills a :class:`RequestRecord` as events pass and hands it to every observer at
the end; live events that matter while a request runs (queue progress) are passed on as they
come. Observers never change the answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from translators.events import Cost, Event, Finish, Progress, ReasoningDelta, TextDelta, ToolCallDelta, Usage


@dataclass(slots=True)
class RequestRecord:
    """One request, as measured."""

    request_id: str
    operation: str
    stream: bool
    started: float = field(default_factory=time.perf_counter)
    route: str = ""
    backend: str = ""
    backend_type: str = ""
    upstream_model: str = ""
    key_owner: str | None = None
    status: int = 200
    error_type: str | None = None
    error_kind: str | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    upstream_wait: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    usage_source: str | None = None
    finish_reasons: list[str] = field(default_factory=list)
    warnings: tuple[str, ...] = ()
    retries: int = 0
    fallbacks: int = 0
    client_disconnected: bool = False
    queue_position: int | None = None
    queue_wait: float | None = None
    cost: float = 0.0
    cost_unit: str | None = None
    # ``server.log_prompts``: keep the answer text (per choice) for the content log line.
    capture_content: bool = False
    answer: dict[int, list[str]] = field(default_factory=dict)

    def see(self, event: Event) -> None:
        """Account for one event on its way to the client."""
        match event:
            case TextDelta() | ReasoningDelta() | ToolCallDelta():
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                if self.capture_content and isinstance(event, TextDelta):
                    self.answer.setdefault(event.index, []).append(event.text)
            case Finish(reason):
                self.finish_reasons.append(reason)
            case Progress(position, wait):
                self.queue_position = position
                self.queue_wait = wait
            case Cost(amount, unit):
                self.cost += amount
                self.cost_unit = unit
            case Usage():
                pass
            case _:
                pass

    def use(self, usage: Usage) -> None:
        """Record the final usage."""
        self.prompt_tokens = usage.prompt_tokens
        self.completion_tokens = usage.completion_tokens
        self.cached_tokens = usage.cached_tokens
        self.usage_source = usage.source

    @property
    def duration(self) -> float:
        """Seconds from arrival to the end of the answer."""
        return (self.finished_at or time.perf_counter()) - self.started

    @property
    def ttft(self) -> float | None:
        """Seconds to the first generated token."""
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def overhead(self) -> float:
        """Seconds Rosetta itself added: the whole time less the time spent waiting upstream."""
        return max(self.duration - self.upstream_wait, 0.0)


class Observer(Protocol):
    """Something that watches requests (metrics, logs)."""

    def started(self, record: RequestRecord) -> None:
        """A request arrived."""

    def progress(self, record: RequestRecord, event: Progress | Cost) -> None:
        """A live queue or cost event."""

    def finished(self, record: RequestRecord) -> None:
        """The request ended (successfully or not)."""
