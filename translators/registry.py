"""Every translator by the name config uses for it: adding a backend is one line here."""

from __future__ import annotations

from .base import Translator
from .mock import Mock
from .openai import OpenAI

TRANSLATORS: dict[str, type[Translator]] = {
    cls.name: cls
    for cls in (
        Mock,
        OpenAI,
    )
}
