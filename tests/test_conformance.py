"""Checks every registered translator against the contract, whatever backend it speaks."""

from __future__ import annotations

import inspect

import pytest
from pydantic import ValidationError

from translators.base import Translator
from translators.registry import TRANSLATORS
from translators.request import OPENAI_FIELDS

NAMES = sorted(TRANSLATORS)


@pytest.mark.parametrize("name", NAMES)
def test_every_openai_field_is_accounted_for(name: str) -> None:
    """Mapped, declared unsupported, ignored on purpose, or handled by a named function."""
    cls = TRANSLATORS[name]
    missing = sorted(f for f in OPENAI_FIELDS if not cls.params.accounts_for(f))
    assert not missing, f"{name}: the ParamMap says nothing about {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_translator_shape(name: str) -> None:
    cls = TRANSLATORS[name]
    assert issubclass(cls, Translator) and cls.name == name
    assert cls.framing in ("sse", "ndjson", "json")
    assert cls.accepts and cls.accepts <= {"chat", "completion"}
    assert cls.__doc__ and cls.Options.__doc__ is not None
    # the contract's methods keep their signatures, so the pipeline can call any translator
    for method in ("build_request", "parse_response", "parse_stream", "parse_error", "exchange", "prepare"):
        assert list(inspect.signature(getattr(cls, method)).parameters) == list(
            inspect.signature(getattr(Translator, method)).parameters
        ), f"{name}.{method} changed its signature"
    # options must reject typos so config errors are located
    with pytest.raises(ValidationError):
        cls.Options.model_validate({"no_such_option_xyz": 1})
