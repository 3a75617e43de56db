"""One log line per refused request, at most one a second: a client looping bad requests at an internal
model must not turn the server's log into its own (thousands of lines a second)."""

from __future__ import annotations

import time
from collections.abc import Callable


class ThrottledLog:
    """`log(message)` at most every `interval_s`; the lines held back are counted in the next one."""

    def __init__(self, write: Callable[[str], None], interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.write, self.interval_s, self.clock = write, interval_s, clock
        self.next_at = 0.0
        self.held_back = 0

    def __call__(self, message: str) -> None:
        now = self.clock()
        if now < self.next_at:
            self.held_back += 1
            return
        if self.held_back:
            message = f"{message} (and {self.held_back} more like it since the last line)"
        self.write(message)
        self.next_at, self.held_back = now + self.interval_s, 0
