"""Incremental stream decoders: Server-Sent Events (the WHATWG algorithm) and NDJSON.

Both take bytes as they arrive, split anywhere (a UTF-8 character or a CRLF may straddle two
reads), and return the complete frames so far; ``close()`` returns what the end of the body
completes. Translators only ever see :class:`Frame` values, never ``data:`` lines.
"""

from __future__ import annotations

import codecs

from translators.base import Frame


class SSEDecoder:
    """WHATWG ``text/event-stream`` parsing: LF, CRLF or CR line ends; ``:`` comments; ``data``
    repeated within one event joined by newlines; ``event`` and ``id`` fields; an event is
    dispatched on a blank line. Two deviations, on purpose: a last event that the server ended
    without a blank line (KoboldCpp's ``data: [DONE]``) is dispatched by ``close()``, not
    dropped; and an ``error:`` field (llama.cpp's mid-stream failures) becomes the data of an
    event named ``error`` instead of being ignored."""

    __slots__ = ("_decoder", "_pending", "_data", "_event", "_id", "_has_data", "_after_cr")

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._has_data = False
        self._after_cr = False

    def feed(self, chunk: bytes) -> list[Frame]:
        """Frames completed by ``chunk``."""
        return self._lines(self._decoder.decode(chunk), final=False)

    def close(self) -> list[Frame]:
        """Frames completed by the end of the stream."""
        frames = self._lines(self._decoder.decode(b"", final=True), final=True)
        if self._pending:
            self._line(self._pending, frames)
            self._pending = ""
        self._dispatch(frames)
        return frames

    def _lines(self, text: str, *, final: bool) -> list[Frame]:
        frames: list[Frame] = []
        if not text:
            return frames
        if self._after_cr and text[0] == "\n":
            # the LF of a CRLF split across two reads: the CR already ended the line
            text = text[1:]
        self._after_cr = text.endswith("\r")
        buffer = self._pending + text
        if "\r" in buffer:
            buffer = buffer.replace("\r\n", "\n").replace("\r", "\n")
        lines = buffer.split("\n")
        self._pending = lines.pop()
        for line in lines:
            self._line(line, frames)
        return frames

    def _line(self, line: str, frames: list[Frame]) -> None:
        if not line:
            self._dispatch(frames)
            return
        if line[0] == ":":
            return
        name, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "error":
            # llama.cpp's server reports a failure after the stream started as
            # "error: {...}" (a field WHATWG would ignore): keep it, as an "error" event
            self._event = "error"
            self._data.append(value)
            self._has_data = True
        elif name == "id":
            if "\0" not in value:
                self._id = value
        # "retry" and unknown fields are ignored, as the algorithm says.

    def _dispatch(self, frames: list[Frame]) -> None:
        if self._has_data:
            frames.append(Frame("\n".join(self._data), self._event or None, self._id))
        self._data = []
        self._has_data = False
        self._event = None


class NDJSONDecoder:
    """Newline-delimited JSON (Ollama): one frame per non-empty line; a last line without a
    newline is completed by ``close()``."""

    __slots__ = ("_decoder", "_pending")

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""

    def feed(self, chunk: bytes) -> list[Frame]:
        """Frames completed by ``chunk``."""
        text = self._pending + self._decoder.decode(chunk)
        lines = text.split("\n")
        self._pending = lines.pop()
        return [Frame(line.strip()) for line in lines if line.strip()]

    def close(self) -> list[Frame]:
        """The last line, if the body did not end with a newline."""
        rest = (self._pending + self._decoder.decode(b"", final=True)).strip()
        self._pending = ""
        return [Frame(rest)] if rest else []


def decode_all(raw: bytes, framing: str, piece: int | None = None) -> list[Frame]:
    """Decode a whole body at once, or fed in pieces of ``piece`` bytes (tests, transcripts)."""
    decoder: SSEDecoder | NDJSONDecoder = SSEDecoder() if framing == "sse" else NDJSONDecoder()
    step = piece or max(len(raw), 1)
    frames: list[Frame] = []
    for start in range(0, len(raw), step):
        frames.extend(decoder.feed(raw[start : start + step]))
    frames.extend(decoder.close())
    return frames
