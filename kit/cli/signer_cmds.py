"""Operator commands: signer init, enroll, issue, export, revoke."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from kit import encoding
from kit.cli.common import (
    ForceOpt,
    HomeOpt,
    JsonOpt,
    PassFileOpt,
    check_name,
    emit_json,
    handled,
    home_path,
    parse_command,
    read_passphrase,
    refuse_existing,
    say,
)
from kit.crypto.atrest import PROFILES
from kit.crypto.sign import fingerprint
from kit.duration import parse_duration
from kit.errors import FormatError, MediaError, UsageError
from kit.formats.bundle import (
    DELIVERY_MODES,
    MAX_SECRET,
    MAX_USES,
    RISKS,
    decode_claims,
    parse_bundle,
)
from kit.fsutil import atomic_write, read_regular
from kit.home import check_new_home
from kit.media import write_media
from kit.signer.identity import Identity, load_identities
from kit.signer.signer import ROOT_FILE, IssueRequest, Signer, init_signer

signer_app = typer.Typer(
    help="The online signer's key and trust root.", no_args_is_help=True
)


def utc(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@signer_app.command("init")
@handled()
def signer_init(
    home: HomeOpt = None,
    name: Annotated[
        str, typer.Option(help="Name of this signer (shown to hosts).")
    ] = "signer",
    kdf: Annotated[
        str,
        typer.Option(help="Argon2id cost for the key at rest: " + ", ".join(PROFILES)),
    ] = "moderate",
    root_ttl: Annotated[
        str, typer.Option(help="Trust root lifetime, e.g. 365d.")
    ] = "365d",
    passphrase_file: PassFileOpt = None,
) -> None:
    """Create the issuing key (Ed25519, sealed with Argon2id) and trust root v1.

    Example: kit signer init --home ./signer --name acme-ops
    """
    if kdf not in PROFILES:
        raise UsageError(f"--kdf must be one of {', '.join(PROFILES)}")
    check_name(name, "--name")
    path = home_path(home)
    check_new_home(path)  # before asking for a passphrase
    passphrase = read_passphrase(passphrase_file, confirm=True)
    root = init_signer(
        path,
        name,
        passphrase,
        now=int(time.time()),
        kdf_profile=kdf,
        root_ttl=parse_duration(root_ttl, "--root-ttl"),
    )
    say(f"signer home: {path}")
    say(
        f"trust root:  {path / ROOT_FILE}  (v{root.version}, expires "
        f"{utc(root.expires_at)})"
    )
    say(f"fingerprint: {fingerprint(root.digest)}")
    say("Copy the trust root to each host; compare the fingerprint out of band.")


@handled()
def enroll(
    request: Annotated[
        Path, typer.Argument(help="Enrollment request from 'kit host init'.")
    ],
    home: HomeOpt = None,
) -> None:
    """Record a host, its public keys and its environment in the ledger.

    Example: kit enroll /media/usb/enroll-build-01.kit
    """
    signer = Signer(home_path(home))
    data = read_regular(request, 4096, "enrollment request")
    try:
        e = signer.enroll(data, int(time.time()))
    finally:
        signer.close()
    say(f"enrolled host {e.host} for env {e.env}")
    say(f"receipt key: {e.receipt_key_id}")
    say("request fingerprint:")
    say(f"  {fingerprint(hashlib.sha256(data).digest())}")
    say(
        "Compare it with the one 'kit host init' printed on the host, by another "
        f"channel, before issuing to it; if they differ: kit retire host {e.host}"
    )


@handled()
def issue(
    host: Annotated[str, typer.Option(help="Enrolled host to seal the secret to.")],
    identity: Annotated[
        str | None,
        typer.Option(
            help="Workflow identity declared in the bundles folder; the request "
            "must fit within its declaration, which also supplies the defaults."
        ),
    ] = None,
    bundles_dir: Annotated[
        Path,
        typer.Option(
            "--bundles", envvar="KIT_BUNDLES", help="Folder of identity declarations."
        ),
    ] = Path("bundles"),
    env: Annotated[
        str | None, typer.Option(help="Environment; must be the host's.")
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="The one task this bundle is for.")
    ] = None,
    ttl: Annotated[
        str | None, typer.Option(help="Lifetime from now, e.g. 15m, 8h, 2d.")
    ] = None,
    command: Annotated[
        list[str] | None,
        typer.Option(
            "--command",
            help="Allowed command prefix, e.g. 'python3 job.py' (repeatable; at "
            "least one; default with --identity: every declared one).",
        ),
    ] = None,
    dataset: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset",
            help="Dataset the task may touch (repeatable; default with "
            "--identity: every declared one).",
        ),
    ] = None,
    risk: Annotated[
        str | None,
        typer.Option(help="low, medium or high (ad hoc only; else declared)."),
    ] = None,
    deliver: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-deliver",
            help="Delivery mode the host may use: env, fd, file, stdin "
            "(repeatable; default all).",
        ),
    ] = None,
    home: HomeOpt = None,
    max_uses: Annotated[
        int,
        typer.Option(min=1, max=MAX_USES, help="How many releases are allowed."),
    ] = 1,
    secret_name: Annotated[
        str, typer.Option(help="Environment variable the child receives the secret in.")
    ] = "KIT_SECRET",  # noqa: S107 - a variable name, not a password
    secret_file: Annotated[
        Path | None, typer.Option(help="Read the secret from this file.")
    ] = None,
    secret_stdin: Annotated[
        bool, typer.Option(help="Read the secret from standard input.")
    ] = False,
    owner: Annotated[
        str | None,
        typer.Option(help="Accountable owner (ad hoc only; default: the signer)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Also write the bundle here.")
    ] = None,
    refuse_stale_secret: Annotated[
        bool,
        typer.Option(
            help="Refuse, instead of warning, a secret issued under the identity "
            "for longer than its rotation_period."
        ),
    ] = False,
    passphrase_file: PassFileOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Seal a secret to one host for one env and task, sign it, record it.

    With --identity the request is checked against that workflow's
    declaration in bundles/ and refused, naming the field, when it is wider.
    The ledger records the claims and a keyed digest of the secret, never the
    secret itself.

    Example: kit issue --identity nightly-migration-prod --host db-01
    --secret-file token.txt
    """
    if (secret_file is None) == (not secret_stdin):
        raise UsageError("give exactly one of --secret-file or --secret-stdin")
    refuse_existing(out, force)
    now = int(time.time())
    ident = _identity(identity, bundles_dir, now) if identity else None
    if ident is not None:
        if risk is not None or owner is not None:
            raise UsageError("--risk and --owner come from the declaration")
        env = env or ident.environment
        task = task or ident.task
        ttl = ttl or str(ident.max_lifetime)
        commands = _commands(command) if command else ident.commands
        datasets = tuple(dataset) if dataset is not None else ident.datasets
    else:
        if env is None or task is None or ttl is None or not command:
            raise UsageError(
                "without --identity, give --env, --task, --ttl and --command"
            )
        commands = _commands(command)
        datasets = tuple(dataset or ())
    for value, what in (
        (host, "--host"),
        (env, "--env"),
        (task, "--task"),
        *((d, "--dataset") for d in datasets),
    ):
        check_name(value, what)
    try:
        encoding.check_text(secret_name, "--secret-name", encoding.ENV_VAR_RE)
    except FormatError as exc:
        raise UsageError(str(exc)) from None
    default_modes = ident.delivery if ident is not None else DELIVERY_MODES
    modes = tuple(dict.fromkeys(deliver)) if deliver else default_modes
    if any(m not in DELIVERY_MODES for m in modes):
        raise UsageError(f"--allow-deliver takes {', '.join(DELIVERY_MODES)}")
    if risk is not None and risk not in RISKS:
        raise UsageError(f"--risk takes {', '.join(RISKS)}")
    secret = _read_secret(secret_file)
    signer = Signer(home_path(home))
    try:
        signer.unlock(read_passphrase(passphrase_file))
        data, claims = signer.issue(
            IssueRequest(
                host=host,
                env=env,
                task=task,
                commands=tuple(commands),
                ttl=parse_duration(ttl, "--ttl"),
                max_uses=max_uses,
                secret_name=secret_name,
                owner=ident.owner if ident else (owner or signer.root.name),
                datasets=datasets,
                risk=ident.risk if ident else (risk or "low"),
                delivery=modes,
                identity=ident,
                refuse_stale_secret=refuse_stale_secret,
            ),
            secret,
            now,
        )
        for warning in signer.warnings:
            say(f"kit: warning: {warning}")
        del secret
        path = signer.outbox_path(claims.bundle_id)
        atomic_write(path, data)
        if out is not None:
            _also_to(out, data, f"bundle {claims.bundle_id} was issued ({path})")
    finally:
        signer.close()
    if json_out:
        emit_json(
            {
                "bundle_id": claims.bundle_id,
                "identity": claims.identity,
                "host": claims.host,
                "env": claims.env,
                "task": claims.task,
                "risk": claims.risk,
                "expires_at": claims.expires_at,
                "max_uses": claims.max_uses,
                "path": str(out or path),
            }
        )
    who = f"identity {claims.identity}, " if claims.identity else "ad hoc, "
    say(
        f"issued bundle {claims.bundle_id}: {who}host {claims.host}, env "
        f"{claims.env}, task {claims.task}, {claims.risk} risk, "
        f"{claims.max_uses} use(s), expires {utc(claims.expires_at)}"
    )
    say(f"written to {out or path}")


