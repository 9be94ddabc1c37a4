"""The offline host's hot path: ``kit verify`` and ``kit run`` without typer.

A host runs ``kit run`` before every job, so its start-up time is paid
every time. typer, the pydantic it loads when a command runs, rich, and the
signer and auditor modules cost more than the verification itself
(docs/BENCHMARKS.md). The ``kit`` script therefore starts here: ``main``
hands the plain spellings of ``kit verify`` and ``kit run`` to the same
implementation functions the typer commands call (``verify_bundle``,
``run_bundle``), and everything else, including ``--help``, misspelt or
unknown options, missing arguments and anything ambiguous, to typer, so help
and usage errors read the same whichever path parsed the line.

The accepted options are spelt out in ``COMMANDS``; tests/test_cli_fast.py
derives the same table from the click commands typer builds, so the two
parsers cannot drift apart.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from kit.cli.plain import (
    ask_yes,
    broken_pipe,
    emit_json,
    flush_stdout,
    internal,
    parse_command,
    refusal,
    say,
)

if TYPE_CHECKING:
    from kit.formats.bundle import Claims
    from kit.host.host import Host

VALUE, MULTIPLE, FLAG = "value", "multiple", "flag"


class CommandSpec(NamedTuple):
    """One command's grammar as the fast parser accepts it."""

    argument: str  # the single positional argument's parameter name
    options: dict[str, tuple[str, str]]  # --option: (parameter name, kind)
    required: tuple[str, ...]  # required options' parameter names
    rest: str | None = None  # parameter taking every word after '--'
    envvars: tuple[tuple[str, str], ...] = ()  # (parameter, variable)
    defaults: tuple[tuple[str, Any], ...] = ()  # other than None / False


COMMANDS = {
    "verify": CommandSpec(
        argument="bundle",
        options={
            "--task": ("task", VALUE),
            "--command": ("command", VALUE),
            "--dataset": ("dataset", MULTIPLE),
            "--deliver": ("deliver", VALUE),
            "--home": ("home", VALUE),
            "--json": ("json_out", FLAG),
        },
        required=("task",),
        envvars=(("home", "KIT_HOME"),),
    ),
    "run": CommandSpec(
        argument="bundle",
        options={
            "--task": ("task", VALUE),
            "--home": ("home", VALUE),
            "--deliver": ("deliver", VALUE),
            "--keep-env": ("keep_env", MULTIPLE),
            "--dataset": ("dataset", MULTIPLE),
            "--yes": ("yes", FLAG),
        },
        required=("task",),
        rest="command",
        envvars=(("home", "KIT_HOME"),),
        defaults=(("deliver", "env"),),
    ),
}


def parse(name: str, args: list[str]) -> dict[str, Any] | None:
    """The parameters of ``kit NAME ARGS``, or None to leave the line to typer.

    Accepted: one positional argument, ``--opt VALUE`` / ``--opt=VALUE`` /
    ``--flag`` from the table in any order, and for ``run`` the command after
    a first ``--``. Refused (None), so typer decides: anything else,
    including a value that looks like an option, an empty --home, repeated
    positionals and a missing required part.
    """
    spec = COMMANDS[name]
    head, rest = args, list[str]()
    if spec.rest is not None:
        if "--" not in args:
            return None
        cut = args.index("--")
        head, rest = args[:cut], args[cut + 1 :]
        if not rest:
            return None
    elif "--" in args:
        return None
    values: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(head):
        token = head[i]
        i += 1
        if not token.startswith("-"):
            positional.append(token)
            continue
        option, eq, value = token.partition("=")
        if option not in spec.options:
            return None
        param, kind = spec.options[option]
        if kind == FLAG:
            if eq:
                return None
            values[param] = True
            continue
        if not eq:
            if i >= len(head) or head[i].startswith("-"):
                return None
            value = head[i]
            i += 1
        if kind == MULTIPLE:
            values.setdefault(param, []).append(value)
        else:
            values[param] = value
    if len(positional) != 1 or any(r not in values for r in spec.required):
        return None
    values[spec.argument] = positional[0]
    for param, var in spec.envvars:
        if param not in values:
            values[param] = os.environ.get(var) or None  # click skips empty ones
    if values.get("home") == "":
        return None
    if values.get("home") is not None:
        values["home"] = Path(values["home"])
    if spec.rest is not None:
        values[spec.rest] = rest
    for param, default in spec.defaults:
        values.setdefault(param, default)
    for param, kind in spec.options.values():
        if param not in values:
            values[param] = False if kind == FLAG else None
    return values


# -- the implementations both parsers call ------------------------------------


