"""Offline host commands: host init, import, verify, run, receipts export.

None of these opens a socket; the tests run them in a network namespace
with no interfaces.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Annotated

import typer

from kit.cli.common import (
    ForceOpt,
    HomeOpt,
    JsonOpt,
    check_name,
    emit_json,
    handled,
    home_path,
    refuse_existing,
    say,
)
from kit.cli.plain import line_out
from kit.cli.signer_cmds import utc
from kit.crypto.sign import fingerprint
from kit.fsutil import atomic_write, read_regular
from kit.host.host import Host, init_host
from kit.host.offline import forbid_network

host_app = typer.Typer(
    help="The offline host's keys and pinned trust root.", no_args_is_help=True
)
receipts_app = typer.Typer(
    help="The host's signed receipt journal.", no_args_is_help=True
)

BundleArg = Annotated[
    str,
    typer.Argument(help="Bundle file, or the id of a bundle staged by 'kit import'."),
]
DatasetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--dataset",
        help="A dataset the task will touch; must be in the bundle's list "
        "(repeatable).",
    ),
]
TaskOpt = Annotated[str, typer.Option(help="The task being run; must match exactly.")]


@host_app.command("init")
@handled()
def host_init(
    name: Annotated[str, typer.Option(help="This host's name.")],
    env: Annotated[str, typer.Option(help="This host's environment.")],
    trust: Annotated[Path, typer.Option(help="Trust root file from the signer.")],
    home: HomeOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Also write the enrollment request here.")
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Generate host keys, pin the trust root, write an enrollment request.

    Example: kit host init --name build-01 --env prod --trust /media/usb/trust-root.kit
    """
    forbid_network()
    check_name(name, "--name")
    check_name(env, "--env")
    path = home_path(home)
    refuse_existing(out, force)  # before the home exists
    request, root = init_host(
        path, name, env, read_regular(trust, 1 << 16, "trust root"), int(time.time())
    )
    if out is not None:
        atomic_write(out, request)
    say(f"host home: {path}")
    say(f"pinned trust root {root.name} v{root.version}, fingerprint:")
    say(f"  {fingerprint(root.digest)}")
    say("Compare it with the one 'kit trust show' prints on the signer.")
    say(f"enrollment request: {out or path / 'enrollment.kit'}, fingerprint:")
    say(f"  {fingerprint(hashlib.sha256(request).digest())}")
    say("Read it to the operator, who compares it with the one 'kit enroll' prints.")


@host_app.command("status")
@handled()
def host_status(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Show this host's keys, trust root, clock floor, policy, staged bundles,
    receipts not yet exported, and any problem found. Exits 1 on a problem.

    Example: kit host status --home /var/lib/kit
    """
    forbid_network()
    host = Host(home_path(home))
    try:
        st = host.status(int(time.time()))
    finally:
        host.close()
    if json_out:
        emit_json(st)
    else:
        root, clock, pol, rec = (
            st["trust_root"],
            st["clock"],
            st["policy"],
            st["receipts"],
        )
        line_out(f"host {st['host']} (env {st['env']})")
        line_out(f"  HPKE key     {st['hpke_key_id']}")
        line_out(f"  receipt key  {st['receipt_key_id']}")
        line_out(
            f"  trust root   {root['name']} v{root['version']}, expires "
            f"{utc(root['expires_at'])}, fingerprint "
            f"{fingerprint(bytes.fromhex(root['sha256']))}"
        )
        line_out(
            f"  clock        {utc(clock['now'])}, floor {utc(clock['floor'])}"
            if clock["floor"]
            else f"  clock        {utc(clock['now'])}, no floor yet"
        )
        line_out(
            f"  policy       envs {', '.join(pol['environments'])}; max lifetime "
            f"{pol['max_lifetime']} s; max uses {pol['max_uses']}; leeway "
            f"{pol['leeway']} s; risk {', '.join(pol['risk_levels'])}"
        )
        line_out(
            f"  receipts     {rec['last_seq']} written, {rec['not_exported']} not "
            "yet exported"
        )
        for b in st["staged"]:
            state = (
                "expired" if b["expired"] else f"{b['uses_left']}/{b['max_uses']} left"
            )
            line_out(
                f"  staged       {b['bundle_id']}  {b['task']:<20} {state}, expires "
                f"{utc(b['expires_at'])}"
            )
        for p in st["problems"]:
            line_out(f"  PROBLEM      {p}")
    if st["problems"]:
        raise typer.Exit(1)


@handled()
def verify(
    bundle: BundleArg,
    task: TaskOpt,
    command: Annotated[
        str | None,
        typer.Option(
            help="Also check this command line is allowed, e.g. 'python3 job.py'."
        ),
    ] = None,
    dataset: DatasetOpt = None,
    deliver: Annotated[
        str | None,
        typer.Option(help="Also check this delivery mode is allowed."),
    ] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check a bundle without releasing anything.

    Exits 0 when the bundle would be released now, 1 with the reason when
    not; a refusal is recorded as a denial receipt.

    Example: kit verify 3f2a...c1 --task nightly-export --command 'python3 job.py'
    """
    from kit.cli.fast import verify_bundle  # the hot path, shared with fast.py

    verify_bundle(
        bundle=bundle,
        task=task,
        command=command,
        dataset=dataset,
        deliver=deliver,
        home=home,
        json_out=json_out,
    )


@handled(run=True)
def run(
    bundle: BundleArg,
    task: TaskOpt,
    command: Annotated[
        list[str],
        typer.Argument(
            help="The command to run and its arguments, after '--' (required: "
            "nothing after it is read as kit's).",
            show_default=False,
        ),
    ],
    home: HomeOpt = None,
    deliver: Annotated[
        str,
        typer.Option(
            help="How CMD gets the secret: env (the variable the bundle names), "
            "fd (sealed memfd, its number in NAME_FD), file (0600 tmpfs file, its "
            "path in NAME_FILE, removed after), stdin."
        ),
    ] = "env",
    keep_env: Annotated[
        list[str] | None,
        typer.Option(
            "--keep-env",
            help="Pass this variable of kit's environment on to CMD (repeatable). "
            "CMD otherwise gets only PATH, HOME, LANG, LC_*, TERM, TZ, USER, "
            "LOGNAME, SHELL, TMPDIR and PWD.",
        ),
    ] = None,
    dataset: DatasetOpt = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", help="Release a high-risk bundle without asking on a terminal."
        ),
    ] = False,
) -> None:
    """Verify a bundle, record a receipt, then run CMD with the secret.

    The secret goes to CMD alone (see --deliver); CMD's environment is an
    allowlist, and core dumps are off. kit run exits with CMD's own status;
    its own refusals use 120-125 and 127 (command not found).

    Example: kit run 3f2a...c1 --task nightly-export -- python3 job.py
    """
    from kit.cli.fast import run_bundle  # the hot path, shared with fast.py

    raise typer.Exit(
        run_bundle(
            bundle=bundle,
            task=task,
            command=command,
            home=home,
            deliver=deliver,
            keep_env=keep_env,
            dataset=dataset,
            yes=yes,
        )
    )