def _identity(name: str, folder: Path, now: int) -> Identity:
    """The named declaration, from a folder that passes ``kit policy check``."""
    check = load_identities(folder, now=now)
    if not check.ok:
        raise UsageError(
            f"{folder} has {len(check.problems)} problem(s); run "
            f"'kit policy check {folder}' and fix them before issuing"
        )
    for ident in check.identities:
        if ident.name == name:
            return ident
    raise UsageError(
        f"no identity {name!r} is declared in {folder} (deleted declarations "
        "count as retired)"
    )


def _commands(texts: list[str]) -> tuple[tuple[str, ...], ...]:
    return tuple(parse_command(c) for c in texts)


# How far standard input is counted past the cap, to name its size when the
# secret is too long (then read no further).
_COUNT_CAP = 1 << 20


def _read_secret(secret_file: Path | None) -> bytes:
    """The secret, less the newlines that end it (``\\n``, ``\\r\\n``), from the
    file or standard input. Over MAX_SECRET bytes is a usage error naming the size
    and the cap, the same from both; a file is judged by its size before it
    is read."""
    if secret_file is not None:
        source = f"secret file {secret_file}"
        try:
            st = os.lstat(secret_file)
        except OSError:
            st = None  # read_regular says why
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_size > MAX_SECRET + 2:
            _over_cap(source, f"{st.st_size}")
        secret = read_regular(secret_file, MAX_SECRET + 2, "secret file")
    else:
        source = "secret on standard input"
        secret = sys.stdin.buffer.read(MAX_SECRET + 3)
        if len(secret) > MAX_SECRET + 2:  # too long with any newline: count on
            rest = len(sys.stdin.buffer.read(_COUNT_CAP))
            size = len(secret) + rest
            _over_cap(source, f"more than {size}" if rest == _COUNT_CAP else f"{size}")
    secret = secret.rstrip(b"\r\n") if secret.endswith(b"\n") else secret
    if len(secret) > MAX_SECRET:
        _over_cap(source, f"{len(secret)}")
    if b"\x00" in secret:
        raise UsageError(
            "the secret contains a NUL byte and cannot be delivered in "
            "an environment variable"
        )
    return secret


