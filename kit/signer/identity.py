"""Workflow identities: one reviewed TOML declaration per workflow (bundles/).

A declaration says who owns a workflow, why it exists and the widest scope
the signer may ever issue for it: one environment, one task, exact command
prefixes, named datasets, a risk level, caps on lifetime and uses, the
approvals it needs and how often its secret must rotate. Issuance stays
inside it; ``kit policy check`` validates the whole folder.

The loader is strict: unknown, missing or mistyped keys, names outside
``NAME_RE``, a file not named ``<name>.toml`` and caps above the format's
global limits are all refused, each as a :class:`Problem` with the file and
line. ``tomllib`` keeps no positions, so :func:`locate_keys` finds them in
the text (its limits are in its docstring and bundles/README.md).

The digest of a declaration is SHA-256 over the exact file bytes, so any
edit, even to a comment, is a new declaration version in the ledger.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from kit import encoding
from kit.duration import parse_duration
from kit.errors import FormatError, KitError, MediaError
from kit.formats.bundle import (
    ARG_RE,
    DELIVERY_MODES,
    MAX_ARGS,
    MAX_COMMANDS,
    MAX_LIFETIME,
    MAX_USES,
)
from kit.fsutil import read_regular

SUFFIX = ".toml"
FILE_CAP = 64 * 1024
MAX_FILES = 1000
MAX_DATASETS = 32
MAX_APPROVALS = 7  # with the issuer, the 8 signatures a bundle may carry
MAX_PURPOSE = 500
MIN_LIFETIME = 60
MIN_ROTATION = 3600
MAX_ROTATION = 5 * 365 * 86400
RISKS = ("low", "medium", "high")

# A team mailbox, lower case: the accountable owner of a workflow.
OWNER_RE = re.compile(
    r"[a-z0-9][a-z0-9._+-]{0,63}@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
    r"(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+"
)

KEYS = (
    "name",
    "owner",
    "purpose",
    "environment",
    "task",
    "commands",
    "datasets",
    "risk",
    "max_lifetime",
    "max_uses",
    "approvals",
    "rotation_period",
)
OPTIONAL_KEYS = ("retire_on", "delivery")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a declaration, at ``path:line`` (line 0: the folder)."""

    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        if self.line <= 0:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"


class DeclarationError(FormatError):
    """A declaration is invalid; ``problems`` lists every reason found."""

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")
        self.problems = problems


@dataclass(frozen=True)
class Identity:
    """A validated declaration. ``commands`` are exact argv prefixes."""

    name: str
    owner: str
    purpose: str
    environment: str
    task: str
    commands: tuple[tuple[str, ...], ...]
    datasets: tuple[str, ...]
    risk: str
    max_lifetime: int
    max_uses: int
    approvals: int
    rotation_period: int
    retire_on: date | None
    delivery: tuple[str, ...]
    path: Path
    digest: str  # hex SHA-256 of the file bytes

    @property
    def retired_at(self) -> int | None:
        """Unix time the identity retires: 00:00 UTC on ``retire_on``."""
        if self.retire_on is None:
            return None
        d = self.retire_on
        return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())

    def is_retired(self, now: int) -> bool:
        at = self.retired_at
        return at is not None and now >= at

    def declares_command(self, prefix: tuple[str, ...]) -> bool:
        """True when ``prefix`` equals a declared prefix or extends one (and so
        allows no more than it). Element-wise equality, no patterns."""
        return any(prefix[: len(c)] == c for c in self.commands)

    def to_map(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "owner": self.owner,
            "purpose": self.purpose,
            "environment": self.environment,
            "task": self.task,
            "commands": [list(c) for c in self.commands],
            "datasets": list(self.datasets),
            "risk": self.risk,
            "max_lifetime": self.max_lifetime,
            "max_uses": self.max_uses,
            "approvals": self.approvals,
            "rotation_period": self.rotation_period,
            "retire_on": None if self.retire_on is None else str(self.retire_on),
            "delivery": list(self.delivery),
            "file": str(self.path),
            "digest": self.digest,
        }


