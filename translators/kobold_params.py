"""The ``kobold`` request side: OpenAI and SillyTavern fields → KoboldCpp / KoboldAI fields.

The table says every sampler KoboldCpp knows (../shared/protocols/local.md §2.3) and the other
names clients use for them; KoboldAI United takes only its whitelist (§1.2). The named
functions deal with what needs the whole request: aliases, the generation limit, stop strings.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Mapping

import orjson

from .errors import InvalidRequest
from .params import Param, ParamMap
from .request import Request
from .stops import stop_list

ServerKind = Literal["koboldcpp", "koboldai"]


def sequence_breakers(value: Any) -> list[str]:
    """DRY sequence breakers as a list: SillyTavern sends a JSON-encoded string."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(
            "'dry_sequence_breakers' must be a list of strings (or a JSON string of one)", param="dry_sequence_breakers"
        )
    return value


def sampler_order(value: Any) -> list[int]:
    """``sampler_order`` checked: sampler ids 0-6 (top_k, top_a, top_p, tfs, typical, temp, rep_pen)."""
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise InvalidRequest("'sampler_order' must be a list of integers", param="sampler_order")
    return value


# OpenAI and KoboldCpp fields → KoboldCpp's GenerationInput (local.md §2.3). Native names that
# need no rename are listed so this table says every sampler KoboldCpp knows.
params = ParamMap(
    {
        "temperature": Param(range=(0, None)),
        "top_p": Param(range=(0, 1)),
        "presence_penalty": Param(),
        "logit_bias": Param(),  # same shape both sides: {"<token id>": bias}, clamped to ±100 upstream
        "top_k": Param(range=(0, None)),
        "top_a": Param(range=(0, None)),
        "min_p": Param(range=(0, 1)),
        "typical": Param(range=(0, 1)),
        "tfs": Param(range=(0, 1)),
        "nsigma": Param(range=(0, None)),
        "rep_pen": Param(),
        "rep_pen_range": Param(range=(0, None)),
        "rep_pen_slope": Param(),
        "sampler_order": Param(convert=sampler_order),
        "sampler_seed": Param(),
        "sampler_full_determinism": Param(),
        "mirostat": Param(range=(0, 2)),
        "mirostat_tau": Param(),
        "mirostat_eta": Param(),
        "dynatemp_range": Param(range=(0, None)),
        "dynatemp_exponent": Param(),
        "smoothing_factor": Param(range=(0, None)),
        "smoothing_curve": Param(),
        "adaptive_target": Param(),
        "adaptive_decay": Param(),
        "dry_multiplier": Param(range=(0, None)),
        "dry_base": Param(),
        "dry_allowed_length": Param(range=(0, None)),
        "dry_penalty_last_n": Param(),
        "dry_sequence_breakers": Param(convert=sequence_breakers),
        "xtc_threshold": Param(range=(0, 1)),
        "xtc_probability": Param(range=(0, 1)),
        "ban_eos_token": Param(),
        "use_default_badwordsids": Param(),
        "bypass_eos": Param(),
        "render_special": Param(),
        "grammar": Param(),
        "grammar_retain_state": Param(),
        "banned_tokens": Param(),
        "custom_token_bans": Param(),
        "memory": Param(),
        "images": Param(),
        "negative_prompt": Param(),
        "guidance_scale": Param(),
        "replace_instruct_placeholders": Param(),
        "quiet": Param(),
        # KoboldAI United's own switches (KoboldCpp ignores them)
        **{name: Param() for name in (
            "singleline", "frmttriminc", "frmtrmblln", "frmtrmspch", "frmtadsnsp", "disable_output_formatting",
            "disable_input_formatting", "use_memory", "use_story", "use_authors_note", "use_world_info",
            "use_userscripts", "soft_prompt",
        )},
        # other names for the same fields (OpenAI, SillyTavern, llama.cpp, text-generation-webui);
        # the native name wins when both come (resolve_aliases)
        "seed": Param(to="sampler_seed"),
        "repetition_penalty": Param(to="rep_pen"),
        "repeat_penalty": Param(to="rep_pen"),
        "repetition_penalty_range": Param(to="rep_pen_range", range=(0, None)),
        "repeat_last_n": Param(to="rep_pen_range", range=(0, None)),
        "typical_p": Param(to="typical", range=(0, 1)),
        "tfs_z": Param(to="tfs", range=(0, 1)),
        "mirostat_mode": Param(to="mirostat", range=(0, 2)),
        "grammar_string": Param(to="grammar"),
        "banned_strings": Param(to="banned_tokens"),
        "ignore_eos": Param(to="ban_eos_token"),
    },
    unsupported={
        "tools": "a text-completion backend has no tool calling",
        "tool_choice": "a text-completion backend has no tool calling",
        "functions": "a text-completion backend has no tool calling",
        "function_call": "a text-completion backend has no tool calling",
        "response_format": "use 'grammar' (GBNF) for constrained output",
        "logprobs": "KoboldCpp's native API returns no log probabilities",
        "top_logprobs": "KoboldCpp's native API returns no log probabilities",
        "best_of": "KoboldCpp generates one candidate",
        "echo": "the prompt is not returned",
        "suffix": "no fill-in-the-middle",
        "audio": "text only",
        "modalities": "text only",
        "web_search_options": "no web search",
    },
    ignored={
        "user", "metadata", "store", "service_tier", "prompt_cache_key", "prompt_cache_retention",
        "safety_identifier", "reasoning_effort", "verbosity", "parallel_tool_calls", "prediction",
    },
    handled={
        "model", "messages", "prompt", "stream", "stream_options", "n", "stop", "stopping_strings",
        "stop_sequence", "trim_stop", "genkey", "frequency_penalty",
        "max_tokens", "max_completion_tokens", "max_length", "max_new_tokens", "n_predict", "num_predict",
        "max_context_length", "truncation_length", "num_ctx",
        "api_type", "api_server", "legacy_api",  # SillyTavern's routing fields, meaningless upstream
    },
    forward_unknown=True,  # KoboldCpp ignores what it does not read; newer samplers reach it
)
MAX_LENGTH_NAMES = ("max_length", "max_new_tokens", "n_predict", "num_predict")

