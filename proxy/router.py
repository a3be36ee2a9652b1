"""Model name → route: which backend, which upstream model, which defaults.

A client's ``model`` is either a ``models`` entry's name, or ``<backend>/<upstream model>``
for any configured backend (split at the first ``/``, so Horde names with slashes work).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from translators.base import Translator
from translators.errors import ModelNotFound

from .config import ModelSettings, Settings
from .upstream import HttpTransport


@dataclass(frozen=True, slots=True)
class Backend:
    """A live backend: its translator instance and its transport."""

    name: str
    type: str
    translator: Translator
    transport: HttpTransport
    retries: int = 0
    retry_max_wait: float = 5.0


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes."""

    public_name: str
    backend: Backend
    upstream_model: str
    params: Mapping[str, Any]
    options: Any
    fallbacks: tuple[str, ...] = ()


class Router:
    """Resolves model names against the configured models and live backends."""

    def __init__(self, settings: Settings, backends: Mapping[str, Backend]) -> None:
        self.settings = settings
        self.backends = dict(backends)
        self.models: dict[str, ModelSettings] = {m.name: m for m in settings.models}
        self._defaults: dict[str, Any] = {}

    def drop_backend(self, name: str) -> None:
        """Take a backend out of routing (autodetect found nothing listening)."""
        self.backends.pop(name, None)

    def configured(self) -> list[ModelSettings]:
        """The ``models`` entries whose backend is live."""
        return [m for m in self.models.values() if m.backend in self.backends]

    def resolve(self, model: str) -> Route:
        """The route for a client's ``model``; 404 ``model_not_found`` when there is none."""
        entry = self.models.get(model)
        if entry is not None and entry.backend in self.backends:
            return Route(model, self.backends[entry.backend], entry.model, entry.params, entry.options, entry.fallbacks)
        prefix, sep, rest = model.partition("/")
        backend = self.backends.get(prefix) if sep and rest else None
        if backend is None:
            raise ModelNotFound(
                f"The model '{model}' does not exist here. Use a configured model name or '<backend>/<model>' "
                f"(backends: {', '.join(sorted(self.backends)) or 'none'}); GET /v1/models lists them.",
                param="model",
            )
        return Route(model, backend, rest, {}, self._default_options(backend))

    def _default_options(self, backend: Backend) -> Any:
        """The translator's default ModelOptions, built once per backend (frozen, so shared)."""
        options = self._defaults.get(backend.name)
        if options is None:
            options = self._defaults[backend.name] = backend.translator.ModelOptions()
        return options