# -- positions ------------------------------------------------------------------


@dataclass
class KeyPosition:
    """Where a top-level key sits: its line, and the line each element of an
    array value starts on (first nesting level only)."""

    line: int
    items: list[int] = field(default_factory=list)


_KEY_RE = re.compile(
    r"""[ \t]*([A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')[ \t]*[.=]"""
)
_HEADER_RE = re.compile(r"""[ \t]*\[\[?[ \t]*([A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*')""")


def locate_keys(text: str) -> tuple[dict[str, KeyPosition], list[tuple[str, int]]]:
    """Find the line of every top-level key in a flat TOML text.

    Returns the first position of each key and every repeat as (key, line).
    A key counts only at the start of a line, outside strings and brackets;
    a dotted key ``a.b`` and a table header ``[a]`` are attributed to ``a``.
    Array elements are located at the first level only, so a problem deep in
    ``commands[1][2]`` points at the line where ``commands[1]`` starts.
    Quoted keys are taken verbatim between the quotes (no escape decoding).
    Text that is not valid TOML gives best-effort positions; tomllib decides.
    """
    found: dict[str, KeyPosition] = {}
    repeats: list[tuple[str, int]] = []
    i, n, line = 0, len(text), 1
    depth = 0
    current: KeyPosition | None = None
    expect_item = False
    at_line_start = True
    while i < n:
        if at_line_start and depth == 0:
            at_line_start = False
            key, end, assigned = _match_key(text, i)
            if key is not None:
                pos = KeyPosition(line)
                if key in found:
                    if assigned:  # dotted keys and [[tables]] may repeat
                        repeats.append((key, line))
                else:
                    found[key] = pos
                current = pos if assigned else None
                i = end
                continue
        ch = text[i]
        if ch == "\n":
            line += 1
            at_line_start = True
            i += 1
            continue
        if ch in " \t\r":
            i += 1
            continue
        if ch == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        if depth == 1 and expect_item and ch not in ",]}" and current is not None:
            current.items.append(line)
            expect_item = False
        if ch in "\"'":
            i, line = _skip_string(text, i, line)
            continue
        if ch in "[{":
            depth += 1
            if depth == 1:
                expect_item = True
        elif ch in "]}":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 1:
            expect_item = True
        i += 1
    return found, repeats


def _match_key(text: str, i: int) -> tuple[str | None, int, bool]:
    """A key or table header starting the line at ``i``: (key, index after its
    ``=`` or after the header line, whether a value follows)."""
    eol = text.find("\n", i)
    eol = len(text) if eol < 0 else eol
    m = _HEADER_RE.match(text, i, eol)
    if m:
        return _unquote(m.group(1)), eol, False
    m = _KEY_RE.match(text, i, eol)
    if not m:
        return None, i, False
    if text[m.end() - 1] == "=":
        return _unquote(m.group(1)), m.end(), True
    eq = text.find("=", m.end(), eol)  # dotted key a.b = ...
    return _unquote(m.group(1)), (eq + 1 if eq >= 0 else eol), False


def _unquote(key: str) -> str:
    return key[1:-1] if key[:1] in "\"'" else key


def _skip_string(text: str, i: int, line: int) -> tuple[int, int]:
    """Skip the string starting at ``i``; returns the index after it and the
    line it ends on. An unterminated string runs to the end of its line (or of
    the text, for a multi-line one)."""
    quote = text[i]
    multi = text.startswith(quote * 3, i)
    i += 3 if multi else 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and quote == '"':
            if i + 1 < len(text) and text[i + 1] == "\n":
                line += 1
            i += 2
            continue
        if ch == "\n":
            if not multi:
                return i, line
            line += 1
        elif multi and text.startswith(quote * 3, i):
            i += 3
            while i < len(text) and text[i] == quote:  # up to two extra quotes
                i += 1
            return i, line
        elif not multi and ch == quote:
            return i + 1, line
        i += 1
    return i, line


