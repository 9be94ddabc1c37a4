"""Durations as people write them: 90s, 15m, 8h, 2d, or plain seconds."""

from __future__ import annotations

import re

from kit.errors import UsageError

_DURATION = re.compile(r"(\d{1,9})([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, what: str) -> int:
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise UsageError(f"{what} {text!r} is not a duration like 90s, 15m, 8h or 2d")
    return int(m.group(1)) * _UNITS[m.group(2)]
