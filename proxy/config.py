"""Configuration: YAML (or an embedded default) → validated, immutable settings.

The YAML shape is a contract other tools rely on:

    server:   {host, port, max_body_bytes, api_keys, log_format, log_prompts}
    backends: {<name>: {type, url, api_key, headers, timeout, autodetect, <translator options>}}
    models:   [{name, backend, model, params, <translator model options>}]

``${VAR}`` and ``${VAR:-default}`` interpolate the environment. Every problem is reported with
its location (``backends.kobold.url: ...``), all at once. Keys a backend or model entry has
beyond the common ones are the translator's own options, validated by its ``Options`` /
``ModelOptions`` models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from translators.base import Translator
from translators.registry import TRANSLATORS


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` holds every problem with its location."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    """``server:`` section."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    # Gateway keys clients must present as ``Authorization: Bearer``; empty: no auth (laptop).
    api_keys: list[SecretStr] = Field(default_factory=list)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Prompts and completions are never logged unless this is on.
    log_prompts: bool = False
    # Seconds between SSE keep-alive comments while a streaming answer waits upstream.
    keepalive_seconds: float = Field(5.0, gt=0)
    # How long /v1/models keeps an upstream model list.
    models_cache_seconds: float = Field(300.0, ge=0)
    # Browser front ends allowed to call the gateway directly (CORS); "*" allows any origin.
    cors_origins: list[str] = Field(default_factory=list)


class TimeoutConfig(_Strict):
    """Upstream timeouts in seconds (``read``: the longest silence between two reads)."""

    connect: float = Field(10.0, gt=0)
    read: float = Field(300.0, gt=0)
    total: float | None = Field(None, gt=0)


