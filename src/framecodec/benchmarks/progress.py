"""Progress of a benchmark run on stderr, whatever stderr is."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Progress on stderr, step k of N with the time elapsed: one line
    rewritten in place on a terminal, one line per step otherwise (CI logs,
    pipes, nohup), so a long run is never silent."""

    def __init__(self, total: int, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = self.stream.isatty()
        self.total = total
        self.step = 0
        self.started = time.monotonic()

    def line(self, text: str) -> str:
        return f"[{time.monotonic() - self.started:5.0f} s] {self.step}/{self.total} {text}"

    def __call__(self, text: str) -> None:
        self.step += 1
        line = self.line(text)
        if self.terminal:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r" + line[:width].ljust(width))
        else:
            self.stream.write(f"bench: {line}\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.terminal:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r" + " " * width + "\r")
            self.stream.flush()
