"""Shared CLI plumbing: exit codes, --home, passphrases, error mapping."""

from __future__ import annotations

import functools
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, ParamSpec, TypeVar

import typer

from kit import encoding
from kit.cli.plain import (
    DENIED,
    HOME,
    INTERNAL,
    JOURNAL,
    MALFORMED,
    MEDIA,
    NOT_FOUND,
    OK,
    RUN_CODES,
    USAGE,
    broken_pipe,
    emit_json,
    exit_code,
    flush_stdout,
    internal,
    parse_command,
    refusal,
    say,
)
from kit.errors import FormatError, HomeError, KitError, MediaError, UsageError
from kit.fsutil import check_replaceable
from kit.home import default_home

# The typer-free part lives in kit/cli/plain.py (the hot path shares it);
# the command modules import all of it from here.
__all__ = [
    "DENIED",
    "HOME",
    "INTERNAL",
    "JOURNAL",
    "MALFORMED",
    "MEDIA",
    "NOT_FOUND",
    "OK",
    "RUN_CODES",
    "STATE",
    "USAGE",
    "ForceOpt",
    "HomeOpt",
    "JsonOpt",
    "PassFileOpt",
    "check_name",
    "emit_json",
    "exit_code",
    "fail",
    "handled",
    "home_path",
    "parse_command",
    "read_passphrase",
    "refuse_existing",
    "say",
]

P = ParamSpec("P")
R = TypeVar("R")

STATE = {"debug": False}
INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as a shell reports it and fast.py returns

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


def fail(exc: KitError, *, run: bool = False) -> NoReturn:
    raise typer.Exit(refusal(exc, run=run))


def handled(run: bool = False) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Map KitError to the exit-code table; anything else is an internal error
    reported without a traceback unless --debug."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                result = fn(*args, **kwargs)
                flush_stdout()
                return result
            except KitError as exc:
                if STATE["debug"]:
                    raise
                fail(exc, run=run)
            except (typer.Exit, typer.Abort):
                raise
            except KeyboardInterrupt:  # as the hot path (kit/cli/fast.py) says it
                if STATE["debug"]:
                    raise
                say("\nkit: interrupted (Ctrl-C)")
                raise typer.Exit(INTERRUPTED) from None
            except BrokenPipeError:  # the reader went away (e.g. | head)
                raise typer.Exit(broken_pipe()) from None
            except Exception as exc:  # the process boundary: no traceback leaks
                if STATE["debug"]:
                    raise
                raise typer.Exit(internal(exc, run=run)) from None

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
    try:
        first = getpass.getpass("Passphrase: ")
        if confirm and getpass.getpass("Repeat passphrase: ") != first:
            raise UsageError("the passphrases do not match")
    except (EOFError, KeyboardInterrupt) as exc:
        sys.stderr.write("\n")  # getpass leaves the cursor after its prompt
        how = "end of input (Ctrl-D)" if isinstance(exc, EOFError) else "Ctrl-C"
        raise UsageError(f"no passphrase given: {how} at the prompt") from None
    if not first:
        raise UsageError("the passphrase is empty")
    return _long_enough(first.encode(), confirm)


ForceOpt = Annotated[
    bool, typer.Option("--force", help="Replace an existing --out file.")
]


def refuse_existing(out: Path | None, force: bool) -> None:
    """An --out file that exists is refused (MediaError, exit 4) unless
    --force, as kit qr does; call it before anything is read or written."""
    if out is None:
        return
    if not force and os.path.lexists(out):
        raise MediaError(
            f"{out} already exists; nothing read or written. Choose another "
            "name, or pass --force to replace it"
        )
    folder = out.parent
    if not folder.is_dir():
        raise MediaError(f"{out}: folder {folder} does not exist; nothing written")
    if out.is_dir():
        raise MediaError(f"{out} is a folder; nothing written")
    check_replaceable(out)  # a link, FIFO or device: refused even with --force
    if not os.access(folder, os.W_OK | os.X_OK):
        raise MediaError(f"{out}: folder {folder} is not writable; nothing written")


NAME_RULE = (
    "1 to 63 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
)


def check_name(value: str, option: str) -> str:
    """A name given on the command line (host, env, label, ...): a usage error
    naming the option and the rule when it is not one kit can record."""
    if encoding.NAME_RE.fullmatch(value) is None:
        raise UsageError(
            f"{option} {value[:70]!r} is not a valid name: use {NAME_RULE}"
        )
    return value


MIN_NEW_PASSPHRASE = 8


def _long_enough(passphrase: bytes, new: bool) -> bytes:
    if new and len(passphrase) < MIN_NEW_PASSPHRASE:
        raise UsageError(
            f"a new passphrase needs at least {MIN_NEW_PASSPHRASE} characters"
        )
    return passphrase