# KoboldAI United validates its body against this list and rejects any other key (local.md §1.2).
UNITED_FIELDS = frozenset(
    {
        "prompt", "max_context_length", "max_length", "n", "temperature", "top_p", "top_k", "top_a",
        "typical", "tfs", "rep_pen", "rep_pen_range", "rep_pen_slope", "sampler_order", "sampler_seed",
        "sampler_full_determinism", "stop_sequence", "use_default_badwordsids", "use_memory", "use_story",
        "use_authors_note", "use_world_info", "use_userscripts", "soft_prompt", "disable_output_formatting",
        "frmttriminc", "frmtrmblln", "frmtrmspch", "singleline", "disable_input_formatting", "frmtadsnsp", "quiet",
    }
)
# How many stop strings each server takes (KoboldCpp 1.76 stop_token_max; the United schema).
STOP_LIMIT: dict[ServerKind, int] = {"koboldcpp": 32, "koboldai": 10}
UNITED_MAX_LENGTH = 512
UNITED_MAX_N = 5



def genkey_for(req: Request) -> str:
    """The request's KoboldCpp generation key: unique per request, derived from its id."""
    return "KCPP" + re.sub(r"[^A-Za-z0-9]", "", req.id)


def resolve_aliases(body: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``body`` (a new dict) with each native field given once: other names for it are dropped
    where the native name or an earlier alias in the table is present, whatever the key order;
    a dropped name with a different value is reported."""
    out = dict(body)
    warnings: list[str] = []
    chosen = {k: k for k, v in body.items() if v is not None and k in params.mapped and params.mapped[k].to is None}
    for name, spec in params.mapped.items():
        if spec.to is None or out.get(name) is None:
            continue
        winner = chosen.setdefault(spec.to, name)
        if winner != name:
            value = out.pop(name)
            if value != out[winner]:
                warnings.append(f"{name}={value!r} was not sent: {winner}={out[winner]!r} sets the same thing")
    # KoboldCpp has no frequency penalty; its own OpenAI layer uses it as the presence penalty
    # when none is given, and so do we.
    frequency = out.get("frequency_penalty")
    if frequency not in (None, 0):
        if out.get("presence_penalty") in (None, 0):
            out["presence_penalty"] = frequency
            warnings.append("frequency_penalty was sent as presence_penalty (KoboldCpp has only the latter)")
        else:
            warnings.append("frequency_penalty was not sent: KoboldCpp has only presence_penalty")
    return out, warnings


def requested_max_length(req: Request) -> int | None:
    """The client's generation limit: OpenAI's max_tokens, or a SillyTavern-style name."""
    if req.max_tokens is not None:
        return req.max_tokens
    for name in MAX_LENGTH_NAMES:
        value = req.body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def request_stops(req: Request) -> tuple[str, ...]:
    """Every stop string of the request: OpenAI's (with the template's) and SillyTavern's names."""
    return stop_list(req.stop, req.body.get("stopping_strings"), req.body.get("stop_sequence"))


def full_prompt(req: Request) -> str:
    """The text the model reads: KoboldCpp puts ``memory`` before the prompt."""
    memory = req.body.get("memory")
    return (memory if isinstance(memory, str) else "") + (req.prompt or "")
