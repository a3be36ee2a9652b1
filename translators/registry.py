"""Every translator by the name config uses for it: adding a backend is one line here."""

from __future__ import annotations

from .base import Translator
from .claude import Claude
from .horde import Horde
from .kobold import Kobold
from .llamacpp import LlamaCpp
from .mancer import Mancer
from .mock import Mock
from .ollama import Ollama
from .ooba import Ooba
from .openai import OpenAI
from .tabby import Tabby

TRANSLATORS: dict[str, type[Translator]] = {
    cls.name: cls
    for cls in (
        Claude,
        Horde,
        LlamaCpp,
        Kobold,
        Mock,
        Ollama,
        OpenAI,
        Ooba,
        Tabby,
        Mancer,
    )
}
