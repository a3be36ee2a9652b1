"""``mock``: a built-in model that answers with deterministic text at a configurable pace.

For trying Rosetta with no backend, for load tests and for the tests. It needs no network:
``exchange`` produces the answer itself, sleeping on the transport's clock between tokens.
Upstream models: ``lorem`` (a fixed passage, as many tokens as asked, 32 by default) and
``echo`` (the last user message or the prompt, word by word). A request whose ``tool_choice``
is ``required`` or names a function gets one call to that (or the first) tool with ``{}``.
"""

from __future__ import annotations

import re
from typing import Any, AsyncIterator, Iterable

from pydantic import BaseModel, ConfigDict, Field

from .base import Translator, Transport, Upstream
from .events import Event, Finish, FinishReason, Meta, TextDelta, ToolCallDelta
from .params import Param, ParamMap
from .request import Request, text_of

PASSAGE = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco "
    "laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in "
    "voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat "
    "cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum."
)
WORDS = re.compile(r"\s*\S+")
# The mock's "context": lorem talks until max_tokens, so an unbounded max_tokens (2**31) would
# have it build billions of words in memory and take the whole gateway down.
MAX_TOKENS = 32768

params = ParamMap(
    {
        "max_tokens": Param(range=(1, MAX_TOKENS)),
        "max_completion_tokens": Param(range=(1, MAX_TOKENS)),
        "n": Param(range=(1, 8)),
    },
    handled={"model", "messages", "prompt", "stream", "stream_options", "stop", "tools", "tool_choice"},
    ignored={
        "temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "logit_bias",
        "user", "logprobs", "top_logprobs", "response_format", "parallel_tool_calls", "metadata",
        "reasoning_effort", "service_tier", "store", "verbosity", "modalities", "prompt_cache_key",
        "prompt_cache_retention", "safety_identifier", "best_of", "echo", "suffix", "audio",
        "prediction", "web_search_options", "functions", "function_call",
    },
)


class Options(BaseModel):
    """``mock`` backend options."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tokens_per_second: float = Field(default=50.0, ge=0, description="0: no delay at all")
    default_max_tokens: int = Field(default=32, ge=1)
    first_token_delay: float = Field(default=0.0, ge=0, description="seconds before the first token")


def pieces(req: Request) -> list[str]:
    """The tokens the mock model will say for ``req`` (before max_tokens and stop)."""
    if req.upstream_model == "echo":
        if req.prompt is not None:
            source = req.prompt
        else:
            users = [m for m in req.messages if m.get("role") == "user"]
            source = text_of(users[-1].get("content")) if users else ""
        return WORDS.findall(source)
    return WORDS.findall(PASSAGE)


def cut_at_stop(text: str, stops: Iterable[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class Mock(Translator):
    """The built-in deterministic model."""

    name = "mock"
    framing = "json"
    params = params
    Options = Options
    default_url = "mock://local"

    def build_request(self, req: Request) -> Upstream:
        native, warnings = self.params.apply(req.body, openai_fields=frozenset())
        return Upstream("POST", "mock://local/generate", {}, native, req.stream, tuple(warnings))

    def tool_call(self, req: Request) -> tuple[str, str] | None:
        """The (call id, tool name) the mock answers with, if the request forces a tool."""
        tools = req.get("tools") or []
        choice = req.get("tool_choice")
        if not tools or choice in (None, "none", "auto"):
            return None
        if isinstance(choice, dict):
            name = (choice.get("function") or {}).get("name")
        else:
            name = (tools[0].get("function") or {}).get("name")
        return (f"call_mock_{req.id[-12:]}", str(name))

    async def exchange(self, transport: Transport, upstream: Upstream, req: Request) -> AsyncIterator[Event]:
        yield Meta(model=req.upstream_model)
        delay = 1.0 / self.options.tokens_per_second if self.options.tokens_per_second else 0.0
        if self.options.first_token_delay:
            await transport.sleep(self.options.first_token_delay)
        limit = upstream.json.get("max_completion_tokens") or upstream.json.get("max_tokens")
        limit = int(limit or self.options.default_max_tokens)
        call = self.tool_call(req)
        for index in range(int(upstream.json.get("n") or 1)):
            if call is not None:
                yield ToolCallDelta(0, call[0], call[1], "{}", index)
                yield Finish("tool_calls", index)
                continue
            words = pieces(req)
            if req.upstream_model != "echo":
                # lorem talks until it runs out of tokens
                words = words * (limit // max(len(words), 1) + 2)
            truncated = len(words) > limit
            text, stopped = cut_at_stop("".join(words[:limit]), req.stop)
            reason: FinishReason = "length" if truncated and not stopped else "stop"
            sent = 0
            for word in words[:limit]:
                if sent >= len(text):
                    break
                piece = word[: len(text) - sent]
                sent += len(piece)
                if delay:
                    await transport.sleep(delay)
                yield TextDelta(piece, index)
            yield Finish(reason, index)

    async def list_models(self, transport: Any) -> list[str]:
        return ["lorem", "echo"]
