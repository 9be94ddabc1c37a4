"""A logger whose ``logging`` import waits for the first message.

``kit verify`` and ``kit run`` start a new interpreter for every job and
log only refusals, at debug level; importing ``logging`` up front would be
paid on every run (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Any


class LazyLogger:
    """``logging.getLogger(name)``, imported and made on first use."""

    def __init__(self, name: str) -> None:
        self._name = name

    def debug(self, msg: str, *args: Any) -> None:
        import logging

        logging.getLogger(self._name).debug(msg, *args)
