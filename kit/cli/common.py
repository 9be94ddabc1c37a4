"""Shared CLI plumbing: exit codes, --home, passphrases, error mapping."""

from __future__ import annotations

import functools
import getpass
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer

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
from kit.home import default_home

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

P = ParamSpec("P")
R = TypeVar("R")

STATE = {"debug": False}

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="KIT_HOME",
        help="kit home folder (default: KIT_HOME, else the platform's data folder).",
        show_default=False,
    ),
]
PassFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        envvar="KIT_PASSPHRASE_FILE",
        help="Read the passphrase from this file (first line) instead of a prompt.",
        show_default=False,
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Machine-readable output on stdout.")
]


def home_path(home: Path | None) -> Path:
    return home if home is not None else default_home()


def say(message: str) -> None:
    """Human messages go to stderr; stdout is kept for data."""
    print(message, file=sys.stderr)


def emit_json(obj: Any) -> None:
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


def fail(exc: KitError, *, run: bool = False) -> NoReturn:
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
    raise typer.Exit(code)


def handled(run: bool = False) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Map KitError to the exit-code table; anything else is an internal error
    reported without a traceback unless --debug."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except KitError as exc:
                if STATE["debug"]:
                    raise
                fail(exc, run=run)
            except (typer.Exit, typer.Abort, KeyboardInterrupt):
                raise
            except BrokenPipeError:  # the reader went away (e.g. | head)
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(141) from None
            except Exception as exc:  # the process boundary: no traceback leaks
                if STATE["debug"]:
                    raise
                say(
                    f"kit: internal error ({type(exc).__name__}); rerun with --debug "
                    "for details"
                )
                raise typer.Exit(RUN_CODES[INTERNAL] if run else INTERNAL) from None

        return inner

    return wrap


def read_passphrase(passfile: Path | None, *, confirm: bool = False) -> bytes:
    """From --passphrase-file / KIT_PASSPHRASE_FILE, else a hidden prompt.
    A passphrase file must be readable by its owner only."""
    if passfile is not None:
        from kit.fsutil import check_private, read_regular

        try:
            check_private(passfile)
            data = read_regular(passfile, 4096, "passphrase file")
        except (MediaError, FormatError, HomeError) as exc:
            raise HomeError(f"passphrase file: {exc}") from None
        line = data.split(b"\n", 1)[0].rstrip(b"\r")
        if not line:
            raise HomeError(f"passphrase file {passfile} is empty")
        return _long_enough(line, confirm)
    if not sys.stdin.isatty():
        raise UsageError(
            "no passphrase: use --passphrase-file or KIT_PASSPHRASE_FILE, "
            "or run from a terminal to be prompted"
        )
    first = getpass.getpass("Passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise UsageError("the passphrases do not match")
    if not first:
        raise UsageError("the passphrase is empty")
    return _long_enough(first.encode(), confirm)


MIN_NEW_PASSPHRASE = 8


def _long_enough(passphrase: bytes, new: bool) -> bytes:
    if new and len(passphrase) < MIN_NEW_PASSPHRASE:
        raise UsageError(
            f"a new passphrase needs at least {MIN_NEW_PASSPHRASE} characters"
        )
    return passphrase


def parse_command(text: str) -> tuple[str, ...]:
    """One --command value, split as a shell would, as UTF-8 argv."""
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
