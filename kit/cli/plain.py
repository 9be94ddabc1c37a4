"""CLI plumbing that needs no CLI framework: the exit-code table, how a
refusal is reported, output helpers and the --command parser.

kit/cli/fast.py (the host's hot path) and kit/cli/common.py (the typer
commands) both use this module, so a refusal reads and exits the same
whichever path parsed the line, and the hot path never loads typer, not even
to report an error.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from kit.errors import (
    DeniedError,
    FormatError,
    HomeError,
    JournalError,
    KitError,
    MediaError,
    UnauthenticatedError,
    UsageError,
)

# The exit-code table (docs/CLI.md#exit-codes). kit run passes the child's own
# status through and uses RUN_OFFSET + n for its own refusals.
OK, DENIED, USAGE, MALFORMED, MEDIA, HOME, JOURNAL, INTERNAL = 0, 1, 2, 3, 4, 5, 6, 70
RUN_CODES = {
    DENIED: 120,
    MALFORMED: 121,
    MEDIA: 122,
    HOME: 123,
    JOURNAL: 124,
    INTERNAL: 125,
}
NOT_FOUND = 127
BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a reader gone away


# Messages quote names and claims that come from media, bundles and hosts an
# attacker may control: on a terminal a control character (C0, ESC, DEL, C1)
# could retitle the window, hide words of a command shown for confirmation or
# rewrite the screen, and a newline forge a line, so each is shown as \xNN.
_ALL_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def safe(text: str) -> str:
    """``text`` as one line: every control character, newline included,
    escaped (a receipt field or file name shown in a table row)."""
    return text.translate(_ALL_CONTROLS)


def line_out(line: str) -> None:
    """A line of a report on stdout, control characters escaped as by
    :func:`say` (names and free text in it may come from files)."""
    print(line.translate(_ALL_CONTROLS))


def say(message: str) -> None:
    """Human messages go to stderr, one line each, every control character
    escaped, newlines too: a file name from a stick holding a newline must
    not print a line of its own that reads like kit's ("kit: staged ...").
    A message may start with a newline (to end a prompt's line); stdout is
    kept for data."""
    lead = "\n" if message.startswith("\n") else ""
    print(lead + message[len(lead) :].translate(_ALL_CONTROLS), file=sys.stderr)


def ask_yes(question: str) -> bool:
    """Ask ``question`` on the terminal (stderr) and read one line of standard
    input. Only ``y`` or ``yes`` is yes; end of input (Ctrl-D) and Ctrl-C
    are no, said as such. The caller makes sure standard input is a
    terminal (or was told to not ask)."""
    sys.stderr.write(question.translate(_ALL_CONTROLS))
    sys.stderr.flush()
    answer: str | None
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        answer = None
    if not answer:  # Ctrl-C, or end of input: the terminal line has no newline
        how = "interrupted (Ctrl-C)" if answer is None else "no answer (end of input)"
        say(f"\nkit: {how}: taken as no")
        return False
    return answer.strip().lower() in ("y", "yes")


def emit_json(obj: Any) -> None:
    import json  # only --json needs it

    print(json.dumps(obj, indent=2, sort_keys=True))


def exit_code(exc: KitError) -> int:
    if isinstance(exc, DeniedError | UnauthenticatedError):
        return DENIED
    if isinstance(exc, FormatError):
        return MALFORMED
    if isinstance(exc, MediaError):
        return MEDIA
    if isinstance(exc, HomeError):
        return HOME
    if isinstance(exc, JournalError):
        return JOURNAL
    if isinstance(exc, UsageError):
        return USAGE
    return INTERNAL


def refusal(exc: KitError, *, run: bool = False) -> int:
    """Say why kit refused and return its exit code (``kit run`` moves its
    own codes out of the child's way)."""
    code = exit_code(exc)
    label = "denied" if code == DENIED else "error"
    if isinstance(exc, DeniedError):
        say(f"kit: {label} [{exc.code}]: {exc}")
    else:
        say(f"kit: {label}: {exc}")
    if run and code != USAGE:
        code = (
            NOT_FOUND
            if isinstance(exc, DeniedError) and exc.code == "command-not-found"
            else RUN_CODES.get(code, RUN_CODES[INTERNAL])
        )
    return code


def broken_pipe() -> int:
    """The reader of stdout went away (e.g. ``| head``): silence further
    output and return the shell's code for it."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return BROKEN_PIPE


_DB_FAILURES = frozenset({"OperationalError", "DatabaseError"})


def internal(exc: Exception, *, run: bool = False) -> int:
    """Anything that is not a KitError, at the process boundary: named by
    type only, never with a traceback (that is what --debug is for). An
    OSError no file helper claimed (stdout on a full disk, say) is an I/O
    failure, reported as media errors are; a SQLite failure no storage method
    claimed is the home's database failing, reported as home errors are."""
    if isinstance(exc, OSError):
        from kit.fsutil import os_reason

        where = f" ({exc.filename})" if exc.filename else ""
        say(f"kit: error: input/output failed{where}: {os_reason(exc)}")
        return RUN_CODES[MEDIA] if run else MEDIA
    # The database itself failing (locked, full, damaged, unreadable), named
    # without importing sqlite3; kit misusing it (ProgrammingError,
    # InterfaceError, IntegrityError) stays an internal error.
    if type(exc).__module__ == "sqlite3" and type(exc).__name__ in _DB_FAILURES:
        say(f"kit: error: a database of the kit home failed: {exc}")
        return RUN_CODES[HOME] if run else HOME
    say(f"kit: internal error ({type(exc).__name__}); rerun with --debug for details")
    return RUN_CODES[INTERNAL] if run else INTERNAL


def flush_stdout() -> None:
    """Push what was printed out while errors can still be reported (a full
    disk or a closed pipe shows only when the buffer is written)."""
    sys.stdout.flush()


def parse_command(text: str) -> tuple[str, ...]:
    """One --command value, split as a shell would, as UTF-8 argv."""
    import shlex  # only --command needs it

    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        raise UsageError(f"--command {text!r}: {exc}") from None
    if not argv:
        raise UsageError("--command must not be empty")
    try:
        "".join(argv).encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"--command {text!r} is not valid UTF-8") from None
    return argv
