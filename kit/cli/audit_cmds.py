"""Auditor commands: audit init, ledger export, reconcile."""

from __future__ import annotations

import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer

from kit.audit.auditor import Auditor, check_inputs, init_auditor, read_inputs
from kit.audit.codes import CODES
from kit.audit.reconcile import load_batches, reconcile
from kit.audit.report import summary_lines, write_csv, write_html, write_json
from kit.cli.common import (
    DENIED,
    HomeOpt,
    JsonOpt,
    PassFileOpt,
    emit_json,
    handled,
    home_path,
    read_passphrase,
    say,
)
from kit.cli.plain import safe
from kit.crypto.sign import fingerprint
from kit.errors import UsageError
from kit.fsutil import read_regular
from kit.home import read_kind
from kit.host.policy import DEFAULT_LEEWAY, MAX_LEEWAY
from kit.media import write_media
from kit.signer.signer import Signer

audit_app = typer.Typer(
    help="The auditor's home: a pinned trust root and the evidence seen so far.",
    no_args_is_help=True,
)
ledger_app = typer.Typer(
    help="The signer's issuance ledger, exported for auditors.", no_args_is_help=True
)


# Receipt fields (task, command, detail, reasons) and file names come from
# hosts and media an attacker may control: each report line is shown as one
# line, control characters escaped (kit/cli/plain.py).


def _show(line: str) -> None:
    print(safe(line))


def _utc(t: int) -> str:
    from kit.audit.report import utc

    return utc(t)


@audit_app.command("init")
@handled()
def audit_init(
    trust: Annotated[
        Path,
        typer.Option(
            "--trust", help="The signer's trust root file (compare its fingerprint)."
        ),
    ],
    home: HomeOpt = None,
) -> None:
    """Create an auditor home that pins a trust root. No secret key is made
    or needed: the auditor only verifies.

    Example: kit audit init --trust /media/usb/trust-root.kit --home ./audit
    """
    path = home_path(home)
    root = init_auditor(path, read_regular(trust, 1 << 16, "trust root"))
    say(f"auditor home: {path}")
    say(f"pinned trust root {root.name} v{root.version}")
    say(f"fingerprint: {fingerprint(root.digest)}")
    say("Compare the fingerprint with the signer's out of band.")


@ledger_app.command("export")
@handled()
def ledger_export(
    to: Annotated[Path, typer.Option("--to", help="Media folder to write to.")],
    home: HomeOpt = None,
    again: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Write every export made so far again (to replace lost media) "
            "as well as the next one.",
        ),
    ] = False,
    passphrase_file: PassFileOpt = None,
) -> None:
    """Write a signed, chained export of the issuance ledger for auditors.

    Holds what was issued since the last export (enrolled hosts, issuances,
    revocations): claims and digests, never a secret or its keyed digest.
    Exports are numbered and chained, so an auditor sees a missing one or
    a removed issuance. Files: ledger-export-<number, 10 digits>.kit.

    Example: kit ledger export --to /media/usb-for-audit
    """
    signer = Signer(home_path(home))
    try:
        now = int(time.time())
        signer.unlock(read_passphrase(passphrase_file))
        made = signer.ledger_exports(now)
        files: dict[str, bytes] = {}
        if again:
            for seq, data in signer.ledger.exports():
                files[_export_name(seq)] = data
        first = signer.ledger.last_export()[0] + 1
        for offset, (data, _) in enumerate(made):
            files[_export_name(first + offset)] = data
        write_media(to, files)  # on media first, then remembered
        signer.commit_ledger_exports(made, now)
    finally:
        signer.close()
    last = first + len(made) - 1
    if again:
        first = 1
    say(f"wrote ledger export(s) {first}..{last} to {to}")


def _export_name(seq: int) -> str:
    return f"ledger-export-{seq:010d}.kit"