class BackendCommon(BaseModel):
    """Keys every backend entry has; the rest are the translator's options."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str
    url: str | None = None
    api_key: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: TimeoutConfig = TimeoutConfig()
    # Probe at start-up; a backend that does not answer is left out (embedded local defaults).
    autodetect: bool = False
    # Extra attempts after a retryable failure (429, 502, 503, 504) before any answer was sent,
    # waiting Retry-After (or 0.5 s, doubling) but never more than retry_max_wait seconds.
    retries: int = Field(0, ge=0, le=5)
    retry_max_wait: float = Field(5.0, ge=0)


class ModelCommon(BaseModel):
    """Keys every ``models`` entry has; the rest are the translator's model options."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(min_length=1)
    backend: str
    model: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    # Other model names tried in order when this one fails retryably before answering.
    fallbacks: list[str] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """One validated backend."""

    name: str
    type: str
    url: str
    api_key: str | None
    headers: Mapping[str, str]
    timeout: TimeoutConfig
    autodetect: bool
    options: Mapping[str, Any]
    retries: int = 0
    retry_max_wait: float = 5.0

    def __repr__(self) -> str:  # never show the key
        return f"BackendSettings(name={self.name!r}, type={self.type!r}, url={self.url!r})"


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """One validated ``models`` entry; ``options`` is the translator's ModelOptions instance."""

    name: str
    backend: str
    model: str
    params: Mapping[str, Any]
    options: Any
    fallbacks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole validated configuration."""

    server: ServerConfig
    backends: Mapping[str, BackendSettings]
    models: tuple[ModelSettings, ...]
    source: str = "embedded default"
    secrets: tuple[str, ...] = field(default=(), repr=False)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def interpolate(node: Any, env: Mapping[str, str], where: str, problems: list[str]) -> Any:
    """``node`` with ``${VAR}`` / ``${VAR:-default}`` replaced in every string (a new tree)."""
    if isinstance(node, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{where}: environment variable {name} is not set (write ${{{name}:-default}} for a default)")
            return ""

        return _VAR.sub(replace, node)
    if isinstance(node, dict):
        return {k: interpolate(v, env, f"{where}.{k}" if where else str(k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env, f"{where}[{i}]", problems) for i, v in enumerate(node)]
    return node


def _located(prefix: str, error: ValidationError) -> list[str]:
    out = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"])
        where = f"{prefix}.{loc}" if loc else prefix
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        out.append(f"{where}: {message}")
    return out


# Header names whose values are credentials (masked in logs like api_key).
_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie", re.IGNORECASE)


def _secret_values(model: BaseModel) -> list[str]:
    """Every SecretStr a translator's validated options hold (Tabby's admin key...)."""
    return [v.get_secret_value() for v in model.__dict__.values() if isinstance(v, SecretStr)]


def _split(entry: BaseModel) -> dict[str, Any]:
    """The keys of ``entry`` that are not common ones (the translator's options)."""
    return dict(entry.model_extra or {})


def load_settings(raw: Any, *, env: Mapping[str, str], source: str = "config") -> Settings:
    """Validate a parsed YAML document; raises ConfigError listing every problem."""
    problems: list[str] = []
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): expected a mapping with server, backends, models"])
    raw = interpolate(raw, env, "", problems)
    for key in raw:
        if key not in ("server", "backends", "models"):
            problems.append(f"{key}: unknown section (expected server, backends, models)")

    server = ServerConfig.model_validate({})
    try:
        server = ServerConfig.model_validate(raw.get("server") or {})
    except ValidationError as exc:
        problems += _located("server", exc)

    backends: dict[str, BackendSettings] = {}
    classes: dict[str, type[Translator]] = {}
    secrets: list[str] = []
    raw_backends = raw.get("backends") or {}
    if not isinstance(raw_backends, dict):
        problems.append("backends: expected a mapping of name → backend")
        raw_backends = {}
    for name, entry in raw_backends.items():
        where = f"backends.{name}"
        if "/" in str(name):
            problems.append(f"{where}: a backend name cannot contain '/'")
            continue
        try:
            common = BackendCommon.model_validate(entry or {})
        except ValidationError as exc:
            problems += _located(where, exc)
            continue
        cls = TRANSLATORS.get(common.type)
        if cls is None:
            problems.append(f"{where}.type: unknown backend type {common.type!r}; valid types: {', '.join(sorted(TRANSLATORS))}")
            continue
        options = _split(common)
        try:
            validated = cls.Options.model_validate(options)
        except ValidationError as exc:
            problems += _located(where, exc)
            continue
        secrets += _secret_values(validated)
        secrets += [v for k, v in common.headers.items() if _SECRET_HEADER.search(k)]
        url = common.url or cls.default_url
        if not url:
            problems.append(f"{where}.url: this backend type has no default URL; set one")
            continue
        if "@" in urlsplit(url).netloc and common.api_key is not None:
            problems.append(f"{where}.url: credentials in the URL cannot be combined with api_key (use one)")
            continue
        classes[name] = cls
        backends[name] = BackendSettings(
            name=name,
            type=common.type,
            url=url,
            api_key=common.api_key.get_secret_value() if common.api_key else None,
            headers=dict(common.headers),
            timeout=common.timeout,
            autodetect=common.autodetect,
            options=options,
            retries=common.retries,
            retry_max_wait=common.retry_max_wait,
        )

    models: list[ModelSettings] = []
    raw_models = raw.get("models") or []
    if not isinstance(raw_models, list):
        problems.append("models: expected a list of model entries")
        raw_models = []
    seen: set[str] = set()
    for i, entry in enumerate(raw_models):
        where = f"models[{i}]"
        try:
            common_model = ModelCommon.model_validate(entry or {})
        except ValidationError as exc:
            problems += _located(where, exc)
            continue
        if common_model.name in seen:
            problems.append(f"{where}.name: duplicate model name {common_model.name!r}")
        seen.add(common_model.name)
        if common_model.backend not in raw_backends:
            problems.append(f"{where}.backend: no backend named {common_model.backend!r}")
            continue
        cls = classes.get(common_model.backend)
        if cls is None:
            continue  # the backend's own problem is already reported
        try:
            model_options = cls.ModelOptions.model_validate(_split(common_model))
        except ValidationError as exc:
            problems += _located(where, exc)
            continue
        models.append(
            ModelSettings(
                common_model.name,
                common_model.backend,
                common_model.model,
                dict(common_model.params),
                model_options,
                tuple(common_model.fallbacks),
            )
        )

    names = {m.name for m in models}
    for i, model in enumerate(models):
        for j, fallback in enumerate(model.fallbacks):
            prefix, sep, rest = fallback.partition("/")
            if fallback == model.name:
                problems.append(f"models[{i}].fallbacks[{j}]: a model cannot fall back to itself")
            elif fallback not in names and not (sep and rest and prefix in raw_backends):
                problems.append(f"models[{i}].fallbacks[{j}]: {fallback!r} is neither a model name nor '<backend>/<model>'")
    if problems:
        raise ConfigError(problems)
    secrets += [b.api_key for b in backends.values() if b.api_key]
    secrets += [k.get_secret_value() for k in server.api_keys]
    return Settings(server, backends, tuple(models), source, tuple(s for s in secrets if s))


