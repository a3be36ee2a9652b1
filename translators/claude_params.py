"""Claude request fields that need more than a rename (used by ``claude.py``): max_tokens,
thinking and reasoning_effort, the sampling rules, tools and tool_choice, response_format and
stop sequences. Each function returns new values and appends what it changed to ``warnings``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .claude_messages import Block
from .errors import InvalidRequest, Unsupported
from .request import Request

MIN_THINKING_BUDGET = 1024
EFFORT_SHARE: dict[str, float] = {"minimal": 0.0, "low": 0.10, "medium": 0.25, "high": 0.50, "xhigh": 0.75, "max": 0.95}
# reasoning_effort on adaptive-thinking models: Claude's own effort levels (it has no "minimal")
ADAPTIVE_EFFORT: dict[str, str] = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "max"}
THINKING_TYPES = ("enabled", "adaptive", "between_tools", "disabled")
THINKING_ON = frozenset({"enabled", "adaptive", "between_tools"})
TOOL_CHOICES: dict[str, Block] = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


def max_tokens_of(req: Request, default: int) -> tuple[int, bool]:
    """Claude's required max_tokens (the model's ``default`` when the client sent none), and
    whether the client chose it."""
    for value in (req.max_tokens, req.get("max_completion_tokens"), req.get("max_tokens")):
        if value is not None:
            return int(value), True
    return default, False


@dataclass(frozen=True, slots=True)
class Thinking:
    """What the request's thinking settings become: the ``thinking`` object, an
    ``output_config.effort`` (adaptive models), and the max_tokens that fits the budget."""

    config: Block | None
    effort: str | None
    max_tokens: int

    @property
    def on(self) -> bool:
        """Whether Claude will think (which rules out prefill, sampling and forced tools)."""
        return self.config is not None and self.config.get("type") in THINKING_ON


def client_thinking(native: Any, max_tokens: int, explicit: bool, warnings: list[str]) -> Thinking:
    """A client's own ``thinking`` object, passed through (a budget must fit max_tokens)."""
    if not isinstance(native, Mapping) or native.get("type") not in THINKING_TYPES:
        raise InvalidRequest(f"thinking must be an object whose type is one of {', '.join(THINKING_TYPES)}", param="thinking")
    if native["type"] == "enabled":
        budget = native.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < MIN_THINKING_BUDGET:
            raise InvalidRequest("thinking.budget_tokens must be an integer of at least 1024", param="thinking")
        if budget >= max_tokens:
            if explicit:
                raise InvalidRequest("thinking.budget_tokens must be less than max_tokens", param="thinking")
            warnings.append(f"max_tokens raised to {budget + max_tokens} to fit the thinking budget")
            max_tokens += budget
    return Thinking(dict(native), None, max_tokens)


def thinking_of(req: Request, max_tokens: int, explicit: bool, adaptive: bool, warnings: list[str]) -> Thinking:
    """Claude's thinking: the client's ``thinking`` object, else one from ``reasoning_effort``:
    adaptive thinking with that effort on models that think adaptively (Claude 4.6+), else a
    budget of max(1024, share x max_tokens) (see EFFORT_SHARE)."""
    native, effort = req.get("thinking"), req.get("reasoning_effort")
    if native is not None:
        if effort is not None:
            warnings.append("reasoning_effort was not used: the request sets thinking")
        return client_thinking(native, max_tokens, explicit, warnings)
    if effort is None or effort == "none":
        return Thinking(None, None, max_tokens)
    share = EFFORT_SHARE.get(str(effort))
    if share is None:
        raise InvalidRequest(f"reasoning_effort {effort!r} is not one of none, {', '.join(EFFORT_SHARE)}", param="reasoning_effort")
    if adaptive:
        # display "summarized": the newest models omit the thinking text unless asked for it
        return Thinking({"type": "adaptive", "display": "summarized"}, ADAPTIVE_EFFORT[str(effort)], max_tokens)
    if max_tokens <= MIN_THINKING_BUDGET:
        warnings.append(f"max_tokens raised to {max_tokens + MIN_THINKING_BUDGET}: Claude's thinking needs at least 1024 tokens")
        max_tokens += MIN_THINKING_BUDGET
    budget = max(MIN_THINKING_BUDGET, int(max_tokens * share))
    return Thinking({"type": "enabled", "budget_tokens": budget}, None, max_tokens)