# -- one declaration ------------------------------------------------------------


class _Checker:
    """Reads one parsed declaration, collecting every problem with its line."""

    def __init__(
        self, path: Path, doc: dict[str, Any], pos: dict[str, KeyPosition]
    ) -> None:
        self.path = path
        self.doc = doc
        self.pos = pos
        self.problems: list[Problem] = []

    def line(self, key: str, item: int | None = None) -> int:
        pos = self.pos.get(key)
        if pos is None:
            return 1
        if item is not None and item < len(pos.items):
            return pos.items[item]
        return pos.line

    def bad(self, key: str, message: str, item: int | None = None) -> None:
        self.problems.append(Problem(self.path, self.line(key, item), message))

    def get(self, key: str) -> Any:
        if key not in self.doc:
            self.problems.append(Problem(self.path, 1, f"missing key {key!r}"))
        return self.doc.get(key)

    def name(self, key: str) -> str | None:
        v = self.get(key)
        if v is None:
            return None
        if not isinstance(v, str) or not encoding.NAME_RE.fullmatch(v):
            self.bad(key, f"{key} must be a name matching {_NAME}, got {_show(v)}")
            return None
        return v

    def integer(self, key: str, lo: int, hi: int, hint: str = "") -> int | None:
        v = self.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            self.bad(
                key, f"{key} must be an integer from {lo} to {hi}{hint}, got {_show(v)}"
            )
            return None
        return v

    def duration(self, key: str, lo: int, hi: int, cap_note: str) -> int | None:
        v = self.get(key)
        if v is None:
            return None
        seconds: int
        if isinstance(v, str):
            try:
                seconds = parse_duration(v, key)
            except KitError as exc:
                self.bad(key, str(exc))
                return None
        elif isinstance(v, int) and not isinstance(v, bool):
            seconds = v
        else:
            self.bad(
                key,
                f'{key} must be a duration like "8h" or integer '
                f"seconds, got {_show(v)}",
            )
            return None
        if seconds < lo:
            self.bad(key, f"{key} {_show(v)} is under the minimum of {lo} s")
            return None
        if seconds > hi:
            self.bad(
                key, f"{key} {_show(v)} ({seconds} s) is over {cap_note} of {hi} s"
            )
            return None
        return seconds


_NAME = encoding.NAME_RE.pattern


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_owner(c: _Checker) -> str | None:
    v = c.doc.get("owner")
    if v is None or (isinstance(v, str) and not v.strip()):
        c.bad(
            "owner",
            "no owner: every identity needs an accountable owner, "
            "a team address such as release-eng@example.com",
        )
        return None
    if not isinstance(v, str) or not OWNER_RE.fullmatch(v):
        c.bad(
            "owner",
            f"owner must be a lower-case team address like "
            f"release-eng@example.com, got {_show(v)}",
        )
        return None
    return v


def _check_purpose(c: _Checker) -> str | None:
    v = c.get("purpose")
    if v is None:
        return None
    if not isinstance(v, str) or not v.strip() or len(v) > MAX_PURPOSE:
        c.bad(
            "purpose",
            f"purpose must be a non-empty string of at most "
            f"{MAX_PURPOSE} characters, got {_show(v)}",
        )
        return None
    return v.strip()


def _check_environment(c: _Checker) -> str | None:
    v = c.doc.get("environment")
    if isinstance(v, list):
        c.bad(
            "environment",
            "environment must be exactly one name; declare the "
            "same workflow in another environment as a separate identity",
        )
        return None
    return c.name("environment")


