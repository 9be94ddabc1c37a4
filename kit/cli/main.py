"""``kit``: the command tree. See docs/CLI.md for every command and exit code."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from kit import __version__
from kit.cli.audit_cmds import audit_app, ledger_app, reconcile_cmd
from kit.cli.common import STATE
from kit.cli.host_cmds import host_app, receipts_app, run, verify
from kit.cli.host_cmds import import_cmd as import_media
from kit.cli.policy_cmds import inventory, policy_app
from kit.cli.qr_cmds import qr_app
from kit.cli.signer_cmds import (
    enroll,
    export,
    issue,
    retire,
    revoke,
    signer_app,
)
from kit.cli.trust_cmds import approve, approver_app, trust_app

app = typer.Typer(
    name="kit",
    help="Narrow, short-lived credentials for offline hosts, with signed receipts.\n\n"
    "Operator: kit signer init; kit enroll REQ; kit issue ...; kit export --to DIR\n\n"
    "Host: kit host init ...; kit import DIR; kit run ID --task T -- CMD\n\n"
    "Auditor: kit audit init --trust ROOT; kit reconcile DIR...",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(signer_app, name="signer")
app.add_typer(host_app, name="host")
app.add_typer(receipts_app, name="receipts")
app.add_typer(policy_app, name="policy")
app.add_typer(trust_app, name="trust")
app.add_typer(approver_app, name="approver")
app.add_typer(audit_app, name="audit")
app.add_typer(ledger_app, name="ledger")
app.add_typer(qr_app, name="qr")
app.command("enroll")(enroll)
app.command("issue")(issue)
app.command("approve")(approve)
app.command("export")(export)
app.command("import")(import_media)
app.command("verify")(verify)
app.command("run")(run)
app.command("reconcile")(reconcile_cmd)
app.command("inventory")(inventory)
app.command("revoke")(revoke)
app.command("retire")(retire)


def _version(value: bool) -> None:
    if value:
        print(f"kit {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show tracebacks and debug logs (never secrets)."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    STATE["debug"] = debug
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")


def main() -> None:
    """typer's entry point. The ``kit`` script starts at kit.cli.fast.main,
    which runs the host's hot path (verify, run) without importing this
    module, and calls this for everything else."""
    app()