def sampling_policy(native: dict[str, Any], *, thinking_on: bool, sampling: bool, exclusive: bool, warnings: list[str]) -> None:
    """Claude's sampling rules on the mapped fields (``native`` is our own new dict): the
    newest models take no sampling parameters at all, no model takes them while thinking, and
    some take temperature or top_p but not both (temperature wins)."""
    if not sampling or thinking_on:
        why = "Claude does not take it with thinking on" if sampling else "this model takes no sampling parameters"
        for name in ("temperature", "top_p", "top_k"):
            if native.pop(name, None) is not None:
                warnings.append(f"{name} was not sent: {why}")
    elif exclusive and "temperature" in native and "top_p" in native:
        del native["top_p"]
        warnings.append("top_p was not sent: this model takes temperature or top_p, not both")


def tools_of(req: Request, thinking_on: bool, strict_ok: bool, warnings: list[str]) -> tuple[list[Block], Block | None]:
    """OpenAI function tools and tool_choice as Claude ``tools`` and ``tool_choice``."""
    tools: list[Block] = []
    for number, tool in enumerate(req.get("tools", ())):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if tool.get("type") != "function" or not isinstance(function, Mapping):
            raise Unsupported(f"tools[{number}]: only function tools reach Claude", param="tools")
        if not function.get("name"):
            raise InvalidRequest(f"tools[{number}].function.name is required", param="tools")
        native: Block = {"name": function["name"], "input_schema": function.get("parameters") or {"type": "object", "properties": {}}}
        if function.get("description"):
            native["description"] = function["description"]
        if function.get("strict") is True:
            if strict_ok:
                native["strict"] = True
            else:
                warnings.append(f"tools[{number}].function.strict was not sent: this model has no strict tool use")
        if isinstance(tool.get("cache_control"), Mapping):
            native["cache_control"] = dict(tool["cache_control"])
        tools.append(native)
    choice, parallel = req.get("tool_choice"), req.get("parallel_tool_calls")
    if not tools:
        if choice not in (None, "none", "auto"):
            raise InvalidRequest("tool_choice needs tools", param="tool_choice")
        return [], None
    native_choice: Block | None
    if choice is None:
        native_choice = {"type": "auto"} if parallel is False else None
    elif isinstance(choice, str) and choice in TOOL_CHOICES:
        native_choice = dict(TOOL_CHOICES[choice])
    elif isinstance(choice, Mapping) and choice.get("type") == "function" and (choice.get("function") or {}).get("name"):
        native_choice = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise Unsupported(f"tool_choice {choice!r} has no Claude equivalent", param="tool_choice")
    if native_choice is not None and parallel is False and native_choice["type"] != "none":
        native_choice["disable_parallel_tool_use"] = True
    if thinking_on and native_choice is not None and native_choice["type"] in ("any", "tool"):
        raise Unsupported("Claude cannot be forced to use a tool while thinking; use tool_choice auto", param="tool_choice")
    return tools, native_choice


def output_format_of(req: Request, structured: bool) -> Block | None:
    """``response_format`` as Claude's ``output_config.format`` (structured outputs), or a clear 400."""
    fmt = req.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    match kind:
        case None | "text":
            return None
        case "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema")
            if not isinstance(schema, Mapping):
                raise InvalidRequest("response_format.json_schema.schema must be an object", param="response_format")
            if not structured:
                raise Unsupported("this Claude model has no structured outputs (json_schema)", param="response_format")
            return {"type": "json_schema", "schema": schema}
        case "json_object":
            raise Unsupported("Claude has no JSON mode without a schema; send a json_schema", param="response_format")
        case _:
            raise InvalidRequest(f"response_format type {kind!r} is unknown", param="response_format")


def stop_sequences_of(req: Request, warnings: list[str]) -> list[str]:
    """``stop`` as ``stop_sequences``, without the whitespace-only ones Claude rejects."""
    stops = list(req.stop)
    if not stops:
        value = req.get("stop")
        stops = [value] if isinstance(value, str) else list(value or ())
    kept = [stop for stop in stops if stop.strip()]
    if any(stop and not stop.strip() for stop in stops):  # "" asks for nothing: no warning for it
        warnings.append("stop sequences made only of whitespace were not sent: Claude rejects them")
    return kept


def penalty_warnings(req: Request, warnings: list[str]) -> None:
    """Claude has no repetition penalties; 0 (SillyTavern always sends it) asks for nothing."""
    for name in ("presence_penalty", "frequency_penalty"):
        if req.get(name, 0) != 0:
            warnings.append(f"{name} is ignored by this backend")