def _check_commands(c: _Checker) -> tuple[tuple[str, ...], ...] | None:
    v = c.get("commands")
    if v is None:
        return None
    if not isinstance(v, list):
        c.bad(
            "commands",
            "commands must be a list of argv prefixes such as "
            '[["python3", "release.py"]]',
        )
        return None
    if not v:
        c.bad(
            "commands",
            "commands is empty: an identity that may run nothing "
            "cannot be issued; declare at least one argv prefix",
        )
        return None
    if len(v) > MAX_COMMANDS:
        c.bad("commands", f"commands has {len(v)} entries, over {MAX_COMMANDS}")
        return None
    out: list[tuple[str, ...]] = []
    ok = True
    for i, cmd in enumerate(v):
        checked = _check_command(c, i, cmd)
        if checked is None:
            ok = False
        elif checked in out:
            c.bad("commands", f"commands[{i}] repeats {list(checked)}", i)
            ok = False
        else:
            out.append(checked)
    return tuple(out) if ok else None


def _check_command(c: _Checker, i: int, cmd: Any) -> tuple[str, ...] | None:
    where = f"commands[{i}]"
    if not isinstance(cmd, list) or not 1 <= len(cmd) <= MAX_ARGS:
        c.bad(
            "commands",
            f"{where} must be a list of 1 to {MAX_ARGS} strings "
            f"(executable, then fixed arguments), got {_show(cmd)}",
            i,
        )
        return None
    for arg in cmd:
        if not isinstance(arg, str) or not ARG_RE.fullmatch(arg):
            c.bad(
                "commands",
                f"{where}: each argument must be a string of 1 to "
                f"256 characters without NUL, got {_show(arg)}",
                i,
            )
            return None
    if any(ch.isspace() for ch in cmd[0]):
        c.bad(
            "commands",
            f"{where}: executable {cmd[0]!r} contains white space; "
            "write each argument as its own string",
            i,
        )
        return None
    return tuple(cmd)


def _check_datasets(c: _Checker) -> tuple[str, ...] | None:
    v = c.get("datasets")
    if v is None:
        return None
    if not isinstance(v, list) or len(v) > MAX_DATASETS:
        c.bad(
            "datasets",
            f"datasets must be a list of at most {MAX_DATASETS} names, got {_show(v)}",
        )
        return None
    out: list[str] = []
    for i, name in enumerate(v):
        if not isinstance(name, str) or not encoding.NAME_RE.fullmatch(name):
            c.bad(
                "datasets",
                f"datasets[{i}] must be a name matching {_NAME}, got {_show(name)}",
                i,
            )
            return None
        if name in out:
            c.bad("datasets", f"datasets[{i}] repeats {name!r}", i)
            return None
        out.append(name)
    return tuple(out)


def _check_delivery(c: _Checker) -> tuple[str, ...] | None:
    """Optional: the delivery modes a host may use (default: all). Leaving out
    "env" keeps the secret out of the child's environment."""
    if "delivery" not in c.doc:
        return DELIVERY_MODES
    v = c.doc["delivery"]
    if (
        not isinstance(v, list)
        or not v
        or any(m not in DELIVERY_MODES for m in v)
        or len(set(v)) != len(v)
    ):
        c.bad(
            "delivery",
            "delivery must be a non-empty list of distinct modes from "
            f"{', '.join(DELIVERY_MODES)}, got {_show(v)}",
        )
        return None
    return tuple(v)


def _check_risk_and_approvals(c: _Checker) -> tuple[str | None, int | None]:
    risk = c.get("risk")
    if risk is not None and risk not in RISKS:
        c.bad("risk", f"risk must be one of {', '.join(RISKS)}, got {_show(risk)}")
        risk = None
    approvals = c.integer("approvals", 0, MAX_APPROVALS)
    if risk == "high" and approvals == 0:
        c.bad("approvals", "a high-risk identity needs at least 1 approval")
        approvals = None
    return risk, approvals


def _check_retire_on(c: _Checker) -> date | None:
    v = c.doc.get("retire_on")
    if v is None:
        return None
    if isinstance(v, datetime) or not isinstance(v, date):
        c.bad(
            "retire_on",
            f"retire_on must be a TOML date like 2027-06-30 "
            f"(no time, no quotes), got {_show(v)}",
        )
        return None
    return v


