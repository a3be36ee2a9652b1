"""The ``horde`` backend's settings (used by ``horde.py``): the table of OpenAI, KoboldAI and
SillyTavern fields → the Horde's ``params`` with the ranges its schema allows, what it cannot do,
and the backend and per-model options.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from .horde_lists import ClampTo
from .horde_request import CONTEXT_FIELDS, CONTEXT_RANGE, MAX_LENGTH_FIELDS, MAX_LENGTH_RANGE, STOP_FIELDS
from .params import Param, ParamMap
from .textgen import TextModelOptions, TextOptions

params = ParamMap(
    {
        "temperature": Param("params.temperature", (0, 5)),
        "top_p": Param("params.top_p", (0.001, 1)),
        "top_k": Param("params.top_k", (0, 200)),
        "top_a": Param("params.top_a", (0, 1)),
        "typical": Param("params.typical", (0, 1)),
        "typical_p": Param("params.typical", (0, 1)),
        "tfs": Param("params.tfs", (0, 1)),
        "tfs_z": Param("params.tfs", (0, 1)),
        "min_p": Param("params.min_p", (0, 1)),
        "rep_pen": Param("params.rep_pen", (1, 3)),
        "repetition_penalty": Param("params.rep_pen", (1, 3)),
        "repeat_penalty": Param("params.rep_pen", (1, 3)),
        "rep_pen_range": Param("params.rep_pen_range", (0, 4096)),
        "repetition_penalty_range": Param("params.rep_pen_range", (0, 4096)),
        "repeat_last_n": Param("params.rep_pen_range", (0, 4096)),
        "rep_pen_slope": Param("params.rep_pen_slope", (0, 10)),
        "smoothing_factor": Param("params.smoothing_factor", (0, 10)),
        "dynatemp_range": Param("params.dynatemp_range", (0, 5)),
        "dynatemp_exponent": Param("params.dynatemp_exponent", (0, 5)),
        "sampler_order": Param("params.sampler_order", convert=list),
        "use_default_badwordsids": Param("params.use_default_badwordsids", convert=bool),
        "ban_eos_token": Param("params.use_default_badwordsids", convert=bool),
        "singleline": Param("params.singleline", convert=bool),
        "frmtadsnsp": Param("params.frmtadsnsp", convert=bool),
        "frmtrmblln": Param("params.frmtrmblln", convert=bool),
        "frmtrmspch": Param("params.frmtrmspch", convert=bool),
        "frmttriminc": Param("params.frmttriminc", convert=bool),
        "n": Param("params.n", (1, 20)),
    },
    unsupported={
        "tools": "AI Horde workers run plain text completion, without tool calling",
        "functions": "AI Horde workers run plain text completion, without tool calling",
        "tool_choice": "AI Horde workers run plain text completion, without tool calling",
        "function_call": "AI Horde workers run plain text completion, without tool calling",
        "logprobs": "the AI Horde returns no token probabilities",
        "top_logprobs": "the AI Horde returns no token probabilities",
        "logit_bias": "the AI Horde takes no logit bias",
        "response_format": "the AI Horde cannot constrain output to JSON",
        "audio": "the AI Horde generates text only",
        "modalities": "the AI Horde generates text only",
        "prediction": "the AI Horde takes no predicted output",
        "echo": "the AI Horde does not echo the prompt",
        "suffix": "the AI Horde does not insert text",
        "best_of": "the AI Horde does not rank candidates; use n",
    },
    ignored={
        "presence_penalty", "frequency_penalty", "seed", "user", "metadata", "store", "service_tier",
        "reasoning_effort", "verbosity", "prompt_cache_key", "prompt_cache_retention",
        "safety_identifier", "web_search_options", "parallel_tool_calls",
    },
    handled={"model", "messages", "prompt", "stream", "stream_options", *MAX_LENGTH_FIELDS, *CONTEXT_FIELDS, *STOP_FIELDS},
)


class Options(TextOptions):
    """``horde`` backend options: who may serve the job, the answer budget, polling, caching
    (and the instruct template: ``template``, ``template_fallback``; the Horde cannot report a
    model's own template, so ``auto`` means the fallback)."""

    # Client-Agent is ``rosetta:<version>:<contact>`` unless given whole.
    client_agent: str | None = None
    client_version: str | None = None
    contact: str = "unknown"
    # Passed in the submit body (the Horde's own defaults).
    trusted_workers: bool = False
    slow_workers: bool = True
    extra_slow_workers: bool = False
    validated_backends: bool = True
    workers: tuple[str, ...] = Field(default=(), max_length=5, description="worker ids to allow (or block)")
    worker_blacklist: bool = False
    allow_downgrade: bool = False
    disable_batching: bool = False
    proxied_account: str | None = None
    # The answer budget when the client does not say; None leaves it to the workers (context:
    # the most the workers offer) or the Horde (max_length 80).
    max_context_length: int | None = Field(default=None, ge=CONTEXT_RANGE[0])
    default_max_length: int | None = Field(default=None, ge=MAX_LENGTH_RANGE[0], le=MAX_LENGTH_RANGE[1])
    # best_worker: clamp to the best worker that may take the job (longer answers, a narrower
    # pool); every_worker: to the weakest one, as SillyTavern does (any of them can take it).
    clamp_to: ClampTo = "best_worker"
    # Polling: never more than one poll a second (the Horde allows 60 a minute per job).
    poll_interval: float = Field(default=2.0, ge=1.0)
    max_poll_interval: float = Field(default=5.0, ge=1.0)
    poll_backoff: float = Field(default=1.5, ge=1.0)
    poll_retries: int = Field(default=3, ge=0, description="transient poll failures tolerated in a row")
    # not "timeout": that key is every backend's HTTP timeouts
    job_timeout: float = Field(default=600.0, gt=0, description="total seconds before the job is cancelled")
    workers_ttl: float = Field(default=300.0, ge=0, description="cache of the worker and model lists")
    lists_timeout: float = Field(default=10.0, gt=0, description="longest wait for those lists")

    @model_validator(mode="after")
    def _intervals(self) -> Options:
        if self.max_poll_interval < self.poll_interval:
            raise ValueError("max_poll_interval must be at least poll_interval")
        return self


class ModelOptions(TextModelOptions):
    """Per-model ``horde`` options (and the model's instruct ``template``)."""

    # Horde model names this public model may run on (any of them); default: the upstream model.
    models: tuple[str, ...] | None = None
    max_context_length: int | None = Field(default=None, ge=CONTEXT_RANGE[0])
