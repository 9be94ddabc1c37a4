"""Decoding gives the same verdicts with msgpack's C extension and its
pure-Python fallback (MSGPACK_PUREPYTHON=1), on valid and damaged inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FUZZ = Path(__file__).parents[1] / "fuzz"

# Runs in a child so msgpack is imported fresh under the chosen implementation.
PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import msgpack
from targets import TARGETS
from kit.errors import KitError
out = {"fallback": msgpack.Unpacker.__module__ == "msgpack.fallback"}
for name, (target, seed) in sorted(TARGETS.items()):
    cases = [seed, seed + b"\\x00", seed[:-1], seed[: len(seed) // 2]]
    cases += [seed[:i] + bytes([seed[i] ^ 0x01]) + seed[i + 1:]
              for i in range(0, len(seed), max(1, len(seed) // 40))]
    verdicts = []
    for data in cases:
        try:
            target(data)
            verdicts.append("ok")
        except KitError as exc:
            verdicts.append(type(exc).__name__ + ": " + str(exc))
    out[name] = verdicts
print(json.dumps(out))
"""


def _verdicts(pure: bool) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "MSGPACK_PUREPYTHON"}
    if pure:
        env["MSGPACK_PUREPYTHON"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(FUZZ)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_c_extension_and_pure_python_agree() -> None:
    native, pure = _verdicts(pure=False), _verdicts(pure=True)
    assert native.pop("fallback") is False
    assert pure.pop("fallback") is True
    assert native == pure
    assert all(v[0] == "ok" for v in native.values())  # type: ignore[index]
