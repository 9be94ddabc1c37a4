"""Trust-root rotation and approvals: kit trust ..., kit approver init,
kit approve."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kit.cli.common import (
    ForceOpt,
    HomeOpt,
    JsonOpt,
    PassFileOpt,
    check_name,
    emit_json,
    handled,
    home_path,
    read_passphrase,
    refuse_existing,
    say,
)
from kit.cli.plain import ask_yes, line_out
from kit.cli.signer_cmds import utc
from kit.crypto.atrest import PROFILES
from kit.crypto.sign import fingerprint
from kit.duration import parse_duration
from kit.errors import DeniedError, MediaError, UsageError
from kit.formats.pubkey import load_public_key_file
from kit.formats.trustroot import ROLES, KeySpec, TrustedKey, TrustRoot
from kit.fsutil import atomic_write, read_regular
from kit.home import check_new_home
from kit.media import read_media, write_media
from kit.signer.approver import Approver, init_approver
from kit.signer.signer import Signer

if TYPE_CHECKING:
    from kit.formats.bundle import Claims

trust_app = typer.Typer(
    help="The signer's trust root: keys by role, approvals per risk, rotation.",
    no_args_is_help=True,
)
approver_app = typer.Typer(help="An approver's own home and key.", no_args_is_help=True)


def _describe(root: TrustRoot, out: Callable[[str], None] = line_out) -> None:
    """A trust root's keys and counts, as a report on stdout (``out``)."""
    out(f"trust root {root.name} v{root.version}, expires {utc(root.expires_at)}")
    out(f"  fingerprint {fingerprint(root.digest)}")
    for k in root.keys:
        out(f"  {k.label:<20} {k.key_id[:12]}  {', '.join(sorted(k.roles))}")
    a = root.approvals
    out(
        f"  approvals needed: low {a['low']}, medium {a['medium']}, high {a['high']}; "
        f"root threshold {root.thresholds['root']}, issuer {root.thresholds['issuer']}"
    )


CandidateForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Replace a candidate trust root of the same version that is still "
        "waiting for co-signatures.",
    ),
]


def _candidate_path(signer: Signer, version: int) -> Path:
    return signer.home / "trust-roots" / f"candidate-v{version:06d}.kit"


def _rotate(
    home: Path | None,
    passphrase_file: Path | None,
    force: bool = False,
    **changes: Any,
) -> None:
    signer = Signer(home_path(home))
    try:
        # A candidate of the next version may hold co-signatures already:
        # making another next version, candidate or not, would waste them.
        waiting = _candidate_path(signer, signer.root.version + 1)
        if not force and os.path.lexists(waiting):
            raise MediaError(
                f"{waiting} already exists: a trust root v{signer.root.version + 1} "
                "candidate waiting for co-signatures; nothing written. Install it "
                f"(kit trust install {waiting}), or pass --force to replace it"
            )
        signer.unlock(read_passphrase(passphrase_file))
        data, new, needed = signer.propose(int(time.time()), **changes)
        if needed:
            candidate = _candidate_path(signer, new.version)
            atomic_write(candidate, data)
        else:
            signer.install(data)
    finally:
        signer.close()
    if needed:
        say(
            f"trust root v{new.version} changes the approvers or approval counts, so "
            f"{needed} current approver(s) must co-sign it before it takes effect:"
        )
        say(
            f"  1. carry {candidate.name} in a folder of its own, with a fresh "
            "kit export for the approvers to catch up from"
        )
        say(
            f"  2. each approver: kit approve FOLDER/{candidate.name} --trust "
            "EXPORT --home APPROVER_HOME"
        )
        say(f"  3. then here:     kit trust install {candidate}")
    else:
        say(
            f"trust root v{new.version} made and signed; kit export carries it to hosts"
        )
    _describe(new)


@trust_app.command("install")
@handled()
def trust_install(
    candidate: Annotated[Path, typer.Argument(help="A co-signed candidate root.")],
    home: HomeOpt = None,
) -> None:
    """Install a candidate trust root once the approvers have co-signed it."""
    signer = Signer(home_path(home))
    try:
        new = signer.install(read_regular(candidate, 1 << 16, "trust root"))
    finally:
        signer.close()
    say(f"trust root v{new.version} installed; kit export carries it to hosts")
    _describe(new)