def _over_cap(source: str, size: str) -> NoReturn:
    raise UsageError(
        f"{source}: {size} bytes, over the {MAX_SECRET}-byte cap for a secret"
    )


@handled()
def export(
    to: Annotated[Path, typer.Option("--to", help="Media folder to write to.")],
    bundles: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Bundle files (default: every bundle of the outbox not expired, "
            "revoked, retired or used up)."
        ),
    ] = None,
    home: HomeOpt = None,
    valid: Annotated[
        str,
        typer.Option(help="How long the fresh revocation list stays valid, e.g. 7d."),
    ] = "7d",
    passphrase_file: PassFileOpt = None,
) -> None:
    """Write bundles, the trust root and a fresh revocation list to media.

    Files are written atomically (temp file, fsync, rename) and listed with
    their SHA-256 in the folder's SHA256SUMS manifest. The revocation list is
    signed anew (next version, new expiry) on every export, so a host that
    receives bundles also receives freshness.

    Example: kit export --to /media/usb
    """
    signer = Signer(home_path(home))
    try:
        now = int(time.time())
        signer.unlock(read_passphrase(passphrase_file))
        revocations = signer.revocation_list(now, parse_duration(valid, "--valid"))
        paths = list(bundles or [])
        gone = spent = 0
        if not paths:
            ids, gone, spent = signer.exportable(now)
            paths = [signer.outbox_path(i) for i in ids]
        # The current root and every earlier version, so that a host that
        # missed rotations catches up from this one drop.
        files = {
            "trust-root.kit": read_regular(
                signer.home / ROOT_FILE, 1 << 16, "trust root"
            ),
            **signer.root_history(),
            "revocations.kit": revocations,
        }
        for p in paths:
            data = read_regular(p, 64 * 1024, "bundle")
            bundle_id = decode_claims(parse_bundle(data).claims_bytes).bundle_id
            if signer.ledger.get_bundle(bundle_id) is None:
                raise UsageError(f"{p}: bundle {bundle_id} is not in this ledger")
            files[f"bundle-{bundle_id}.kit"] = data
    finally:
        signer.close()
    write_media(to, files)
    count = sum(1 for n in files if n.startswith("bundle-"))
    say(
        f"exported {count} bundle(s), the trust root and a fresh revocation list "
        f"to {to}"
    )
    if gone or spent:
        say(
            f"left out {gone} revoked or retired and {spent} used-up bundle(s) "
            "(hosts would refuse them; name a file to export it anyway)"
        )


