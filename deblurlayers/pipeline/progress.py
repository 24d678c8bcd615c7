"""A progress bar with frames/s and ETA: tqdm's when it is installed, else one line on stderr."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

__all__ = ["Progress"]


class Progress:
    """Counts frames towards ``total``; ``enabled=False`` prints nothing."""

    def __init__(self, total: int, desc: str, enabled: bool = True, stream: Optional[TextIO] = None):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.stream = stream or sys.stderr
        self.done, self.start, self._last = 0, time.perf_counter(), 0.0
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, desc=desc, unit="frame", file=self.stream, dynamic_ncols=True)

    def update(self, frames: int) -> None:
        self.done += frames
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(frames)
            return
        now = time.perf_counter()
        if now - self._last >= 1.0 or self.done >= self.total:
            self._last = now
            self.stream.write(self._line(now) + ("\n" if not self.stream.isatty() or self.done >= self.total else "\r"))
            self.stream.flush()

    def _line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        return (f"{self.desc}: {self.done}/{self.total} frames, {rate:.2f} frames/s, "
                f"elapsed {elapsed:.0f} s, ETA {eta:.0f} s")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