@trust_app.command("renew")
@handled()
def trust_renew(
    ttl: Annotated[str, typer.Option(help="New lifetime from now, e.g. 365d.")],
    home: HomeOpt = None,
    passphrase_file: PassFileOpt = None,
    force: CandidateForceOpt = False,
) -> None:
    """Extend the trust root's lifetime as its next version."""
    _rotate(home, passphrase_file, force, ttl=parse_duration(ttl, "--ttl"))


@trust_app.command("show")
@handled()
def trust_show(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Show the current trust root: keys, roles, labels, approvals, thresholds."""
    signer = Signer(home_path(home))
    try:
        root = signer.root
    finally:
        signer.close()
    if json_out:
        emit_json(
            {
                "name": root.name,
                "version": root.version,
                "expires_at": root.expires_at,
                "sha256": root.digest.hex(),
                "keys": [
                    {"key_id": k.key_id, "label": k.label, "roles": sorted(k.roles)}
                    for k in root.keys
                ],
                "approvals": root.approvals,
                "thresholds": root.thresholds,
            }
        )
    else:
        _describe(root)


@trust_app.command("rotate")
@handled()
def trust_rotate(
    add: Annotated[
        list[Path] | None,
        typer.Option("--add", help="Public key file to add (repeatable)."),
    ] = None,
    role: Annotated[
        list[str] | None,
        typer.Option(
            "--role", help="Role of each --add key, in order (default approver)."
        ),
    ] = None,
    remove: Annotated[
        list[str] | None,
        typer.Option("--remove", help="Key id (or unique prefix) to remove."),
    ] = None,
    ttl: Annotated[
        str | None, typer.Option(help="New lifetime from now, e.g. 365d.")
    ] = None,
    home: HomeOpt = None,
    passphrase_file: PassFileOpt = None,
    force: CandidateForceOpt = False,
) -> None:
    """Produce trust root N+1: add and remove keys and/or renew it at once.

    Example: kit trust rotate --add alice.pub --role approver --remove 3f2a
    """
    roles = list(role or [])
    specs = []
    for i, path in enumerate(add or []):
        r = roles[i] if i < len(roles) else "approver"
        if r not in ROLES:
            raise UsageError(f"--role takes {', '.join(ROLES)}")
        pk = load_public_key_file(read_regular(path, 4096, "public key file"))
        say(f"adding {pk.label} (key {pk.key_id[:12]}) as {r}")
        specs.append(KeySpec(pk.public_key, (r,), pk.label))
    signer = Signer(home_path(home))
    try:
        gone = []
        for prefix in remove or []:
            gone.append(_one_key(signer.root.keys, prefix))
    finally:
        signer.close()
    if not specs and not gone and ttl is None:
        raise UsageError("give --add, --remove or --ttl")
    _rotate(
        home,
        passphrase_file,
        force,
        add=tuple(specs),
        remove=tuple(gone),
        ttl=parse_duration(ttl, "--ttl") if ttl else None,
    )


@trust_app.command("add-key")
@handled()
def trust_add_key(
    pubfile: Annotated[Path, typer.Argument(help="Public key file (approver.pub).")],
    role: Annotated[str, typer.Option(help="approver, issuer or root.")] = "approver",
    home: HomeOpt = None,
    passphrase_file: PassFileOpt = None,
    force: CandidateForceOpt = False,
) -> None:
    """Add a key to the trust root as its next version.

    Example: kit trust add-key /media/usb/approver.pub --role approver
    """
    if role not in ROLES:
        raise UsageError(f"--role takes {', '.join(ROLES)}")
    pk = load_public_key_file(read_regular(pubfile, 4096, "public key file"))
    say(f"adding {pk.label} (key {pk.key_id[:12]}) as {role}")
    _rotate(
        home,
        passphrase_file,
        force,
        add=(KeySpec(pk.public_key, (role,), pk.label),),
    )


@trust_app.command("remove-key")
@handled()
def trust_remove_key(
    key: Annotated[
        str,
        typer.Argument(help="Key id, or a unique prefix of it (4 characters or more)."),
    ],
    home: HomeOpt = None,
    passphrase_file: PassFileOpt = None,
    force: CandidateForceOpt = False,
) -> None:
    """Remove a key from the trust root as its next version."""
    signer = Signer(home_path(home))
    try:
        key_id = _one_key(signer.root.keys, key)
    finally:
        signer.close()
    _rotate(home, passphrase_file, force, remove=(key_id,))


MIN_KEY_PREFIX = 4


def _one_key(keys: Iterable[TrustedKey], prefix: str) -> str:
    """The one key whose id starts with ``prefix`` (at least 4 characters, so
    an empty or one-letter argument never picks a key by accident)."""
    if len(prefix) < MIN_KEY_PREFIX:
        raise UsageError(
            f"key {prefix!r}: give at least {MIN_KEY_PREFIX} characters of the key id"
        )
    found = [k.key_id for k in keys if k.key_id.startswith(prefix.lower())]
    if len(found) != 1:
        raise UsageError(
            f"key {prefix!r} matches {len(found)} keys; give more of the id"
        )
    return found[0]


@trust_app.command("approvals")
@handled()
def trust_approvals(
    low: Annotated[
        int | None, typer.Option(min=0, help="Approvals for low risk.")
    ] = None,
    medium: Annotated[
        int | None, typer.Option(min=0, help="Approvals for medium risk.")
    ] = None,
    high: Annotated[
        int | None, typer.Option(min=0, help="Approvals for high risk.")
    ] = None,
    home: HomeOpt = None,
    passphrase_file: PassFileOpt = None,
    force: CandidateForceOpt = False,
) -> None:
    """Set how many distinct approvals a risk level needs (next version);
    levels not given keep their current count.

    Example: kit trust approvals --medium 1 --high 2
    """
    signer = Signer(home_path(home))
    try:
        counts = dict(signer.root.approvals)
    finally:
        signer.close()
    for level, value in (("low", low), ("medium", medium), ("high", high)):
        if value is not None:
            counts[level] = value
    _rotate(home, passphrase_file, force, approvals=counts)


@approver_app.command("init")
@handled()
def approver_init(
    label: Annotated[str, typer.Option(help="Your name as operators will see it.")],
    trust: Annotated[Path, typer.Option(help="Trust root file from the signer.")],
    home: HomeOpt = None,
    kdf: Annotated[
        str, typer.Option(help="Argon2id cost: " + ", ".join(PROFILES))
    ] = "moderate",
    passphrase_file: PassFileOpt = None,
) -> None:
    """Create an approver key; hand approver.pub to the signer.

    Example: kit approver init --label alice --trust /media/usb/trust-root.kit
    """
    if kdf not in PROFILES:
        raise UsageError(f"--kdf must be one of {', '.join(PROFILES)}")
    check_name(label, "--label")
    path = home_path(home)
    check_new_home(path)  # before asking for a passphrase
    root_bytes = read_regular(trust, 1 << 16, "trust root")
    pub = init_approver(
        path,
        label,
        read_passphrase(passphrase_file, confirm=True),
        root_bytes,
        now=int(time.time()),
        kdf_profile=kdf,
    )
    pk = load_public_key_file(pub)
    say(f"approver home: {path}")
    say(f"public key file: {path / 'approver.pub'} ({pk.label}, {pk.key_id[:12]})")
    say("Give it to the signer: kit trust add-key approver.pub --role approver")


@handled()
def approve(
    bundle: Annotated[
        Path, typer.Argument(help="Bundle (or candidate trust root) to co-sign.")
    ],
    home: HomeOpt = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key", help="The approver home holding your key (same as --home)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the approved bundle here (default: in place)."),
    ] = None,
    trust: Annotated[
        Path | None,
        typer.Option(
            help="Media folder (from kit export) with newer trust roots to follow "
            "first; each must descend from the pinned one."
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            help="Sign without asking on the terminal (for scripts); the claims "
            "are still shown.",
        ),
    ] = False,
    passphrase_file: PassFileOpt = None,
    force: ForceOpt = False,
) -> None:
    """Co-sign a bundle with your approver key after checking its issuer.

    Shows every claim of the bundle (or every key and count of a candidate
    trust root) and asks before signing: only y or yes signs; any other
    answer, end of input or Ctrl-C writes nothing (exit 1), not even the
    trust roots followed from --trust. Without a terminal, pass --yes.
    Without --out the file is signed in place. An existing --out file other
    than the bundle itself is refused (exit 4) unless --force.

    Example: kit approve /media/usb/bundle-3f2a...c1.kit
    """
    if not yes and (sys.stdin is None or not sys.stdin.isatty()):
        raise UsageError(
            "kit approve asks before signing, and standard input is not a "
            "terminal: pass --yes to approve without asking"
        )
    same = out is not None and out.exists() and bundle.exists() and out.samefile(bundle)
    refuse_existing(out, force or same)  # --out BUNDLE is in place, as without
    approver = Approver(key if key is not None else home_path(home))
    if trust is not None:
        roots = [d for n, d in read_media(trust).items() if n.startswith("trust-root")]
        approver.catch_up(roots, write=False)  # pinned once approved
    data = read_regular(bundle, 64 * 1024, "bundle or trust root")
    approver.unlock(read_passphrase(passphrase_file))
    pending = approver.prepare(data)  # every check; nothing signed yet
    if pending.root is not None:
        what = f"trust root v{pending.root.version}"
        say(f"kit approve: {what} (next after the pinned v{approver.root.version}):")
        _describe(pending.root, say)
        for change in _changes(approver.root, pending.root):
            say(f"  changes: {change}")
    else:
        assert pending.claims is not None  # noqa: S101 - a bundle otherwise
        what = f"bundle {pending.claims.bundle_id}"
        _show_claims(pending.claims)
    question = f"Sign {what} with approver key {approver.key.key_id[:12]}? [y/N]: "
    if not yes and not ask_yes(question):
        raise DeniedError("not-confirmed", f"{what} was not approved; nothing written")
    approved = approver.sign(pending)  # the envelope shown above, as it is
    approver.pin()  # the roots followed from --trust
    target = out or bundle
    listed = target.parent / "SHA256SUMS"
    if out is None and listed.exists():
        write_media(target.parent, {target.name: approved})  # keeps the stick valid
    else:
        atomic_write(target, approved)
    say(f"{'co-signed' if pending.root is not None else 'approved'} {what}")
    say(f"written to {target}")


def _show_claims(c: Claims) -> None:
    """Every claim an approver vouches for, on stderr (escaped by say)."""
    say(
        f"kit approve: bundle {c.bundle_id}: {c.risk} risk, identity "
        f"{c.identity or 'ad hoc'}, owner {c.owner}"
    )
    say(f"  host {c.host}, env {c.env}, task {c.task}, issuer {c.issuer[:12]}")
    say(
        f"  {c.max_uses} use(s), valid {utc(c.not_before)} to {utc(c.expires_at)}, "
        f"{c.approvals} approval(s) needed"
    )
    say(f"  commands: {'; '.join(' '.join(p) for p in c.commands)}")
    say(f"  datasets: {', '.join(c.datasets) or 'none'}")
    say(f"  delivery: {', '.join(c.delivery)}; secret as {c.secret_name}")
    say(
        f"  issued {utc(c.issued_at)}, host key {c.host_key[:12]}, declaration "
        f"{c.declaration.hex()[:12] or 'none'}, anchor "
        + (f"seq {c.anchor_seq} {c.anchor_head.hex()[:12]}" if c.anchor_seq else "none")
    )


def _changes(old: TrustRoot, new: TrustRoot) -> list[str]:
    """What a candidate trust root changes from the pinned one."""
    before = {k.key_id: k for k in old.keys}
    after = {k.key_id: k for k in new.keys}
    out = [
        f"adds {k.label} ({k.key_id[:12]}) as {', '.join(sorted(k.roles))}"
        for kid, k in after.items()
        if kid not in before
    ]
    out += [
        f"removes {k.label} ({k.key_id[:12]}), {', '.join(sorted(k.roles))}"
        for kid, k in before.items()
        if kid not in after
    ]
    out += [
        f"{k.label} ({kid[:12]}) roles {', '.join(sorted(before[kid].roles))} -> "
        f"{', '.join(sorted(k.roles))}"
        for kid, k in after.items()
        if kid in before and before[kid].roles != k.roles
    ]
    out += [
        f"{kid[:12]} label {before[kid].label} -> {k.label}"
        for kid, k in after.items()
        if kid in before and before[kid].label != k.label
    ]
    for level, count in new.approvals.items():
        if old.approvals.get(level) != count:
            out.append(f"approvals for {level} {old.approvals.get(level)} -> {count}")
    for role, count in new.thresholds.items():
        if old.thresholds.get(role) != count:
            out.append(f"{role} threshold {old.thresholds.get(role)} -> {count}")
    if old.expires_at != new.expires_at:
        out.append(f"expires {utc(old.expires_at)} -> {utc(new.expires_at)}")
    return out or ["nothing but the version"]
