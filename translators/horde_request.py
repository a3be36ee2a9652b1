"""What the ``horde`` translator submits, decided from the whole request: the prompt, the stop
strings, the models, and the answer budget (``max_length``, ``max_context_length``) clamped
to what the AI Horde's workers offer.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .errors import InvalidRequest, Unsupported
from .horde_lists import WorkerLimits
from .params import clamp
from .request import Request
from .stops import stop_list

# The Horde's schema ranges (Haidra-Org/AI-Horde horde/apis/models/kobold_v2.py @ fbd5ed46).
MAX_LENGTH_RANGE = (16, 4096)
CONTEXT_RANGE = (80, 1_048_576)
# ``params.max_length`` the Horde applies when a request does not say.
HORDE_DEFAULT_MAX_LENGTH = 80
# Client fields that ask for the answer budget / the context, OpenAI's first, then the names
# SillyTavern sends to text-completion backends (all equal in its bodies).
MAX_LENGTH_FIELDS = ("max_completion_tokens", "max_tokens", "max_length", "max_new_tokens", "n_predict", "num_predict")
CONTEXT_FIELDS = ("max_context_length", "truncation_length", "num_ctx")
STOP_FIELDS = ("stop", "stop_sequence", "stopping_strings")
# Rough size of a token for the prompt-fit warning (English BPE; never used to refuse).
BYTES_PER_TOKEN = 4


def horde_models(req: Request, configured: Sequence[str] | None) -> list[str]:
    """The ``models`` the job may run on: the model's configured list, else the upstream model
    name; ``any``/``*``/empty means any model ([])."""
    if configured is not None:
        return list(configured)
    if req.upstream_model.strip() in ("", "any", "*"):
        return []
    return [req.upstream_model]


def model_option(req: Request, name: str) -> Any:
    """A per-model option: ``req.options`` is the validated ModelOptions (a plain mapping in tests)."""
    if isinstance(req.options, Mapping):
        return req.options.get(name)
    return getattr(req.options, name, None)


def _first_positive_int(body: Mapping[str, Any], names: Sequence[str]) -> int | None:
    for name in names:
        value = body.get(name)
        # -1/0 mean "unlimited"/"model default" to llama.cpp and Ollama: not a budget.
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return int(value)
    return None


def requested_length(req: Request) -> int | None:
    """The client's answer budget: OpenAI's max_tokens, or a SillyTavern-style name."""
    return req.max_tokens or _first_positive_int(req.body, MAX_LENGTH_FIELDS)


def requested_context(req: Request) -> int | None:
    """The context the client asks for (SillyTavern's names; OpenAI has none)."""
    return _first_positive_int(req.body, CONTEXT_FIELDS)


def stop_strings(req: Request) -> list[str]:
    """Every stop string of the request: the template's and OpenAI's, plus the names
    SillyTavern sends to text-completion backends."""
    return list(stop_list(req.stop, *(req.body.get(name) for name in STOP_FIELDS)))


def prompt_of(req: Request) -> str:
    """The text the Horde completes: the rendered chat or the client's prompt."""
    if req.prompt is not None:
        return req.prompt
    prompt = req.body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if req.operation == "chat":
        raise InvalidRequest("this AI Horde model has no instruct template to render the chat with", param="messages")
    raise Unsupported("the AI Horde takes one text prompt (not token ids or several prompts)", param="prompt")


def clamp_budget(
    length: int | None, context: int | None, limits: WorkerLimits | None, which: str, warnings: list[str]
) -> tuple[int | None, int | None]:
    """``max_length`` and ``max_context_length`` within the Horde's ranges and the workers'
    ``limits`` (one warning per change, plus one naming the workers). Without a context asked
    for, the most the workers offer is sent (the worker cuts a longer prompt, so more is better)."""
    before = len(warnings)
    if length is not None:
        high = min(limits.max_length, MAX_LENGTH_RANGE[1]) if limits else MAX_LENGTH_RANGE[1]
        length = clamp("max_tokens", length, (MAX_LENGTH_RANGE[0], high), warnings)
    if context is None and limits is not None:
        context = max(CONTEXT_RANGE[0], min(limits.max_context_length, CONTEXT_RANGE[1]))
    elif context is not None:
        high = min(limits.max_context_length, CONTEXT_RANGE[1]) if limits else CONTEXT_RANGE[1]
        context = clamp("max_context_length", context, (CONTEXT_RANGE[0], high), warnings)
    if limits is not None and len(warnings) > before:
        warnings.append(
            f"clamped to the AI Horde workers for {which} ({limits.workers} online): "
            f"max_length <= {limits.max_length}, max_context_length <= {limits.max_context_length}"
        )
    return length, context


def prompt_fit_warning(prompt: str, length: int | None, context: int | None) -> str | None:
    """A warning when the prompt likely overflows the context: Horde workers silently drop its
    start (a rough size estimate, so only a warning)."""
    if context is None:
        return None
    estimated = len(prompt.encode("utf-8")) // BYTES_PER_TOKEN
    budget = length or HORDE_DEFAULT_MAX_LENGTH
    if estimated <= context - budget:
        return None
    return (
        f"the prompt (about {estimated} tokens by estimate) may not fit max_context_length {context} "
        f"minus max_length {budget}; Horde workers drop the start of a prompt that does not fit"
    )
