# smtpbee/cli/_progress
#
# A progress bar for large messages, on stderr, with no dependency.
#
# The body handed to the transport is a BytesIO whose read() counts what the
# transport pulled and redraws one terminal line. Being a seekable file, the
# transports still learn its size (for SIZE=). Drawn only when stderr is a
# terminal and the message is large; otherwise the body goes as plain bytes.
from __future__ import annotations

import io
from typing import TextIO

__all__ = ["PROGRESS_THRESHOLD", "ProgressBody", "wants_progress"]

PROGRESS_THRESHOLD = 1 << 20
"""Messages larger than this (1 MiB) get a progress bar."""

_WIDTH = 30


def wants_progress(size: int, stream: TextIO) -> bool:
    """Whether a message of ``size`` octets deserves a bar on ``stream``."""
    return size > PROGRESS_THRESHOLD and stream.isatty()


class ProgressBody(io.BytesIO):
    """The message as a file that draws how much of it the transport has read."""

    def __init__(self, data: bytes, stream: TextIO) -> None:
        super().__init__(data)
        self._total = len(data)
        self._stream = stream
        self._shown = -1

    def read(self, size: int | None = -1, /) -> bytes:
        piece = super().read(size)
        self._draw(self.tell(), done=not piece)
        return piece

    def _draw(self, sent: int, *, done: bool) -> None:
        percent = 100 * sent // self._total if self._total else 100
        if percent == self._shown and not done:
            return
        self._shown = percent
        filled = _WIDTH * percent // 100
        bar = "#" * filled + "-" * (_WIDTH - filled)
        mib = f"{sent / (1 << 20):.1f}/{self._total / (1 << 20):.1f} MiB"
        end = "\n" if done else ""
        self._stream.write(f"\rsending [{bar}] {percent:3d}% {mib}{end}")
        self._stream.flush()
