"""Timing helpers: every figure is a median over repeats, with min and max.

In-process figures time a batch of ``inner`` calls per repeat and report the
time per call; whole-process figures time one process per repeat. Baselines
are measured in the same run, interleaved with the figure they divide, so a
machine busy with something else slows both.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stat:
    """Seconds per operation over the repeats."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    def as_json(self) -> dict[str, Any]:
        return {
            "median_s": self.median,
            "min_s": self.min,
            "max_s": self.max,
            "repeats": len(self.samples),
        }


@dataclass
class Row:
    """One line of the table."""

    figure: str
    value: str  # formatted median (min..max)
    baseline: str  # what it is divided by
    ratio: float | None  # figure / baseline (or as the row says)
    target: str
    verdict: str  # "met", "MISSED", "report" or a reason it was skipped
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "value": self.value,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "target": self.target,
            "verdict": self.verdict,
            **self.data,
        }


def per_call(fn: Callable[[], object], inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def interleaved(
    fns: dict[str, Callable[[], object]], *, repeats: int, inner: int
) -> dict[str, Stat]:
    """Time each function ``inner`` times per repeat, taking turns, so that
    drift in the machine's load hits all of them alike."""
    for fn in fns.values():  # warm up: imports, caches, lazy set-up
        per_call(fn, max(1, inner // 10))
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(per_call(fn, inner))
    return {k: Stat(v) for k, v in samples.items()}


def process_time(argv: Sequence[str], env: dict[str, str], **kw: Any) -> float:
    """Wall time of one process from fork to exit; it must succeed."""
    t0 = time.perf_counter()
    done = subprocess.run(
        list(argv),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
        **kw,
    )
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(
            f"{argv[0]} exited {done.returncode}: {done.stderr.decode()[-400:]}"
        )
    return elapsed


def processes(
    cmds: dict[str, Callable[[int], tuple[Sequence[str], dict[str, str]]]],
    *,
    repeats: int,
) -> dict[str, Stat]:
    """Start each command once per repeat, taking turns. ``cmds`` maps a name
    to a function of the repeat index giving argv and environment (``run``
    needs a fresh bundle each time)."""
    for make in cmds.values():  # warm up: page cache, bytecode cache
        process_time(*make(-1))
    samples: dict[str, list[float]] = {k: [] for k in cmds}
    for i in range(repeats):
        for name, make in cmds.items():
            samples[name].append(process_time(*make(i)))
    return {k: Stat(v) for k, v in samples.items()}


def fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_stat(st: Stat) -> str:
    return f"{fmt_time(st.median)} ({fmt_time(st.min)}..{fmt_time(st.max)})"


def bench_env() -> dict[str, str]:
    """The environment for whole-process figures: bytecode cached (as after a
    pip install) in a private folder, so the source tree is left alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(
        tempfile.gettempdir(), "kit-bench-pycache"
    )
    return env
