"""Run the shell examples of a Markdown guide as one real shell session.

The convention, for every guide listed in tests/test_docs.py:

- A fenced block whose info string is ``sh`` is an example: it runs, in order
  with the guide's other examples, in one ``bash`` session started in an empty
  temporary folder holding a copy of ``bundles/``, with the venv's ``kit`` on
  ``PATH``, ``HOME`` inside that folder, no ``KIT_*`` variable and standard
  input from ``/dev/null``. Each block must exit 0.
- Fenced blocks with any other info string (``text``, ``toml``) or none are
  output or file contents, never run. A line in one of them that reads like a
  command (``kit issue ...``, ``$ kit ...``) is refused, so no example hides
  from the runner.
- An HTML comment just before a block changes how it runs; several may stack:

  ``<!-- doctest: skip REASON -->``   not run; REASON is required and names
                                      where the same steps are tested instead
  ``<!-- doctest: exit N -->``         the block must exit N (it then runs in
                                      a subshell, so its variables do not last)
  ``<!-- doctest: expect TEXT -->``    the block's output must contain TEXT

- A comment ``<!-- doctest-hidden`` ... ``-->`` holds commands that run at
  that point but are not shown: the other roles' side of the story (a host
  sending an enrollment request, a stick arriving) and test scaffolding.

Every invocation of ``kit`` is logged through a shell function, so the test
can check that each ``kit`` line of the examples really ran: word for word
when the line holds no variable or glob, else by its sub-command.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_LANGS = {"sh"}
# A line that starts a kit command: optional "$ " prompt, optional VAR=value
# assignments, then kit and a sub-command word (not "kit:", a message).
COMMAND_LINE = re.compile(
    r"^\s*(?:\$\s+)?(?:[A-Z_][A-Z0-9_]*=\S+\s+)*kit\s+-{0,2}[a-z][\w-]*(?:\s|$)"
)
# Anywhere in a shell line: kit as a command word.
KIT_WORD = re.compile(r"(?:^|[|;&(`]|\$\()\s*(?:[A-Z_][A-Z0-9_]*=\S+\s+)*kit\s")
DIRECTIVE = re.compile(r"^<!--\s*doctest:\s*(skip|exit|expect)\b\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    """One fenced block or hidden comment of a guide."""

    guide: str
    line: int
    lang: str
    text: str
    hidden: bool = False
    skip: str | None = None
    exit: int = 0
    expect: list[str] = field(default_factory=list)

    @property
    def runs(self) -> bool:
        return (self.hidden or self.lang in RUN_LANGS) and self.skip is None

    def kit_lines(self) -> list[str]:
        """The lines of this shell block that invoke kit."""
        return [ln for ln in self.text.splitlines() if KIT_WORD.search(strip(ln))]

    def where(self) -> str:
        return f"{self.guide}:{self.line}"

    def literal_commands(self) -> list[str]:
        """The kit commands of this block whose arguments involve no shell
        expansion, each as the invocation log records it (arguments joined
        by spaces): these must have run exactly as shown."""
        found = []
        logical = re.sub(r"\\\n\s*", " ", self.text)
        for line in logical.splitlines():
            line = strip(line)
            start = KIT_WORD.search(line)
            if not start:
                continue
            command = line[start.start() :]
            command = command[command.index("kit") :]
            command = re.split(r"\|\||\||&&|;|>|<|\)", command)[0]
            if re.search(r"[$*?~`]", command):
                continue  # variables, globs: the log holds the expansion
            try:
                words = shlex.split(command)
            except ValueError:
                continue  # an operator inside a quoted argument: cut wrongly
            found.append(" ".join(words[1:]))
        return found


def strip(line: str) -> str:
    """A shell line without a trailing comment (good enough for the guides)."""
    return re.sub(r"\s#\s.*$", "", line)


def apply(block: Block, pending: dict[str, object]) -> None:
    """Give ``block`` the directives read just before it."""
    skip = pending.get("skip")
    block.skip = skip if isinstance(skip, str) else None
    code = pending.get("exit", 0)
    block.exit = code if isinstance(code, int) else 0
    expected = pending["expect"]
    assert isinstance(expected, list)
    block.expect = expected


def parse(path: Path) -> list[Block]:
    """Every fenced block and hidden comment of a guide, with its directives."""
    name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: dict[str, object] = {"expect": []}
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^(\s*)(```+)\s*([\w-]*)(.*)$", line)
        if line.strip().startswith("<!-- doctest-hidden"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "-->")
            block = Block(name, i + 1, "sh", "\n".join(lines[i + 1 : end]), True)
            apply(block, pending)
            blocks.append(block)
            pending = {"expect": []}
            i = end + 1
            continue
        directive = DIRECTIVE.match(line.strip())
        if directive:
            kind, arg = directive.groups()
            if kind == "skip":
                if not arg:
                    raise AssertionError(
                        f"{name}:{i + 1}: doctest: skip needs a reason"
                    )
                pending["skip"] = arg
            elif kind == "exit":
                pending["exit"] = int(arg)
            else:
                expected = pending["expect"]
                assert isinstance(expected, list)
                expected.append(arg)
            i += 1
            continue
        if fence:
            indent, ticks, lang = fence.group(1), fence.group(2), fence.group(3)
            end = next(
                j
                for j in range(i + 1, len(lines))
                if lines[j].strip() == ticks and lines[j].startswith(indent)
            )
            body = "\n".join(ln[len(indent) :] for ln in lines[i + 1 : end])
            block = Block(name, i + 1, lang, body)
            apply(block, pending)
            blocks.append(block)
            pending = {"expect": []}
            i = end + 1
            continue
        if line.strip() and (len(pending) > 1 or pending["expect"]):
            raise AssertionError(
                f"{name}:{i + 1}: a doctest directive must come just before a block"
            )
        i += 1
    return blocks


def unrun_commands(blocks: list[Block]) -> list[str]:
    """Command-like lines in blocks that are neither run nor excused."""
    found = []
    for block in blocks:
        if block.lang in RUN_LANGS or block.hidden:
            continue
        for offset, line in enumerate(block.text.splitlines(), start=1):
            if COMMAND_LINE.match(line):
                found.append(f"{block.guide}:{block.line + offset}: {line.strip()}")
    return found


@dataclass
class Result:
    """What one guide's session did."""

    output: str
    returncode: int
    invoked: list[str]
    segments: dict[int, str]