def parse_identity(data: bytes, path: Path) -> Identity:
    """Validate one declaration read from ``path``. Raises DeclarationError
    listing every problem found."""
    parsed = _parse(data, path)
    if parsed.identity is None:
        raise DeclarationError(tuple(parsed.problems))
    return parsed.identity


@dataclass
class _Parsed:
    identity: Identity | None
    problems: list[Problem]
    positions: dict[str, KeyPosition] = field(default_factory=dict)


def _parse(data: bytes, path: Path) -> _Parsed:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return _Parsed(None, [Problem(path, line, "not valid UTF-8")])
    positions, repeats = locate_keys(text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return _Parsed(None, [_syntax_problem(path, text, exc, repeats)])

    c = _Checker(path, doc, positions)
    for key in sorted(set(doc) - set(KEYS) - set(OPTIONAL_KEYS)):
        c.bad(key, f"unknown key {key!r}")
    name = c.name("name")
    if name is not None and path.name != name + SUFFIX:
        c.bad(
            "name",
            f"name {name!r} does not match the file name; "
            f"the file must be {name}{SUFFIX}",
        )
    owner = _check_owner(c)
    purpose = _check_purpose(c)
    environment = _check_environment(c)
    task = c.name("task")
    commands = _check_commands(c)
    datasets = _check_datasets(c)
    risk, approvals = _check_risk_and_approvals(c)
    max_lifetime = c.duration(
        "max_lifetime", MIN_LIFETIME, MAX_LIFETIME, "the global lifetime cap"
    )
    max_uses = c.integer("max_uses", 1, MAX_USES, " (the global cap)")
    rotation = c.duration(
        "rotation_period", MIN_ROTATION, MAX_ROTATION, "the longest rotation period"
    )
    retire_on = _check_retire_on(c)
    delivery = _check_delivery(c)

    if c.problems:
        c.problems.sort(key=lambda p: p.line)
        return _Parsed(None, c.problems, positions)
    # Each None above has added a problem; the asserts only narrow types.
    assert name and owner and purpose and environment and task  # noqa: S101
    assert commands is not None and datasets is not None  # noqa: S101
    assert delivery is not None  # noqa: S101
    assert risk is not None and approvals is not None  # noqa: S101
    assert max_lifetime and max_uses and rotation  # noqa: S101
    identity = Identity(
        name=name,
        owner=owner,
        purpose=purpose,
        environment=environment,
        task=task,
        commands=commands,
        datasets=datasets,
        risk=risk,
        max_lifetime=max_lifetime,
        max_uses=max_uses,
        approvals=approvals,
        rotation_period=rotation,
        retire_on=retire_on,
        delivery=delivery,
        path=path,
        digest=hashlib.sha256(data).hexdigest(),
    )
    return _Parsed(identity, [], positions)


_AT_LINE = re.compile(r"\(at line (\d+), column \d+\)")


def _syntax_problem(
    path: Path,
    text: str,
    exc: tomllib.TOMLDecodeError,
    repeats: list[tuple[str, int]],
) -> Problem:
    message = str(exc)
    m = _AT_LINE.search(message)
    # tomllib reports a repeated key as "Cannot overwrite a value", sometimes
    # "at end of document"; name the key when it is the first fault.
    if repeats and (m is None or repeats[0][1] <= int(m.group(1))):
        key, line = repeats[0]
        return Problem(path, line, f"key {key!r} is declared twice")
    if m:
        return Problem(
            path, int(m.group(1)), f"TOML syntax: {message[: m.start()]}".rstrip()
        )
    return Problem(path, max(text.count("\n"), 1), f"TOML syntax: {message}")


def load_identity(path: Path) -> Identity:
    """Read and validate one declaration file. Raises DeclarationError, or
    MediaError when the file cannot be read."""
    return parse_identity(read_regular(path, FILE_CAP, "identity declaration"), path)


# -- the set --------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyCheck:
    """The outcome of checking a folder of declarations.

    ``identities`` holds the valid ones; ``problems`` fail the check;
    ``retired`` are notes (a retired declaration may stay for the record, and
    issuance refuses it), not failures.
    """

    directory: Path
    identities: tuple[Identity, ...]
    problems: tuple[Problem, ...]
    retired: tuple[Problem, ...]
    files: int

    @property
    def ok(self) -> bool:
        return not self.problems


def declaration_files(directory: Path) -> list[Path]:
    """Every ``*.toml`` under ``directory`` (recursively, sorted; symbolic links
    to folders are not followed). Raises MediaError when it cannot be listed."""
    if directory.is_symlink() or not directory.is_dir():
        raise MediaError(
            f"{directory}: not a folder of identity declarations (give the "
            "policy folder with --bundles or KIT_BUNDLES)"
        )
    found: list[Path] = []

    def fail(exc: OSError) -> None:
        raise MediaError(f"{directory}: cannot be listed ({exc.strerror})")

    for root, dirs, files in os.walk(directory, onerror=fail):
        dirs.sort()
        found.extend(Path(root) / f for f in sorted(files) if f.endswith(SUFFIX))
        if len(found) > MAX_FILES:
            raise MediaError(f"{directory}: more than {MAX_FILES} declarations")
    return found


def load_identities(directory: Path, *, now: int) -> PolicyCheck:
    """Load and check every declaration under ``directory`` as one set.

    Beyond each file's own rules: names are unique, no two identities share
    an (environment, task) pair, and there is at least one declaration.
    Identities whose ``retire_on`` day has begun (UTC) at ``now`` are noted.
    Raises MediaError only when the folder itself cannot be listed.
    """
    files = declaration_files(directory)
    problems: list[Problem] = []
    identities: list[Identity] = []
    lines: dict[Path, dict[str, KeyPosition]] = {}
    for path in files:
        parsed = _load_one(path)
        problems.extend(parsed.problems)
        if parsed.identity is not None:
            identities.append(parsed.identity)
            lines[path] = parsed.positions
    if not files:
        problems.append(Problem(directory, 0, f"no *{SUFFIX} declarations found"))
    problems.extend(_set_problems(identities, lines))
    retired = tuple(
        Problem(
            i.path,
            _line(lines, i.path, "retire_on"),
            f"identity {i.name} retired on {i.retire_on}; kit issues nothing for it",
        )
        for i in identities
        if i.is_retired(now)
    )
    return PolicyCheck(
        directory, tuple(identities), tuple(problems), retired, len(files)
    )


def _load_one(path: Path) -> _Parsed:
    try:
        data = read_regular(path, FILE_CAP, "identity declaration")
    except KitError as exc:
        return _Parsed(None, [Problem(path, 1, str(exc).replace(f" {path}", "", 1))])
    return _parse(data, path)


def _line(lines: dict[Path, dict[str, KeyPosition]], path: Path, key: str) -> int:
    pos = lines.get(path, {}).get(key)
    return pos.line if pos is not None else 1


def _set_problems(
    identities: list[Identity], lines: dict[Path, dict[str, KeyPosition]]
) -> Iterator[Problem]:
    by_name: dict[str, Identity] = {}
    by_scope: dict[tuple[str, str], Identity] = {}
    for i in identities:
        first = by_name.setdefault(i.name, i)
        if first is not i:
            where = f"{first.path}:{_line(lines, first.path, 'name')}"
            yield Problem(
                i.path,
                _line(lines, i.path, "name"),
                f"identity name {i.name!r} is already declared at {where}",
            )
        first = by_scope.setdefault((i.environment, i.task), i)
        if first is not i:
            where = f"{first.path}:{_line(lines, first.path, 'task')}"
            yield Problem(
                i.path,
                _line(lines, i.path, "task"),
                f"environment {i.environment!r} and task {i.task!r} are already "
                f"claimed by identity {first.name} ({where}); one workflow, one "
                "identity",
            )
