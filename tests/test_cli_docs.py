"""docs/CLI.md must match the commands' own --help and the exit-code constants."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from kit.cli import common, plain

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "CLI.md"
FIX = "docs/CLI.md is out of date: run '.venv/bin/python scripts/gen_cli_docs.py'"


def generator() -> ModuleType:
    path = ROOT / "scripts" / "gen_cli_docs.py"
    spec = importlib.util.spec_from_file_location("gen_cli_docs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def header() -> str:
    text = DOC.read_text(encoding="utf-8")
    head, sep, _ = text.partition(generator().MARKER)
    assert sep, f"docs/CLI.md lost its generated-section marker; {FIX}"
    return head


def test_reference_matches_help() -> None:
    current = DOC.read_text(encoding="utf-8")
    assert generator().render(current) == current, FIX


def test_exit_code_table_matches_constants() -> None:
    rows = re.findall(
        r"^\| (\d+) \| `([A-Z_]+)` \| [^|]+ \| ([^|]+) \|$", header(), re.MULTILINE
    )
    documented = {name: (int(code), run.strip()) for code, name, run in rows}
    expected = {
        "OK": (common.OK, "the child's own status"),
        "DENIED": (common.DENIED, str(common.RUN_CODES[common.DENIED])),
        "USAGE": (common.USAGE, str(common.USAGE)),
        "MALFORMED": (common.MALFORMED, str(common.RUN_CODES[common.MALFORMED])),
        "MEDIA": (common.MEDIA, str(common.RUN_CODES[common.MEDIA])),
        "HOME": (common.HOME, str(common.RUN_CODES[common.HOME])),
        "JOURNAL": (common.JOURNAL, str(common.RUN_CODES[common.JOURNAL])),
        "INTERNAL": (common.INTERNAL, str(common.RUN_CODES[common.INTERNAL])),
        "NOT_FOUND": (common.NOT_FOUND, str(common.NOT_FOUND)),
        "INTERRUPTED": (common.INTERRUPTED, str(common.INTERRUPTED)),
        "BROKEN_PIPE": (plain.BROKEN_PIPE, str(plain.BROKEN_PIPE)),
    }
    assert documented == expected
    # Every code kit run reserves for itself is in the table.
    reserved = {*common.RUN_CODES.values(), common.NOT_FOUND}
    assert reserved <= {int(run) for _, run in documented.values() if run.isdigit()}


def test_environment_documented() -> None:
    text = header()
    for variable in ("KIT_HOME", "KIT_PASSPHRASE_FILE"):
        assert f"| `{variable}` |" in text, variable