@receipts_app.command("export")
@handled()
def receipts_export(
    to: Annotated[Path, typer.Option("--to", help="Media folder to write to.")],
    home: HomeOpt = None,
    from_seq: Annotated[
        int | None,
        typer.Option(
            "--from",
            min=1,
            help="Export again every receipt from this sequence number on "
            "(when earlier media was lost).",
        ),
    ] = None,
) -> None:
    """Write receipts not yet exported, with a checkpoint signed by this host.

    Example: kit receipts export --to /media/usb
    """
    forbid_network()
    host = Host(home_path(home))
    try:
        result = host.export_receipts(to, int(time.time()), from_seq=from_seq)
    finally:
        host.close()
    if result is None:
        say("no new receipts to export")
        return
    path, first, last = result
    say(f"exported receipts {first}..{last} with a signed checkpoint to {path}")


@handled()
def import_cmd(
    folder: Annotated[
        Path,
        typer.Argument(
            help="Media folder written by 'kit export', or a folder of QR images "
            "('kit qr encode'): no SHA256SUMS, only .png/.jpg/.jpeg files."
        ),
    ],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check media and stage its bundles for this host, all or nothing.

    The SHA256SUMS manifest and every bundle signature are checked first. A
    folder of QR images is decoded first; each object must be complete and
    match its message id, then passes the same checks (docs/qr.md).

    Example: kit import /media/usb

    Example: kit import ~/scans/2026-05-01
    """
    forbid_network()
    host = Host(home_path(home))
    try:
        result = host.import_media(folder, now=int(time.time()))
        staged = result.staged
        left = {
            v.claims.bundle_id: max(
                0, v.claims.max_uses - len(host.state.uses(v.claims.bundle_id))
            )
            for v in staged
        }
    finally:
        host.close()
    if json_out:
        emit_json(
            [
                {
                    "bundle_id": v.claims.bundle_id,
                    "task": v.claims.task,
                    "expires_at": v.claims.expires_at,
                    "uses_left": left[v.claims.bundle_id],
                }
                for v in staged
            ]
        )
    for v in staged:
        c = v.claims
        n = left[c.bundle_id]
        say(
            f"staged {c.bundle_id}: task {c.task}, env {c.env}, {n} of {c.max_uses} "
            f"use(s) left{' (spent)' if n == 0 else ''}, expires {utc(c.expires_at)}"
        )
    for version in result.pinned:
        say(f"pinned trust root v{version} (checked against its predecessor)")
    if result.revocation:
        say(f"revocation list v{result.revocation} now in force")
    for note in result.skipped:
        say(f"skipped {note}")
    say(f"imported {len(staged)} bundle(s) from {folder}")
