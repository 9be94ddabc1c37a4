"""A short smoke of the fuzz targets (the long runs are ``make fuzz``): random
bytes and mutations of valid objects raise nothing but kit's own errors, and
any single flipped bit, truncation or appended byte is refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.errors import KitError

sys.path.insert(0, str(Path(__file__).parents[1] / "fuzz"))
from targets import TARGETS

NAMES = sorted(TARGETS)
# The manifest is unsigned (its digests protect the files it lists).
SIGNED = [n for n in NAMES if n != "manifest"]


def _feed(name: str, data: bytes) -> None:
    target, _ = TARGETS[name]
    try:
        target(data)
    except KitError:
        pass


@pytest.mark.parametrize("name", NAMES)
def test_seed_is_accepted(name: str) -> None:
    target, seed = TARGETS[name]
    target(seed)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=512))
def test_random_bytes_raise_only_kit_errors(name: str, data: bytes) -> None:
    _feed(name, data)


@pytest.mark.parametrize("name", SIGNED)
@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_single_change_is_refused(name: str, data: st.DataObject) -> None:
    target, seed = TARGETS[name]
    kind = data.draw(st.sampled_from(["flip", "truncate", "append"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(seed) * 8 - 1))
        mutated = bytearray(seed)
        mutated[i // 8] ^= 1 << (i % 8)
        changed = bytes(mutated)
    elif kind == "truncate":
        changed = seed[: data.draw(st.integers(0, len(seed) - 1))]
    else:
        changed = seed + data.draw(st.binary(min_size=1, max_size=8))
    try:
        got = target(changed)
    except KitError:
        return
    # Accepted: only QR frames whose change lies in the unused bits of the
    # last DEFLATE byte, which inflate to the very same object (FORMAT.md
    # 13.2); no other change is accepted, and none changes what is read.
    assert name == "qr-frames", f"{kind} of {name} was accepted"
    assert got == target(seed)
