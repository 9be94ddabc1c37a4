"""Coverage-guided fuzzing of kit's decoders with atheris.

    python fuzz/run.py TARGET [libFuzzer flags, e.g. -max_total_time=60]

TARGET is one of the names in fuzz/targets.py. ``make fuzz`` runs each for a
bounded time. Any exception other than kit's own errors is a crash.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    sys.path.insert(0, str(Path(__file__).parent))
    from targets import TARGETS

    from kit.errors import KitError


def main() -> None:
    name = sys.argv.pop(1)
    target, seed = TARGETS[name]
    corpus = Path(__file__).parent / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "seed").write_bytes(seed)

    def one(data: bytes) -> None:
        try:
            target(data)
        except KitError:
            pass

    atheris.Setup([sys.argv[0], str(corpus), *sys.argv[1:]], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
