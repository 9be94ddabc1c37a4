"""Policy commands: check and show the workflow identities declared in bundles/."""

from __future__ import annotations

import shlex
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from kit import encoding
from kit.cli.common import DENIED, HomeOpt, JsonOpt, emit_json, handled, home_path, say
from kit.cli.plain import line_out
from kit.cli.signer_cmds import utc
from kit.duration import parse_duration
from kit.errors import UsageError
from kit.signer.identity import (
    SUFFIX,
    Identity,
    PolicyCheck,
    Problem,
    declaration_files,
    load_identities,
    load_identity,
)
from kit.signer.inventory import build_inventory
from kit.signer.signer import Signer

DEFAULT_DIR = Path("bundles")

policy_app = typer.Typer(
    help="Workflow identities declared as code in bundles/: check and show them.\n\n"
    "Examples: kit policy check; kit policy check bundles --json; "
    "kit policy show release-publish-prod",
    no_args_is_help=True,
)

DirArg = Annotated[
    Path,
    typer.Argument(
        help="Folder of <name>.toml declarations, searched recursively.",
        show_default=True,
    ),
]


def _problem_map(p: Problem) -> dict[str, object]:
    return {"file": str(p.path), "line": p.line, "message": p.message}


def _check_map(result: PolicyCheck) -> dict[str, object]:
    return {
        "ok": result.ok,
        "directory": str(result.directory),
        "files": result.files,
        "identities": [
            {
                "name": i.name,
                "file": str(i.path),
                "environment": i.environment,
                "task": i.task,
                "risk": i.risk,
                "digest": i.digest,
            }
            for i in result.identities
        ],
        "problems": [_problem_map(p) for p in result.problems],
        "retired": [_problem_map(p) for p in result.retired],
    }


@policy_app.command("check")
@handled()
def check(directory: DirArg = DEFAULT_DIR, json_out: JsonOpt = False) -> None:
    """Validate every identity declaration under DIR (default: bundles/).

    Prints one FILE:LINE: message line per problem on stdout and a summary on
    stderr. Exit 0 when every declaration is valid, 1 when any is not, 4 when
    DIR cannot be read. A retired identity is a note, not a failure.

    Example: kit policy check bundles
    """
    result = load_identities(directory, now=int(time.time()))
    if json_out:
        emit_json(_check_map(result))
    else:
        for p in result.problems:
            line_out(str(p))
        for p in result.retired:
            line_out(f"{p} (note)")
        bad = len({p.path for p in result.problems})
        say(
            f"kit policy check: {result.files} declaration(s), "
            f"{len(result.identities)} valid, {len(result.problems)} problem(s) "
            f"in {bad} file(s), {len(result.retired)} retired"
        )
    if not result.ok:
        raise typer.Exit(DENIED)


def _find(directory: Path, name: str) -> Path:
    if not encoding.NAME_RE.fullmatch(name):
        raise UsageError(f"identity name {name!r} is not a valid name")
    matches = [p for p in declaration_files(directory) if p.name == name + SUFFIX]
    if not matches:
        raise UsageError(f"no declaration {name}{SUFFIX} under {directory}")
    if len(matches) > 1:
        where = ", ".join(str(p) for p in matches)
        raise UsageError(f"identity {name} is declared more than once: {where}")
    return matches[0]


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit} ({seconds} s)"
    return f"{seconds} s"


def _human(i: Identity) -> list[str]:
    commands = [shlex.join(c) for c in i.commands]
    rows = [
        ("name", i.name),
        ("owner", i.owner),
        ("purpose", " ".join(i.purpose.split())),
        ("environment", i.environment),
        ("task", i.task),
        ("commands", commands[0]),
        *[("", c) for c in commands[1:]],
        ("datasets", ", ".join(i.datasets) or "(none: --dataset is refused)"),
        ("risk", f"{i.risk}, {i.approvals} approval(s) required"),
        ("max lifetime", _span(i.max_lifetime)),
        ("max uses", str(i.max_uses)),
        ("delivery", ", ".join(i.delivery)),
        ("rotate every", _span(i.rotation_period)),
        ("retire on", str(i.retire_on) if i.retire_on else "(not set)"),
        ("file", str(i.path)),
        ("digest", f"sha256:{i.digest}"),
    ]
    return [f"{k + ':' if k else '':<14}{v}" for k, v in rows]


@policy_app.command("show")
@handled()
def show(
    name: Annotated[str, typer.Argument(help="Identity name, e.g. test-harness-dev.")],
    directory: Annotated[
        Path, typer.Option("--dir", help="Folder of declarations.")
    ] = DEFAULT_DIR,
    json_out: JsonOpt = False,
) -> None:
    """Print one validated declaration (commands shell-quoted; --json gives
    the exact argv prefixes).

    Example: kit policy show release-publish-prod --json
    """
    identity = load_identity(_find(directory, name))
    if json_out:
        emit_json(identity.to_map())
        return
    for line in _human(identity):
        line_out(line)


@handled()
def inventory(
    directory: Annotated[
        Path,
        typer.Option("--bundles", envvar="KIT_BUNDLES", help="Folder of declarations."),
    ] = DEFAULT_DIR,
    home: HomeOpt = None,
    lifetime_cap: Annotated[
        str,
        typer.Option(help="Flag identities whose max_lifetime exceeds this."),
    ] = "7d",
    json_out: JsonOpt = False,
) -> None:
    """List every workflow identity: owner, environment, risk, outstanding
    bundles, last known use (from reconciled receipts) and flags.

    Example: kit inventory --bundles bundles --json
    """
    now = int(time.time())
    check = load_identities(directory, now=now)
    if check.problems:
        say(
            f"kit: warning: {len(check.problems)} problem(s) in {directory}; "
            "identities with problems show as deleted (run kit policy check)"
        )
    signer = Signer(home_path(home))
    try:
        records, usage = signer.ledger.bundles(), signer.ledger.usage()
        revoked = frozenset(
            v for k, v in signer.ledger.revocations() if k == "identity"
        )
    finally:
        signer.close()
    reports = build_inventory(
        check,
        records,
        usage,
        now=now,
        lifetime_cap=parse_duration(lifetime_cap, "--lifetime-cap"),
        revoked=revoked,
    )
    if json_out:
        emit_json([asdict(r) for r in reports])
        return
    for r in reports:
        seen = utc(r.last_use) if r.last_use else "never"
        line_out(
            f"{r.name}  owner {r.owner or '-'}, env {r.environment}, {r.risk} risk, "
            f"{r.bundles} bundle(s), last use {seen}"
        )
        for o in r.outstanding:
            line_out(
                f"    outstanding {o.bundle_id} on {o.host}, {o.uses_left} use(s) "
                f"left, expires {utc(o.expires_at)}"
            )
        for flag in r.flags:
            line_out(f"    FLAG {flag}")
    flagged = sum(1 for r in reports if r.flags)
    say(f"kit inventory: {len(reports)} identity(ies), {flagged} flagged")
