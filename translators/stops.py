"""Stop strings cut by Rosetta from text a backend returns with them (KoboldAI, KoboldCpp 1.76,
Horde and NovelAI include the stop sequence in the output, and may go on past it).

:class:`StopCutter` is fed text as it streams and returns what may be sent now: text that could
still turn out to be the start of a stop string is held back until the next piece settles it,
so a client never sees a stop string half-way. The same cutter serves a whole (non-stream)
answer: feed it once and flush.
"""

from __future__ import annotations

from typing import Iterable


def stop_list(*groups: Iterable[str] | str | None) -> tuple[str, ...]:
    """The stop strings of several sources (a string or a list each), empty ones dropped,
    duplicates removed, first occurrence order kept."""
    out: dict[str, None] = {}
    for group in groups:
        if group is None:
            continue
        for stop in (group,) if isinstance(group, str) else group:
            if isinstance(stop, str) and stop:
                out.setdefault(stop, None)
    return tuple(out)


class StopCutter:
    """Incremental stop-string cutting with a held-back tail.

    ``feed(text)`` returns the text that is safe to send; once a stop string is seen,
    ``stopped`` is True, ``feed`` returns only the text before it and ignores everything after.
    ``flush()`` returns the held-back tail when the answer ended without a stop string.
    """

    __slots__ = ("stops", "stopped", "stop", "_pending")

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.stopped = False
        self.stop: str | None = None  # the stop string that ended the text
        self._pending = ""

    def feed(self, text: str) -> str:
        """The part of ``_pending + text`` that can be sent now."""
        if self.stopped or not text:
            return ""
        buffer = self._pending + text
        cut, which = self._earliest(buffer)
        if which is not None:
            self.stopped = True
            self.stop = which
            self._pending = ""
            return buffer[:cut]
        keep = self._held_tail(buffer)
        self._pending = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The held-back tail (the answer ended and it did not become a stop string)."""
        tail, self._pending = self._pending, ""
        return "" if self.stopped else tail

    def _earliest(self, buffer: str) -> tuple[int, str | None]:
        best, which = len(buffer) + 1, None
        for stop in self.stops:
            at = buffer.find(stop)
            if 0 <= at < best:
                best, which = at, stop
        return best, which

    def _held_tail(self, buffer: str) -> int:
        # the longest end of the buffer that is the beginning of some stop string
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest


def cut_text(text: str, stops: Iterable[str]) -> tuple[str, str | None]:
    """A whole answer cut at its earliest stop string, and that string (None if none)."""
    cutter = StopCutter(stops)
    kept = cutter.feed(text)
    return (kept, cutter.stop) if cutter.stopped else (kept + cutter.flush(), None)
