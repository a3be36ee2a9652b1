"""OpenAI field → native field mapping: one table per translator, one range policy for all.

A translator declares ``params = ParamMap({...})`` at the top of its module. ``apply`` turns
the OpenAI body into native fields and reports every value it had to change as a warning
(the proxy logs them and returns them in ``x-rosetta-warning``); nothing is changed silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from .errors import Unsupported


@dataclass(frozen=True, slots=True)
class Param:
    """How one OpenAI field reaches the backend.

    ``to``: native name, dotted for nesting (``options.temperature``); None keeps the name.
    ``range``: inclusive bounds; out-of-range values are clamped with a warning.
    ``convert``: applied after clamping (e.g. ``list`` for ``stop``).
    """

    to: str | None = None
    range: tuple[float | None, float | None] | None = None
    convert: Callable[[Any], Any] | None = None


# Values that ask for nothing, so a backend that cannot honour the field loses nothing.
_NEUTRAL: dict[str, Callable[[Any], bool]] = {
    "n": lambda v: v == 1,
    "best_of": lambda v: v == 1,
    "logprobs": lambda v: v in (False, 0),
    "top_logprobs": lambda v: v == 0,
    "logit_bias": lambda v: v == {},
    "tools": lambda v: v == [],
    "functions": lambda v: v == [],
    "tool_choice": lambda v: v in ("none", "auto"),
    "parallel_tool_calls": lambda v: True,
    "response_format": lambda v: isinstance(v, Mapping) and v.get("type") == "text",
    "echo": lambda v: v is False,
    "suffix": lambda v: v == "",
    "modalities": lambda v: v == ["text"],
    "stream_options": lambda v: True,
    # SillyTavern always sends these; zero penalties and seed -1 ("random") ask for nothing
    "presence_penalty": lambda v: v == 0,
    "frequency_penalty": lambda v: v == 0,
    "seed": lambda v: v == -1,
}


def is_neutral(name: str, value: Any) -> bool:
    """True when ``value`` for field ``name`` asks for nothing beyond the default."""
    if value is None:
        return True
    check = _NEUTRAL.get(name)
    return bool(check and check(value))


def clamp(name: str, value: Any, bounds: tuple[float | None, float | None], warnings: list[str]) -> Any:
    """The one out-of-range policy: clamp into ``bounds`` and say so."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    low, high = bounds
    if low is not None and value < low:
        warnings.append(f"{name}={value} is below this backend's minimum {low}; sent {low}")
        return type(value)(low) if isinstance(value, int) and float(low).is_integer() else low
    if high is not None and value > high:
        warnings.append(f"{name}={value} is above this backend's maximum {high}; sent {high}")
        return type(value)(high) if isinstance(value, int) and float(high).is_integer() else high
    return value


def put(target: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``target[a][b]`` for ``a.b``, creating the nested dicts (target is our own new dict)."""
    *parents, leaf = dotted.split(".")
    node = target
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


class ParamMap:
    """A translator's parameter table.

    - ``mapped``: OpenAI (or extra) field → :class:`Param`.
    - ``unsupported``: field → reason; a non-neutral value is a 400 naming the field.
    - ``ignored``: fields dropped on purpose (with a warning when non-neutral).
    - ``handled``: fields a named function of the translator deals with (messages, tools...).
    - ``forward_unknown``: non-OpenAI fields (SillyTavern's sampler extras) are sent as they are.
    """

    def __init__(
        self,
        mapped: Mapping[str, Param],
        *,
        unsupported: Mapping[str, str] | None = None,
        ignored: Iterable[str] = (),
        handled: Iterable[str] = (),
        forward_unknown: bool = False,
    ) -> None:
        self.mapped = dict(mapped)
        self.unsupported = dict(unsupported or {})
        self.ignored = frozenset(ignored)
        self.handled = frozenset(handled)
        self.forward_unknown = forward_unknown

    def accounts_for(self, name: str) -> bool:
        """Whether the table says what happens to field ``name``."""
        return (
            name in self.mapped
            or name in self.unsupported
            or name in self.ignored
            or name in self.handled
        )

    def apply(
        self, body: Mapping[str, Any], *, openai_fields: frozenset[str]
    ) -> tuple[dict[str, Any], list[str]]:
        """Native fields for ``body`` and the warnings about what was changed or dropped.

        Raises :class:`Unsupported` for a meaningful value the backend cannot honour."""
        native: dict[str, Any] = {}
        warnings: list[str] = []
        dropped: list[str] = []
        for name, value in body.items():
            if name in self.handled:
                continue
            spec = self.mapped.get(name)
            if spec is not None:
                if value is None:
                    continue
                if spec.range is not None:
                    value = clamp(name, value, spec.range, warnings)
                if spec.convert is not None:
                    value = spec.convert(value)
                put(native, spec.to or name, value)
            elif name in self.unsupported:
                if not is_neutral(name, value):
                    raise Unsupported(
                        f"'{name}' is not supported by this backend: {self.unsupported[name]}",
                        param=name,
                    )
            elif name in self.ignored:
                if not is_neutral(name, value):
                    warnings.append(f"{name} is ignored by this backend")
            elif name in openai_fields:
                if not is_neutral(name, value):
                    warnings.append(f"{name} is not sent to this backend")
            elif value is None:
                continue
            elif self.forward_unknown:
                native[name] = value
            else:
                dropped.append(name)
        if dropped:
            warnings.append("fields this backend does not take were not sent: " + ", ".join(sorted(dropped)))
        return native, warnings
