"""Shared fixtures: a fake upstream and a running Rosetta, both on loopback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import ReplayUpstream, RunningRosetta, replay_upstream, run_rosetta  # noqa: E402


@pytest.fixture
async def upstream() -> AsyncIterator[ReplayUpstream]:
    """A started fake upstream."""
    async with replay_upstream() as fake:
        yield fake


@pytest.fixture
async def rosetta() -> AsyncIterator[Callable[..., Any]]:
    """A factory: ``await rosetta(config_dict)`` starts Rosetta; all are stopped afterwards."""
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:

        async def start(config: dict[str, Any], env: dict[str, str] | None = None) -> RunningRosetta:
            return await stack.enter_async_context(run_rosetta(config, env))

        yield start