PRELUDE = """\
kit() { printf '%s\\n' "$*" >> "$KIT_DOC_LOG"; command kit "$@"; }
set -o pipefail
"""


def script(blocks: list[Block]) -> str:
    """One bash script running every runnable block, with markers between."""
    parts = [PRELUDE]
    for index, block in enumerate(blocks):
        if not block.runs:
            continue
        parts.append(f"printf '\\n::doc-block {index}\\n'")
        if block.exit == 0:
            parts += ["set -e", block.text, "set +e"]
        else:
            parts += [
                "set +e",
                "(",
                "set -e",
                block.text,
                ")",
                "__rc=$?",
                f'if [ "$__rc" != {block.exit} ]; then',
                f"  echo '::doc-fail {block.where()}: exit '$__rc'"
                f", expected {block.exit}'",
                "  exit 99",
                "fi",
            ]
    parts.append("printf '\\n::doc-end\\n'")
    return "\n".join(parts) + "\n"


def environment(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    home = work / ".home"
    home.mkdir(exist_ok=True)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(home),
        KIT_DOC_LOG=str(work / ".kit-invocations"),
        LANG="C.UTF-8",
        COLUMNS="100",
        NO_COLOR="1",
        TERM="dumb",
    )
    return env


def run(blocks: list[Block], work: Path, timeout: int = 600) -> Result:
    """Run the blocks as one session in ``work``."""
    shutil.copytree(ROOT / "bundles", work / "bundles")
    env = environment(work)
    done = subprocess.run(
        ["bash", "-c", script(blocks)],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    log = Path(env["KIT_DOC_LOG"])
    invoked = log.read_text().splitlines() if log.exists() else []
    segments: dict[int, str] = {}
    for chunk in re.split(r"^::doc-block ", done.stdout, flags=re.M)[1:]:
        head, _, rest = chunk.partition("\n")
        segments[int(head)] = rest
    return Result(done.stdout, done.returncode, invoked, segments)


def check(blocks: list[Block], result: Result) -> None:
    """Assert that the session ran to its end and every expectation held."""
    tail = result.output[-6000:]
    if "::doc-end" not in result.output:
        last = max(result.segments, default=None)
        where = blocks[last].where() if last is not None else "before any block"
        raise AssertionError(
            f"the examples stopped at the block at {where} "
            f"(exit {result.returncode}):\n{tail}"
        )
    for index, block in enumerate(blocks):
        if not block.runs:
            continue
        out = result.segments.get(index, "")
        for text in block.expect:
            assert text in out, f"{block.where()}: {text!r} not in its output:\n{out}"
        assert "Traceback" not in out, f"{block.where()}: a traceback:\n{out}"