def utc(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def home_path(home: Path | None) -> Path:
    if home is not None:
        return home
    from kit.home import default_home

    return default_home()


def _bundle_path(host: Host, ref: str) -> Path:
    from kit import encoding

    p = Path(ref)
    if encoding.HEX32_RE.fullmatch(ref) and not p.exists():
        return host.inbox_path(ref)
    return p


def _read_or_deny(
    host: Host,
    ref: str,
    *,
    task: str,
    command: tuple[str, ...],
    action: str,
    datasets: tuple[str, ...] = (),
) -> bytes:
    """Read the bundle; an unreadable one is still a decision and gets a receipt."""
    from kit.errors import KitError, MediaError

    path = _bundle_path(host, ref)
    try:
        if not os.path.lexists(path):
            raise MediaError(
                f"bundle {ref} is not staged on this host: kit import the media "
                "that carries it first (kit host status lists what is staged)"
                if path != Path(ref)
                else f"bundle {ref}: no such file (give a bundle file, or the id "
                "of a bundle staged by kit import)"
            )
        return host.read_bundle(path)
    except KitError as exc:
        host.record_unreadable(
            exc,
            task=task,
            command=command,
            action=action,
            now=int(time.time()),
            datasets=datasets,
        )
        raise


def verify_bundle(
    *,
    bundle: str,
    task: str,
    command: str | None,
    dataset: list[str] | None,
    deliver: str | None,
    home: Path | None,
    json_out: bool,
) -> None:
    """``kit verify``: raises KitError on a refusal (after its receipt)."""
    from kit.errors import KitError
    from kit.host.host import Host, reason_code
    from kit.host.offline import forbid_network

    forbid_network()
    datasets = tuple(dataset or ())
    if deliver is not None:
        from kit.host.runner import make_delivery  # subprocess & co. only when asked

        make_delivery(deliver)  # a mode kit knows, or a usage error
    host = Host(home_path(home))
    try:
        argv = None
        if command is not None:
            argv = parse_command(command)
        data = _read_or_deny(
            host,
            bundle,
            task=task,
            command=argv or (),
            action="verify",
            datasets=datasets,
        )
        v = host.check(
            data,
            task=task,
            command=argv,
            now=int(time.time()),
            datasets=datasets,
            delivery=deliver,
        )
        left = v.claims.max_uses - len(host.state.uses(v.claims.bundle_id))
    except KitError as exc:
        if json_out:
            try:
                emit_json(
                    {"ok": False, "reason": reason_code(exc), "message": str(exc)}
                )
                flush_stdout()
            except OSError:  # stdout is gone: stderr and the exit code still say it
                broken_pipe()
        raise
    finally:
        host.close()
    c = v.claims
    if json_out:
        emit_json(
            {
                "ok": True,
                "bundle_id": c.bundle_id,
                "task": c.task,
                "env": c.env,
                "expires_at": c.expires_at,
                "uses_left": left,
            }
        )
    say(
        f"ok: bundle {c.bundle_id} would be released for task {c.task} "
        f"({left} of {c.max_uses} use(s) left, expires {utc(c.expires_at)})"
    )


def run_bundle(
    *,
    bundle: str,
    task: str,
    command: list[str],
    home: Path | None,
    deliver: str,
    keep_env: list[str] | None,
    dataset: list[str] | None,
    yes: bool,
) -> int:
    """``kit run``: returns the exit status kit passes on (the child's own, or
    128 + N for a child ended by signal N); raises KitError on a refusal."""
    from kit.errors import JournalError
    from kit.host.host import Host
    from kit.host.offline import forbid_network
    from kit.host.runner import make_delivery, reserved_file, resolve, run_child

    forbid_network()
    argv = tuple(command)
    datasets = tuple(dataset or ())
    delivery = make_delivery(deliver, tuple(keep_env or ()))
    host = Host(home_path(home))
    slot = contextlib.ExitStack()  # a --deliver file file, made before the use
    reserved: list[Path] = []

    def ready() -> None:
        if delivery.mode == "file":
            reserved.append(slot.enter_context(reserved_file()))

    try:
        data = _read_or_deny(
            host, bundle, task=task, command=argv, action="run", datasets=datasets
        )
        confirm: Callable[[Claims], bool] | None = None
        if not yes:
            if sys.stdin and sys.stdin.isatty():
                confirm = lambda c: _confirm(c, argv, deliver)  # noqa: E731
            else:
                confirm = _no_tty
        release = host.authorize(
            data,
            task=task,
            command=argv,
            now=int(time.time()),
            datasets=datasets,
            delivery=deliver,
            resolve=resolve,
            confirm=confirm,
            ready=ready,
        )
        say(
            f"kit: released bundle {release.verified.claims.bundle_id} "
            f"(use {release.use} of {release.verified.claims.max_uses}) to {argv[0]}"
        )
        status, ms = run_child(
            (release.program, *argv[1:]),
            release.verified.claims.secret_name,
            release.secret,
            delivery,
            on_start_error=lambda why: say(f"kit: {why} (the use is spent)"),
            reserved=reserved[0] if reserved else None,
        )
        try:
            host.record_exit(
                release, status=status, duration_ms=ms, now=int(time.time())
            )
        except JournalError as exc:
            # The secret is out and the command has run: its status is the
            # answer (a caller retrying on 124 would spend another use); the
            # release receipt stands, and the missing exit receipt is said.
            say(
                f"kit: error: {argv[0]} ran and ended with status "
                f"{_shell_status(status)}, but its exit receipt could not be "
                f"written: {exc}; the release receipt (use {release.use}) stands"
            )
    finally:
        slot.close()  # the reserved file and its folder, whatever happened
        host.close()
    return _shell_status(status)


def _shell_status(status: int) -> int:
    """A child ended by signal N reports -N; the shell convention is 128 + N."""
    return status if status >= 0 else 128 - status


def _no_tty(c: Claims) -> bool:
    """High risk with nobody at a terminal: release only with --yes."""
    say(
        f"kit: bundle {c.bundle_id} is high risk; without a terminal to confirm "
        "on, pass --yes to release it"
    )
    return False


def _confirm(c: Claims, argv: tuple[str, ...], deliver: str) -> bool:
    """Show a high-risk bundle's claims and what this run will do with it on
    the terminal and ask. Only ``y`` or ``yes`` releases; end of input
    (Ctrl-D) and Ctrl-C are a refusal like ``n``, so the host records
    ``not-confirmed`` and spends no use."""
    import shlex  # a terminal is there: the few ms are a person's

    say(f"kit: bundle {c.bundle_id} is HIGH risk")
    say(f"  identity {c.identity or '(ad hoc)'}, owner {c.owner}")
    say(f"  env {c.env}, task {c.task}, expires {utc(c.expires_at)}")
    say(f"  commands: {'; '.join(' '.join(p) for p in c.commands)}")
    say(f"  datasets: {', '.join(c.datasets) or 'none'}")
    say(f"  this run: {shlex.join(argv)}")
    say(f"  the secret goes to it as {c.secret_name}, by {deliver}")
    return ask_yes("Release the secret for this run? [y/N]: ")


# -- dispatch -----------------------------------------------------------------


def _exit_code(exc: BaseException, *, run: bool) -> int:
    """The exit code the typer command would give for ``exc``, and the same
    message: both paths report through kit/cli/plain.py."""
    from kit.errors import KitError

    if isinstance(exc, KitError):
        return refusal(exc, run=run)
    if isinstance(exc, KeyboardInterrupt):
        say("\nkit: interrupted (Ctrl-C)")
        return 130  # as the typer commands (kit/cli/common.py) say it
    if isinstance(exc, BrokenPipeError):
        return broken_pipe()
    if isinstance(exc, Exception):
        return internal(exc, run=run)
    raise exc


def dispatch(argv: list[str]) -> int | None:
    """Run ``kit verify`` / ``kit run`` from ``argv`` (without the program
    name) and return the exit code, or None when typer should parse it."""
    if not argv or argv[0] not in COMMANDS:
        return None
    name = argv[0]
    values = parse(name, argv[1:])
    if values is None:
        return None
    interactive = sys.stdin is None or sys.stdin.isatty()
    if name == "run" and not values["yes"] and interactive:
        return None  # a person may be asked to confirm: typer's prompt path
    try:
        if name == "verify":
            verify_bundle(**values)
            flush_stdout()
            return 0
        status = run_bundle(**values)
        flush_stdout()
        return status
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - mapped as the typer path does
        return _exit_code(exc, run=name == "run")


def misplaced_command(argv: list[str]) -> str | None:
    """Why a ``kit run`` line does not put its command after ``--`` alone,
    or None (also for every other command, and for ``--help``).

    Were words of the command read as kit's options, a job's own ``--yes``
    would skip the confirmation of a high-risk bundle and its ``--deliver
    fd`` change how the secret is handed over, and the job would not get
    them; so the command must follow ``--``, and only the bundle and kit's
    options may come before it."""
    # Global options (--debug) may come before the command's name.
    name_at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if name_at is None or argv[name_at] != "run":
        return None
    if "--" in argv[:name_at]:
        return None
    args = argv[name_at + 1 :]
    options = COMMANDS["run"].options
    # Walk kit's words as click will: an option that takes a value takes the
    # next word whatever it is, '--' included; the first '--' that is not a
    # value ends kit's words.
    positionals, i, cut, unknown = 0, 0, None, False
    while i < len(args):
        word = args[i]
        i += 1
        if word == "--":
            cut = i
            break
        if word == "--help":
            return None
        if not word.startswith("-"):
            positionals += 1
            continue
        option, eq, _ = word.partition("=")
        if option not in options:
            unknown = True  # typer names it, once the '--' is there
            continue
        if options[option][1] != FLAG and not eq:
            i += 1  # its value
    if cut is not None and unknown:
        return None
    if cut is None:
        return (
            "put the command to run after '--' (kit run BUNDLE --task TASK -- "
            "CMD [ARGS]...), so that none of its words is read as an option "
            "of kit's"
        )
    if positionals > 1:
        return (
            "only the bundle and kit's options may come before '--'; the "
            "command to run and all its arguments go after it"
        )
    return None


def main() -> None:
    """The ``kit`` script."""
    # A standard stream closed by the caller (<&- or >&-) is the null
    # device: nothing to read, output dropped, never an internal error.
    for stream, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, stream) is None:
            setattr(sys, stream, open(os.devnull, mode))
    misplaced = misplaced_command(sys.argv[1:])
    if misplaced is not None:
        say(f"kit: error: {misplaced}")
        sys.exit(2)
    code = dispatch(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from kit.cli.main import main as typer_main

    typer_main()
