"""The guides' examples run as written, and the shipped man pages and shell
completions match the commands.

Conventions for examples are in tests/docrunner.py. To add a guide, add its
path to GUIDES: its ``sh`` blocks then run in order in a fresh folder.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from docrunner import ROOT, check, parse, run, unrun_commands

# Guides whose examples run: every guide of a role, and the QR guide.
GUIDES = ["docs/operator.md", "docs/host.md", "docs/auditor.md", "docs/qr.md"]
# Documents that must not show a command outside an ``sh`` block.
NO_HIDDEN_COMMANDS = [*GUIDES, "docs/threat-model.md"]


@pytest.mark.parametrize("guide", GUIDES)
def test_guide_examples_run(guide: str, tmp_path: Path) -> None:
    blocks = parse(ROOT / guide)
    result = run(blocks, tmp_path)
    check(blocks, result)
    # Every kit line of an example ran: the log holds at least one invocation
    # per line (loops and hidden steps add more), and no excuse is empty.
    shown = [ln for b in blocks if b.runs and not b.hidden for ln in b.kit_lines()]
    assert shown, f"{guide}: no kit example found"
    assert len(result.invoked) >= len(shown)
    for line in shown:
        words = re.search(r"kit\s+((?:[a-z][\w.-]*\s*){1,2})", line)
        assert words, line
        start = words.group(1).strip()
        assert any(inv.startswith(start) for inv in result.invoked), (
            f"{guide}: {line.strip()!r} never ran"
        )
    # A command with no variable or glob in it ran with exactly its arguments.
    for block in blocks:
        if block.runs and not block.hidden:
            for command in block.literal_commands():
                assert command in result.invoked, (
                    f"{block.where()}: kit {command!r} never ran as shown"
                )
    for block in blocks:
        if block.skip is not None:
            assert len(block.skip) > 10, f"{block.where()}: give a real reason"


@pytest.mark.parametrize("guide", NO_HIDDEN_COMMANDS)
def test_no_command_example_hides_outside_sh_blocks(guide: str) -> None:
    assert unrun_commands(parse(ROOT / guide)) == []


def test_every_kit_example_is_run_or_excused() -> None:
    ran = excused = 0
    for guide in GUIDES:
        for block in parse(ROOT / guide):
            if block.lang != "sh" or block.hidden:
                continue
            if block.runs:
                ran += len(block.kit_lines())
            else:
                assert block.skip, block.where()
                excused += len(block.kit_lines())
    # The guides run far more than they excuse.
    assert ran > 4 * excused, (ran, excused)


def test_runner_catches_hidden_commands_and_wrong_exits(tmp_path: Path) -> None:
    guide = tmp_path / "probe.md"
    guide.write_text("```text\nkit issue --host x\nkit: denied\n```\n")
    assert unrun_commands(parse(guide)) == ["probe.md:2: kit issue --host x"]
    guide.write_text("<!-- doctest: exit 1 -->\n```sh\nkit --version\n```\n")
    blocks = parse(guide)
    with pytest.raises(AssertionError, match=r"stopped at the block at probe\.md:2"):
        check(blocks, run(blocks, tmp_path / "work"))
    guide.write_text("<!-- doctest: expect kit 9 -->\n```sh\nkit --version\n```\n")
    blocks = parse(guide)
    with pytest.raises(AssertionError, match="'kit 9' not in its output"):
        check(blocks, run(blocks, tmp_path / "work2"))
    guide.write_text("<!-- doctest: skip -->\n```sh\nkit --version\n```\n")
    with pytest.raises(AssertionError, match="needs a reason"):
        parse(guide)
    # Commands checked word for word: continuations joined, the pipe and
    # comment cut off, and those with a variable left to the looser check.
    guide.write_text(
        "```sh\nkit issue --host x \\\n    --env 'a b' | tee out  # note\n"
        'id=$(kit issue --host "$h")\nkit qr encode out/*.kit --out f\n```\n'
    )
    assert parse(guide)[0].literal_commands() == ["issue --host x --env a b"]


def generator() -> ModuleType:
    path = ROOT / "scripts" / "gen_cli_docs.py"
    spec = importlib.util.spec_from_file_location("gen_cli_docs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_threat_model_names_only_real_tests() -> None:
    text = (ROOT / "docs" / "threat-model.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"`(test_\w+)`", text))
    defined = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        defined |= set(re.findall(r"^\s*def (test_\w+)", path.read_text(), re.M))
    assert len(cited) > 50
    assert sorted(cited - defined) == []


def test_man_pages_and_completions_match_the_commands() -> None:
    gen = generator()
    wanted = gen.wanted_files()
    for path, text in wanted.items():
        assert path.is_file(), f"{path} missing; run scripts/gen_cli_docs.py"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path} is out of date; run scripts/gen_cli_docs.py"
        )
    assert gen.stale_files() == []
    # One page per command, each naming every option of its command.
    for path, cmd in gen.command_tree():
        page = (gen.MAN_DIR / f"{gen.page_name(path)}.1").read_text()
        for param in cmd.params:
            for opt in param.opts:
                assert opt.replace("-", "\\-") in page or opt.upper() in page


def test_wheel_ships_every_generated_file() -> None:
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = spec["tool"]["setuptools"]["data-files"]
    shipped = {
        (ROOT / match).resolve()
        for target, patterns in data.items()
        for pattern in patterns
        for match in ROOT.glob(pattern)
        if str(match.parent.relative_to(ROOT)) == target
    }
    assert set(generator().wanted_files()) <= shipped


@pytest.mark.parametrize(
    ("words", "offered", "not_offered"),
    [
        (["kit", "ho"], {"host"}, {"issue"}),
        (["kit", "host", ""], {"init", "status"}, {"issue"}),
        (["kit", "host", "init", "--n"], {"--name"}, {"--task"}),
        (["kit", "run", "--home", "h", "--ta"], {"--task"}, set()),
        (["kit", "trust", "add-key", "--r"], {"--role"}, set()),
        (["kit", "issue", "--host", ""], set(), {"--host", "--ttl"}),
    ],
)
def test_bash_completion_offers_commands_and_options(
    words: list[str], offered: set[str], not_offered: set[str]
) -> None:
    script = (
        f"source {generator().BASH}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        '_kit\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True, timeout=30
    )
    got = set(done.stdout.split())
    assert offered <= got and not (not_offered & got), got