_REVOKE_HELP = "(repeatable)"
ValidOpt = Annotated[str, typer.Option(help="Validity of the new list, e.g. 7d.")]
ListOutOpt = Annotated[Path | None, typer.Option(help="Also write the list here.")]


@handled()
def revoke(
    bundle: Annotated[
        list[str] | None, typer.Option("--bundle", help="Bundle id " + _REVOKE_HELP)
    ] = None,
    identity: Annotated[
        list[str] | None,
        typer.Option("--identity", help="Workflow identity " + _REVOKE_HELP),
    ] = None,
    host: Annotated[
        list[str] | None, typer.Option("--host", help="Host " + _REVOKE_HELP)
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="Environment " + _REVOKE_HELP)
    ] = None,
    key: Annotated[
        list[str] | None, typer.Option("--key", help="Issuer key id " + _REVOKE_HELP)
    ] = None,
    before: Annotated[
        int | None, typer.Option(help="Revoke everything issued before this Unix time.")
    ] = None,
    valid: ValidOpt = "7d",
    out: ListOutOpt = None,
    home: HomeOpt = None,
    passphrase_file: PassFileOpt = None,
    force: ForceOpt = False,
) -> None:
    """Add revocation entries and sign the next revocation list.

    Example: kit revoke --bundle 3f2a...c1 --identity release-publish-ci
    """
    entries = [
        (k, v)
        for k, vs in (
            ("bundle", bundle),
            ("identity", identity),
            ("host", host),
            ("env", env),
            ("key", key),
        )
        for v in (vs or [])
    ]
    if before is not None:
        entries.append(("before", str(before)))
    if not entries:
        raise UsageError("name at least one thing to revoke")
    _sign_revocations(home, passphrase_file, entries, valid, out, force=force)


@handled()
def retire(
    kind: Annotated[str, typer.Argument(help="identity, env or host")],
    name: Annotated[str, typer.Argument(help="Its name.")],
    valid: ValidOpt = "7d",
    out: ListOutOpt = None,
    home: HomeOpt = None,
    passphrase_file: PassFileOpt = None,
    force: ForceOpt = False,
) -> None:
    """Retire an identity, environment or host: revoke everything under it,
    refuse new issuance for it, and sign the list to carry out.

    Example: kit retire identity test-harness-dev
    """
    if kind not in ("identity", "env", "host"):
        raise UsageError("retire takes identity, env or host")
    _sign_revocations(
        home, passphrase_file, [(kind, name)], valid, out, options=False, force=force
    )


def _sign_revocations(
    home: Path | None,
    passphrase_file: Path | None,
    entries: list[tuple[str, str]],
    valid: str,
    out: Path | None,
    *,
    options: bool = True,
    force: bool = False,
) -> None:
    from kit.formats.revocation import check_entry

    for kind, value in entries:  # before asking for the passphrase
        if kind in ("identity", "env", "host"):
            check_name(value, f"--{kind}" if options else kind)
            continue
        try:
            check_entry(kind, value)
        except FormatError as exc:
            raise UsageError(str(exc)) from None
    validity = parse_duration(valid, "--valid")
    refuse_existing(out, force)
    signer = Signer(home_path(home))
    try:
        signer.unlock(read_passphrase(passphrase_file))
        try:
            added = signer.revoke(entries, int(time.time()))
        except FormatError as exc:
            raise UsageError(str(exc)) from None
        data = signer.revocation_list(int(time.time()), validity)
    finally:
        signer.close()
    if out is not None:
        _also_to(out, data, f"the revocation list was signed ({added} new)")
    say(
        f"{added} new entr{'y' if added == 1 else 'ies'}; revocation list signed "
        f"({signer.home / 'revocations.kit'}); kit export carries it to hosts"
    )


def _also_to(out: Path, data: bytes, done: str) -> None:
    """The --out copy, written after the ledger has recorded the act: if it
    fails, say that the act itself happened, so nobody issues or revokes
    twice believing the first attempt failed."""
    try:
        atomic_write(out, data)
    except MediaError as exc:
        raise MediaError(f"{done}, but --out failed: {exc}") from None
