"""``mancer``: Mancer (mancer.tech), a paid OpenAI-compatible host with Ooba/Aphrodite-style
sampler extras.

Facts (shared/protocols/local.md §7; SillyTavern @ ba6f7b7a ``src/additional-headers.js``
``getMancerHeaders``, ``src/endpoints/backends/text-completions.js``,
``public/scripts/textgen-settings.js`` ``getTextGenGenerationData``; mancer.tech pricing/FAQ
page; third-party clients in the code index). Mancer publishes no wire examples, so the
answer shapes are OpenAI's (what SillyTavern parses: ``choices[0].text`` and ``[DONE]``).

- Base ``https://neuro.mancer.tech/oai/v1``: ``POST /completions`` (SillyTavern),
  ``POST /chat/completions`` (third-party clients), ``GET /models`` (an OpenAI list).
- Auth: SillyTavern sends the key as ``X-API-KEY`` and as ``Authorization: Bearer``; clients that
  send either one alone work too. Both are sent.
- ``model`` is required: it selects the Mancer model.
- Samplers use Ooba/Aphrodite names, with SillyTavern's Mancer quirks: dynamic temperature as
  ``dynatemp_mode`` (0/1) + ``dynatemp_min`` / ``dynatemp_max``; ``custom_token_bans`` an int
  list. ``epsilon_cutoff``/``eta_cutoff`` are in Mancer's own units: SillyTavern divides its
  Ooba-scale UI values by 1000 before sending; Rosetta sends what the client gave.
- Without credits only free models answer; others are refused (402 per a third-party client).
- No cancel call is known: closing the connection is the cancel.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .base import NoOptions, Upstream
from .openai import OpenAI
from .params import Param, ParamMap
from .request import Request
from .samplers import list_openai_models, native_fields, openai_style_request, server_root, token_list

API_PATH = "/oai/v1"


def flag(value: Any) -> int:
    """A boolean switch as Mancer's 0/1 ``dynatemp_mode``."""
    return 1 if value else 0


SAME = Param()
params = ParamMap(
    {
        # OpenAI fields the server takes under the same name.
        **{
            name: SAME
            for name in (
                "temperature", "top_p", "frequency_penalty", "presence_penalty", "seed", "stop",
                "max_tokens", "logit_bias", "logprobs", "top_logprobs", "n", "response_format", "user",
            )
        },
        "max_completion_tokens": Param("max_tokens"),
        # The extras SillyTavern sends to Mancer (textgen-settings.js, MANCER branch).
        **{
            name: SAME
            for name in (
                "top_k", "top_a", "min_p", "typical_p", "tfs", "repetition_penalty",
                "repetition_penalty_range", "epsilon_cutoff", "eta_cutoff", "mirostat_mode",
                "mirostat_tau", "mirostat_eta", "min_tokens", "ban_eos_token", "skip_special_tokens",
                "smoothing_factor", "smoothing_curve", "dry_multiplier", "dry_base",
                "dry_allowed_length", "dry_sequence_breakers", "xtc_threshold", "xtc_probability",
                "banned_strings", "dynatemp_mode", "dynatemp_min", "dynatemp_max", "dynatemp_exponent",
                "grammar_string", "temperature_last", "add_bos_token",
            )
        },
        "custom_token_bans": Param(convert=token_list),
        # SillyTavern's generic and other servers' names for the same fields.
        "max_new_tokens": Param("max_tokens"),
        "max_length": Param("max_tokens"),
        "stopping_strings": Param("stop"),
        "sampler_seed": Param("seed"),
        "rep_pen": Param("repetition_penalty"),
        "rep_pen_range": Param("repetition_penalty_range"),
        "typical": Param("typical_p"),
        "tfs_z": Param("tfs"),
        "mirostat": Param("mirostat_mode"),
        "ignore_eos": Param("ban_eos_token"),
        "min_length": Param("min_tokens"),
        "dynamic_temperature": Param("dynatemp_mode", convert=flag),
        "dynatemp_low": Param("dynatemp_min"),
        "dynatemp_high": Param("dynatemp_max"),
        "min_temp": Param("dynatemp_min"),
        "max_temp": Param("dynatemp_max"),
        "banned_tokens": Param("custom_token_bans", convert=token_list),
    },
    unsupported={
        # a third-party catalogue lists Mancer without tool calling; ignoring tools would lie
        "tools": "Mancer does not call tools",
        "tool_choice": "Mancer does not call tools",
        "functions": "Mancer does not call tools",
        "function_call": "Mancer does not call tools",
        "audio": "text only",
        "modalities": "text only",
        "web_search_options": "no web search",
        "echo": "Mancer does not document 'echo'",
        "suffix": "Mancer does not document 'suffix'",
        "best_of": "Mancer does not document 'best_of'",
    },
    ignored={
        "metadata", "store", "service_tier", "parallel_tool_calls", "prediction", "verbosity",
        "reasoning_effort", "prompt_cache_key", "prompt_cache_retention", "safety_identifier",
    },
    handled={"model", "messages", "prompt", "stream", "stream_options"},
    forward_unknown=True,
)


class Options(BaseModel):
    """``mancer`` backend options."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    forward_unknown: bool = Field(default=True, description="send fields Rosetta does not know as they are")


class Mancer(OpenAI):
    """Mancer's OpenAI-compatible API (``/oai/v1``)."""

    name = "mancer"
    framing = "sse"
    params = params
    Options = Options  # type: ignore[assignment]  # openai.py infers its own Options type here
    ModelOptions = NoOptions
    default_url = "https://neuro.mancer.tech"

    def base(self) -> str:
        """``…/oai/v1`` whether config gave the host or the full API URL."""
        return server_root(self.backend.url or self.default_url, API_PATH) + API_PATH

    def auth_headers(self) -> dict[str, str]:
        """Config headers plus the key in both headers Mancer reads (as SillyTavern sends it)."""
        headers = dict(self.backend.headers)
        if self.backend.api_key:
            headers["X-API-KEY"] = self.backend.api_key
            headers["Authorization"] = f"Bearer {self.backend.api_key}"
        return headers

    def build_request(self, req: Request) -> Upstream:
        native, warnings = native_fields(self.params, req, forward_unknown=self.options.forward_unknown)
        return openai_style_request(req, native, self.base(), self.auth_headers(), warnings)

    async def list_models(self, transport: Any) -> list[str]:
        return await list_openai_models(transport, self.base() + "/models", self.auth_headers())