def load_file(path: str | Path, *, env: Mapping[str, str]) -> Settings:
    """Read and validate a YAML config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError([f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    return load_settings(raw, env=env, source=str(path))


# OpenAI-compatible clouds enabled by their key in the environment: name → (env var, base URL).
CLOUDS: dict[str, tuple[str, str]] = {
    "openai": ("OPENAI_API_KEY", "https://api.openai.com/v1"),
    "openrouter": ("OPENROUTER_API_KEY", "https://openrouter.ai/api/v1"),
    "mistral": ("MISTRAL_API_KEY", "https://api.mistral.ai/v1"),
    "deepseek": ("DEEPSEEK_API_KEY", "https://api.deepseek.com/v1"),
}
# Native clouds: name → (env var, translator type).
NATIVE_CLOUDS: dict[str, tuple[str, str]] = {
    "anthropic": ("ANTHROPIC_API_KEY", "claude"),
    "gemini": ("GEMINI_API_KEY", "gemini"),
    "cohere": ("COHERE_API_KEY", "cohere"),
}
# Local servers probed on their default ports: name → (translator type, URL).
LOCAL: dict[str, tuple[str, str]] = {
    "koboldcpp": ("kobold", "http://127.0.0.1:5001"),
    "llamacpp": ("llamacpp", "http://127.0.0.1:8080"),
    "ollama": ("ollama", "http://127.0.0.1:11434"),
    "ooba": ("ooba", "http://127.0.0.1:5000"),
}


def default_config(env: Mapping[str, str]) -> dict[str, Any]:
    """The embedded default: serves at once with no file. A backend appears only when its
    translator exists (and, for clouds, its key is in the environment)."""
    backends: dict[str, Any] = {"mock": {"type": "mock"}}
    if "horde" in TRANSLATORS:
        backends["horde"] = {"type": "horde", "api_key": "${HORDE_API_KEY:-0000000000}"}
    for name, (var, url) in CLOUDS.items():
        if env.get(var):
            backends[name] = {"type": "openai", "url": url, "api_key": f"${{{var}}}"}
            if name == "openai":
                backends[name]["forward_unknown"] = False
    for name, (var, kind) in NATIVE_CLOUDS.items():
        if env.get(var) and kind in TRANSLATORS:
            backends[name] = {"type": kind, "api_key": f"${{{var}}}"}
    for name, (kind, url) in LOCAL.items():
        if kind in TRANSLATORS:
            backends[name] = {"type": kind, "url": url, "autodetect": True}
    return {
        "server": {},
        "backends": backends,
        "models": [{"name": "mock", "backend": "mock", "model": "lorem"}],
    }
