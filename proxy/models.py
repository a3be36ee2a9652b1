"""``/v1/models``: configured model names plus what each live backend serves now (cached)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Mapping, Sequence

from translators.errors import ModelNotFound

from .router import Router

LIST_TIMEOUT = 5.0


def model_object(model_id: str, owner: str, created: int) -> dict[str, Any]:
    """One OpenAI model object."""
    return {"id": model_id, "object": "model", "created": created, "owned_by": owner}


class ModelCatalog:
    """Lists models; upstream lists are cached for ``ttl`` seconds per backend."""

    def __init__(self, router: Router, ttl: float, log: Any) -> None:
        self.router = router
        self.ttl = ttl
        self.log = log
        self.created = int(time.time())
        self._cache: dict[str, tuple[float, Sequence[str | Mapping[str, Any]]]] = {}

    async def _upstream(self, name: str) -> Sequence[str | Mapping[str, Any]]:
        cached = self._cache.get(name)
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        backend = self.router.backends[name]
        try:
            ids = await asyncio.wait_for(backend.translator.list_models(backend.transport), LIST_TIMEOUT)
        except Exception as exc:  # a backend that cannot list its models must not break the list
            self.log.warning("models_list_failed", backend=name, error=str(getattr(exc, "message", exc)) or type(exc).__name__)
            ids = cached[1] if cached else []
            return ids
        self._cache[name] = (time.monotonic(), ids)
        return ids

    async def list(self) -> dict[str, Any]:
        """The ``/v1/models`` answer."""
        data = [model_object(m.name, m.backend, self.created) for m in self.router.configured()]
        names = sorted(self.router.backends)
        lists = await asyncio.gather(*(self._upstream(n) for n in names))
        for name, ids in zip(names, lists, strict=True):
            for entry in ids:
                if isinstance(entry, str):
                    data.append(model_object(f"{name}/{entry}", name, self.created))
                else:  # extra facts (Horde worker counts) ride along on the model object
                    extra = {k: v for k, v in entry.items() if k not in ("id", "object", "created", "owned_by")}
                    data.append({**model_object(f"{name}/{entry['id']}", name, self.created), **extra})
        return {"object": "list", "data": data}

    def get(self, model_id: str) -> dict[str, Any]:
        """One model object; 404 when the name does not route anywhere."""
        try:
            route = self.router.resolve(model_id)
        except ModelNotFound:
            raise ModelNotFound(f"The model '{model_id}' does not exist here", param="model", code="model_not_found") from None
        return model_object(model_id, route.backend.name, self.created)