@handled()
def reconcile_cmd(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Folders (checked against their SHA256SUMS) or files: receipt "
            "batches, and in an auditor home ledger exports too."
        ),
    ],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
    csv_dir: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help="Auditor home: write bundles.csv and exceptions.csv to this folder.",
        ),
    ] = None,
    html_out: Annotated[
        Path | None,
        typer.Option("--html", help="Auditor home: write a printable HTML report."),
    ] = None,
    leeway: Annotated[
        int,
        typer.Option(
            min=0,
            max=MAX_LEEWAY,
            help="Clock skew, in seconds, allowed when judging whether a release "
            "fell within a bundle's validity; use the hosts' policy leeway.",
        ),
    ] = DEFAULT_LEEWAY,
) -> None:
    """Match receipts to what was issued: per-bundle status and exceptions.

    In an auditor home ('kit audit init'), inputs are ledger exports ('kit
    ledger export') and receipt batches from any hosts and trips, in any
    order; evidence accumulates in the home, the same input twice changes
    nothing, and the verdicts cover everything held. Exits 1 when any
    exception above severity info remains (docs/auditor.md lists every code).

    In a signer home, reconciles the given batches against the ledger and,
    when clean, records uses and anchors; exits 1 on any anomaly.

    Exit status: 0 clean; 1 exceptions; 2 usage; 3 malformed; 4 a folder
    failing its SHA256SUMS or a missing input; 5 the home.

    Example: kit reconcile --home ./audit /media/ledger /media/build-01
    --html report.html --csv out
    """
    path = home_path(home)
    if read_kind(path) == "auditor":
        _reconcile_auditor(path, inputs, json_out, csv_dir, html_out, leeway)
        return
    if csv_dir is not None or html_out is not None:
        raise UsageError("--csv and --html need an auditor home (kit audit init)")
    _reconcile_signer(path, inputs, json_out, leeway)


def _reconcile_auditor(
    home: Path,
    inputs: list[Path],
    json_out: bool,
    csv_dir: Path | None,
    html_out: Path | None,
    leeway: int,
) -> None:
    files = check_inputs(inputs)  # every folder checked before any is used
    auditor = Auditor(home)
    last = [time.monotonic()]

    def progress(source: str, receipts: int) -> None:
        if time.monotonic() - last[0] >= 2:
            last[0] = time.monotonic()
            say(safe(f"kit: reconcile: {receipts} new receipt(s) so far ({source})"))

    try:
        now = int(time.time())
        auditor.ingest(read_inputs(files), now, progress)
        summary = auditor.evaluate(now, leeway)
        if csv_dir is not None:
            write_csv(csv_dir, auditor.store)
        if html_out is not None:
            write_html(
                html_out,
                summary,
                auditor.store,
                f"kit audit report: {auditor.root.name}",
            )
        if json_out:
            write_json(sys.stdout, summary, auditor.store)
        else:
            for line in summary_lines(summary):
                _show(line)
            with closing(auditor.store.exceptions(20)) as rows:
                for row in rows:
                    code, _, host, seq, _, message, source, _ = row
                    where = (
                        f" {host}#{seq}"
                        if host and seq
                        else (f" {host}" if host else "")
                    )
                    _show(
                        f"  [{CODES[code].severity}] {code}{where}: {message} "
                        f"({source})"
                    )
    finally:
        auditor.close()
    if not summary.clean:
        raise typer.Exit(DENIED)


def _reconcile_signer(
    home: Path, folders: list[Path], json_out: bool, leeway: int
) -> None:
    signer = Signer(home)
    try:
        report = reconcile(
            load_batches(folders),
            signer.ledger.hosts(),
            signer.ledger.bundles(),
            now=int(time.time()),
            leeway=leeway,
        )
        if report.clean:  # only whole, authentic evidence feeds the ledger
            for name, (seq, head) in report.heads.items():
                signer.ledger.record_anchor(name, seq, head)
            for b in report.bundles:
                if b.uses:
                    last = min(b.last_use, int(time.time()))
                    signer.ledger.record_usage(b.bundle_id, b.uses, last)
    finally:
        signer.close()
    if json_out:
        emit_json(
            {
                "receipts": report.receipts,
                "hosts": report.hosts,
                "bundles": [vars(b) for b in report.bundles],
                "anomalies": [vars(a) for a in report.anomalies],
                "unauthenticated": [vars(r) for r in report.unauthenticated],
                "clean": report.clean,
            }
        )
    else:
        _show(f"{report.receipts} receipt(s) from {len(report.hosts)} host(s)")
        for b in report.bundles:
            extra = f" x{b.uses}/{b.max_uses}" if b.uses else ""
            _show(f"  {b.bundle_id}  {b.host:<16} {b.task:<20} {b.status}{extra}")
            for d in b.denials:
                _show(f"      denied: {d}")
        for r in report.unauthenticated:
            _show(
                f"  refused unauthenticated input on {r.host} (seq {r.seq}, "
                f"{_utc(r.time)}): {r.reason}, sha256 {r.digest}..."
            )
        for a in report.anomalies:
            where = f" ({a.source})" if a.source else ""
            _show(f"  ANOMALY {a.code}: {a.message}{where}")
        _show(
            "no anomalies" if report.clean else f"{len(report.anomalies)} anomaly(ies)"
        )
    if not report.clean:
        raise typer.Exit(DENIED)
