"""A small progress bar on stderr: redrawn in place on a terminal, a line per 10% otherwise."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class Progress:
    """``update(n)`` from any thread; ``close()`` draws the final state and ends the line."""

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        unit: str = "bytes",
        initial: int = 0,
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.done = initial
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._start = time.monotonic()
        self._start_done = initial
        self._last_draw = 0.0
        self._last_decile = -1
        self._lock = threading.Lock()
        self._draw()

    def _amount(self, n: float) -> str:
        return human_bytes(n) if self.unit == "bytes" else f"{n:.0f}"

    def _line(self) -> str:
        parts = [self.label]
        unit = "" if self.unit == "bytes" else f" {self.unit}"
        if self.total:
            parts.append(f"{100 * self.done / self.total:5.1f}%")
            parts.append(f"{self._amount(self.done)} / {self._amount(self.total)}{unit}")
        else:
            parts.append(f"{self._amount(self.done)}{unit}")
        elapsed = time.monotonic() - self._start
        if elapsed > 0.5 and self.unit == "bytes":
            parts.append(f"{human_bytes((self.done - self._start_done) / elapsed)}/s")
        return "  ".join(p.strip() for p in parts)

    def _draw(self, final: bool = False) -> None:
        if self.tty:
            now = time.monotonic()
            if final or now - self._last_draw >= 0.1:
                self._last_draw = now
                self.stream.write("\r\033[K" + self._line() + ("\n" if final else ""))
                self.stream.flush()
            return
        decile = int(10 * self.done / self.total) if self.total else -1
        # A line per tenth; at the end, the final line unless that tenth's line already said it.
        if decile > self._last_decile or (final and (decile != self._last_decile or not self.total)):
            self._last_decile = decile
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def update(self, n: int) -> None:
        with self._lock:
            self.done += n
            self._draw()

    def close(self) -> None:
        with self._lock:
            self._draw(final=True)
