"""Time is always passed in. The library never reads the clock on its own."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> int:
        """Seconds since the Unix epoch, UTC."""
        ...


class SystemClock:
    """The real clock; used by the CLI only."""

    def now(self) -> int:
        return int(time.time())


class FixedClock:
    """A clock frozen at ``t`` (tests, vectors)."""

    def __init__(self, t: int) -> None:
        self.t = t

    def now(self) -> int:
        return self.t
