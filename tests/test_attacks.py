"""The attack suite (issue 9): every named attack, refused on every entry point.

Rows are attacks from the threat list in the brief; columns are the ways a
hostile object reaches kit:

- ``library``: :meth:`Host.authorize` (bundles), :meth:`Host.import_media`
  (objects carried on media), :func:`reconcile` (receipts);
- ``verify``: the real ``kit verify`` process on a bundle file;
- ``run``: the real ``kit run`` process whose child would write the secret
  into a file;
- ``import``: ``kit import`` of a media folder, then ``kit run`` of the staged
  bundle id (import authenticates; scope is judged at use);
- ``qr``: the same media carried as QR images (``kit qr encode``), then
  ``kit import`` of the image folder and ``kit run`` of the staged id;
- ``reconcile``: the real ``kit reconcile`` process on a receipt folder.

Every cell asserts the same reason (the denial receipt's reason code and a
message substring), the documented exit code for its column, a signed denial
receipt in the host's journal where a host decides, nothing released (the
child never ran, the secret is in no output, raw, hex or base64) and nothing
consumed (the host's use table is unchanged). A row that does not apply to a
column says why; ``test_every_entry_point_has_a_column`` fails when a CLI
command that takes hostile input is not classified.
"""

from __future__ import annotations

import base64
import hmac
import os
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
import typer.main
from conftest import CHILD, DAY, KIT, T0, TASK, Issued, World, child_argv

from kit import encoding
from kit.audit.reconcile import load_batches, reconcile
from kit.crypto.seal import seal
from kit.crypto.sign import SigningKey
from kit.errors import (
    DeniedError,
    FormatError,
    KitError,
    MediaError,
    UnauthenticatedError,
)
from kit.formats import bundle as bundle_fmt
from kit.formats import receipt as rfmt
from kit.formats.envelope import seal_envelope
from kit.formats.trustroot import KeySpec, sign_trust_root
from kit.host.host import Host
from kit.media import write_media

BUNDLE_COLUMNS = ("library", "verify", "run", "import", "qr")
MEDIA_COLUMNS = ("library", "import", "qr")
RECEIPT_COLUMNS = ("library", "reconcile")

# Exit codes by column and error class (docs/CLI.md#exit-codes).
VERIFY_EXIT = {DeniedError: 1, UnauthenticatedError: 1, FormatError: 3, MediaError: 4}
RUN_EXIT = {DeniedError: 120, UnauthenticatedError: 120, FormatError: 121}
RUN_EXIT[MediaError] = 122


# -- the hostile input a row prepares ------------------------------------------


@dataclass
class Hostile:
    """One hostile bundle and the refusal it must meet on every column."""

    data: bytes
    secret: bytes  # what must never be released
    exc: type[KitError]
    reason: str  # the denial receipt's reason code ([code] for DeniedError)
    message: str  # a substring of the refusal, library and CLI alike
    bundle_id: str  # as the denial receipt names it; "" before authentication
    task: str = TASK
    command: tuple[str, ...] | None = None  # default: child_argv(out)
    datasets: tuple[str, ...] = ()
    path: Path | None = None  # a prepared bundle file (FIFO, symlink, oversized)
    # What `kit import` does with it: "stage" (scope is judged at use),
    # "refuse" (import fails, nothing staged) or "skip" (not for this host).
    at_import: str = "stage"
    import_exc: type[KitError] | None = None  # None: the same as ``exc``
    import_message: str = ""
    racers: int = 0  # > 0: so many real processes race for the one use


@dataclass(frozen=True)
class Attack:
    name: str
    build: Callable[[World, Path], Any]
    columns: tuple[str, ...]
    why_not: dict[str, str] = field(default_factory=dict)  # column -> reason


def _plain(i: Issued, exc: type[KitError], reason: str, message: str) -> Hostile:
    authenticated = exc is DeniedError
    return Hostile(
        data=i.data,
        secret=i.secret,
        exc=exc,
        reason=reason,
        message=message,
        bundle_id=i.claims.bundle_id if authenticated else "",
    )


UNAUTH = "not validly signed by a trusted key"
SEAL = "does not open with this host's key and these claims"


def _unauth(i: Issued, data: bytes) -> Hostile:
    h = _plain(i, UnauthenticatedError, "unauthenticated", UNAUTH)
    h.data = data
    h.at_import = "refuse"
    h.import_message = UNAUTH
    return h


def _malformed(i: Issued, data: bytes, message: str = "malformed") -> Hostile:
    h = _plain(i, FormatError, "malformed", message)
    h.data = data
    h.at_import = "refuse"
    h.import_message = message
    return h


def _body(data: bytes) -> tuple[bundle_fmt.Bundle, bytes, bytes]:
    b = bundle_fmt.parse_bundle(data)
    return b, b.claims_bytes, b.sealed


def _envelope(body: bytes, sigs: list[list[Any]]) -> bytes:
    return encoding.encode([bundle_fmt.LABEL, body, sigs])


# -- forged, re-signed, re-sealed, swapped -------------------------------------


def forged_by_untrusted_key(w: World, tmp: Path) -> Hostile:
    i = w.issue(by=w.attacker)  # a well-formed bundle, the wrong signer
    return _unauth(i, i.data)


def resigned_by_attacker(w: World, tmp: Path) -> Hostile:
    # The genuine body, its signature replaced by the attacker's.
    i = w.issue()
    b, _, _ = _body(i.data)
    key = w.attacker.key
    sig = key.sign(bundle_fmt.LABEL, b.envelope.body)
    return _unauth(i, _envelope(b.envelope.body, [[key.key_id, sig]]))


def bit_flipped(w: World, tmp: Path) -> Hostile:
    i = w.issue()
    data = bytearray(i.data)
    data[len(data) // 3] ^= 0x01  # inside the signed claims
    return _unauth(i, bytes(data))


def resealed_by_attacker(w: World, tmp: Path) -> Hostile:
    # The attacker seals a secret of its own to the host's public key, bound to
    # the genuine claims, and keeps the genuine signature.
    i = w.issue()
    b, cb, _ = _body(i.data)
    own = seal(
        b"attacker-chosen",
        w.host_record("build-01").hpke_public,
        bundle_fmt.seal_info_for(cb),
    )
    body = bundle_fmt.encode_body(cb, own)
    return _unauth(i, _envelope(body, [list(s) for s in b.envelope.signatures]))


def swapped_claims_unsigned(w: World, tmp: Path) -> Hostile:
    # B's ciphertext under A's claims, A's signature kept.
    a, b = w.issue(), w.issue()
    pa, pb = bundle_fmt.parse_bundle(a.data), bundle_fmt.parse_bundle(b.data)
    body = bundle_fmt.encode_body(pa.claims_bytes, pb.sealed)
    h = _unauth(a, _envelope(body, [list(s) for s in pa.envelope.signatures]))
    h.secret = b.secret
    return h


def swapped_claims_resigned(w: World, tmp: Path) -> Hostile:
    # The same splice re-signed by the genuine issuer: only the HPKE binding of
    # the ciphertext to the claims catches it.
    a, b = w.issue(), w.issue()
    pa, pb = bundle_fmt.parse_bundle(a.data), bundle_fmt.parse_bundle(b.data)
    body = bundle_fmt.encode_body(pa.claims_bytes, pb.sealed)
    h = _plain(a, DeniedError, "seal-mismatch", SEAL)
    h.data = seal_envelope(bundle_fmt.LABEL, body, [w.signer.key])
    h.secret = b.secret
    return h


def sealed_to_another_host(w: World, tmp: Path) -> Hostile:
    i = w.forge(w.signer.key, host="build-01", seal_to="build-02")
    return _plain(i, DeniedError, "seal-mismatch", SEAL)


# -- algorithm and key confusion -----------------------------------------------


def hmac_with_public_key(w: World, tmp: Path) -> Hostile:
    # The classic confusion: a MAC keyed with the issuer's public key, under
    # the issuer's key id. The algorithm comes from the trust root, not the
    # bundle, so it is just a bad Ed25519 signature.
    i = w.issue()
    b, _, _ = _body(i.data)
    pub = w.signer.key.public_key
    mac = hmac.new(pub, bundle_fmt.LABEL.encode() + b.envelope.body, "sha512")
    return _unauth(i, _envelope(b.envelope.body, [[w.signer.key.key_id, mac.digest()]]))


def signed_by_approver_role(w: World, tmp: Path) -> Hostile:
    # A key the pinned root trusts, but as an approver, not an issuer.
    approver = w.add_approver()
    _carry(w, tmp / "roots", w.signer.root_history())
    i = w.forge(approver, issuer=approver.key_id)
    return _unauth(i, i.data)


# -- wrong host, env, task, command, dataset, risk -----------------------------


def wrong_host(w: World, tmp: Path) -> Hostile:
    h = _plain(w.issue("build-02"), DeniedError, "wrong-host", "is for host")
    h.at_import = "skip"  # one stick serves several hosts: named and passed over
    h.import_message = "(for host build-02)"
    return h


def wrong_env(w: World, tmp: Path) -> Hostile:
    i = w.forge(w.signer.key, env="dev")  # genuine, names build-01, env dev
    return _plain(i, DeniedError, "wrong-env", "bundle is for env 'dev'")


def wrong_task(w: World, tmp: Path) -> Hostile:
    h = _plain(w.issue(), DeniedError, "wrong-task", "not 'other-task'")
    h.task = "other-task"
    return h


def wrong_command(w: World, tmp: Path) -> Hostile:
    h = _plain(w.issue(), DeniedError, "command-not-allowed", "not within")
    h.command = ("sh", "-c", 'printf %s "$KIT_SECRET" > "$0"; echo x', "OUT")
    return h


def wrong_dataset(w: World, tmp: Path) -> Hostile:
    i = w.issue(datasets=("sales",))
    h = _plain(i, DeniedError, "dataset-not-allowed", "'payroll' is not within")
    h.datasets = ("payroll",)
    return h


def risk_not_accepted(w: World, tmp: Path) -> Hostile:
    # A high-risk bundle at a host whose policy does not opt in to high risk.
    i = w.forge(w.signer.key, risk="high")
    return _plain(i, DeniedError, "risk-not-accepted", "bundle is high-risk")


# -- time ----------------------------------------------------------------------


def expired(w: World, tmp: Path) -> Hostile:
    i = w.issue(now=T0 - 10 * DAY, ttl=3600)
    return _plain(i, DeniedError, "expired", "bundle expired")


def not_yet_valid(w: World, tmp: Path) -> Hostile:
    i = w.issue(not_before=T0 + 10 * DAY, ttl=3600)
    return _plain(i, DeniedError, "not-yet-valid", "not valid for another")


def over_long_lifetime(w: World, tmp: Path) -> Hostile:
    # Signed by the genuine key for 30 days; the host caps lifetimes at 7.
    i = w.forge(w.signer.key, expires_at=T0 + 30 * DAY)
    return _plain(i, DeniedError, "lifetime-over-cap", "exceeds this host's")


def clock_wound_back(w: World, tmp: Path) -> Hostile:
    # The host once saw (and recorded) a time ten days ahead; its clock now
    # reads less than that floor.
    later = w.issue(now=T0 + 10 * DAY)
    host = w.host()
    try:
        host.authorize(later.data, task=TASK, command=CHILD, now=T0 + 10 * DAY)
    finally:
        host.close()
    return _plain(w.issue(), DeniedError, "clock-behind-floor", "behind its floor")


# -- replay --------------------------------------------------------------------


def replay_past_use_count(w: World, tmp: Path) -> Hostile:
    i = w.issue(max_uses=1)
    host = w.host()
    try:
        host.authorize(i.data, task=TASK, command=CHILD, now=T0)
    finally:
        host.close()
    return _plain(i, DeniedError, "uses-exhausted", "all 1 use(s) of bundle")


def replay_after_crash(w: World, tmp: Path) -> Hostile:
    # A real process commits the release and is killed (SIGKILL) before the
    # child runs or the exit is recorded; the use stays spent.
    i = w.issue(max_uses=1)
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from kit.host.host import Host\n"
        "host = Host(Path(sys.argv[1]))\n"
        "host.authorize(sys.stdin.buffer.read(), task=sys.argv[2],"
        " command=tuple(sys.argv[4:]), now=int(sys.argv[3]))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(w.host_home("build-01")),
            TASK,
            str(T0),
            *CHILD,
        ],
        input=i.data,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert [e.event for e in w.receipts()] == ["release"]
    return _plain(i, DeniedError, "uses-exhausted", "all 1 use(s) of bundle")


def concurrent_replay(w: World, tmp: Path) -> Hostile:
    # Eight real processes race for one use: exactly one wins.
    h = _plain(w.issue(max_uses=1), DeniedError, "uses-exhausted", "all 1 use(s)")
    h.racers = 8
    return h


# -- revocation ----------------------------------------------------------------


def _carry(w: World, folder: Path, files: dict[str, bytes]) -> None:
    write_media(folder, files)
    host = w.host()
    try:
        host.import_media(folder, now=T0)
    finally:
        host.close()


def _revoked(kind: str) -> Callable[[World, Path], Hostile]:
    def build(w: World, tmp: Path) -> Hostile:
        i = w.issue()
        if kind == "identity":
            i = w.forge(
                w.signer.key, identity="nightly-export-prod", declaration=bytes(32)
            )
        c = i.claims
        value = {
            "bundle": c.bundle_id,
            "identity": "nightly-export-prod",
            "host": c.host,
            "env": c.env,
            "key": c.issuer,
            "before": str(T0 + 1),
        }[kind]
        w.signer.revoke([(kind, value)], T0)
        _carry(w, tmp / "rl", {"revocations.kit": w.signer.revocation_list(T0, DAY)})
        message = f"{kind} {value} is revoked"
        if kind == "before":
            message = "everything issued before"
        return _plain(i, DeniedError, "revoked", message)

    build.__name__ = f"revoked_{kind}"
    return build


def stale_revocation_list(w: World, tmp: Path) -> Hostile:
    # The newest list the host holds expired two days ago.
    old = w.signer.revocation_list(T0 - 3 * DAY, DAY)
    _carry(w, tmp / "rl", {"revocations.kit": old})
    return _plain(w.issue(), DeniedError, "revocation-list-stale", "expired")


# -- approvals -----------------------------------------------------------------


def missing_approvals(w: World, tmp: Path) -> Hostile:
    i = w.forge(w.signer.key, risk="medium", approvals=1)
    return _plain(i, DeniedError, "approvals-missing", "it has 0 (nobody)")


def duplicated_approval(w: World, tmp: Path) -> Hostile:
    # Two approvals asked for; one approver signs twice: it counts once.
    approver = w.add_approver("alice")
    _carry(w, tmp / "roots", w.signer.root_history())
    i = w.forge(w.signer.key, risk="medium", approvals=2)
    b, _, _ = _body(i.data)
    sig = approver.sign(bundle_fmt.LABEL, b.envelope.body)
    sigs = [list(s) for s in b.envelope.signatures]
    h = _plain(i, DeniedError, "approvals-missing", "it has 1 (alice")
    twice = [[approver.key_id, sig], [approver.key_id, sig]]
    h.data = _envelope(b.envelope.body, [*sigs, *twice])
    return h


# -- hostile encodings ---------------------------------------------------------


def truncated(w: World, tmp: Path) -> Hostile:
    i = w.issue()
    return _malformed(i, i.data[:-7])


def deeply_nested(w: World, tmp: Path) -> Hostile:
    return _malformed(w.issue(), b"\x91" * 60_000 + b"\xc0")


def _resigned_claims(w: World, i: Issued, claims_bytes: bytes) -> bytes:
    """Claims re-encoded by hand and signed by the genuine issuer key."""
    _, _, sealed = _body(i.data)
    body = bundle_fmt.encode_body(claims_bytes, sealed)
    return seal_envelope(bundle_fmt.LABEL, body, [w.signer.key])


def _claims_pairs(i: Issued) -> list[tuple[str, Any]]:
    """The signed claims' own pairs, in their canonical order."""
    _, claims_bytes, _ = _body(i.data)
    return list(msgpack.unpackb(claims_bytes, strict_map_key=False).items())


def _pack_map(pairs: list[tuple[bytes, bytes]]) -> bytes:
    head = msgpack.Packer().pack_map_header(len(pairs))
    return head + b"".join(k + v for k, v in pairs)


def duplicate_key(w: World, tmp: Path) -> Hostile:
    # "task" twice in the signed claims: a decoder keeping the last would see
    # another task than one keeping the first.
    i = w.issue()
    pairs = [(msgpack.packb(k), msgpack.packb(v)) for k, v in _claims_pairs(i)]
    pairs.append((msgpack.packb("task"), msgpack.packb("other-task")))
    return _malformed(i, _resigned_claims(w, i, _pack_map(pairs)), "duplicate")


def extension_type(w: World, tmp: Path) -> Hostile:
    i = w.issue()
    pairs = [
        (
            msgpack.packb(k),
            msgpack.packb(msgpack.ExtType(1, b"x") if k == "owner" else v),
        )
        for k, v in _claims_pairs(i)
    ]
    return _malformed(i, _resigned_claims(w, i, _pack_map(pairs)), "extension")


def non_canonical_integer(w: World, tmp: Path) -> Hostile:
    # max_uses as a uint64 although it fits fewer bytes: two encodings of
    # one claim set would have two digests.
    i = w.issue()
    pairs = []
    for k, v in _claims_pairs(i):
        packed = msgpack.packb(v)
        if k == "max_uses":
            packed = b"\xcf" + struct.pack(">Q", v)
        pairs.append((msgpack.packb(k), packed))
    return _malformed(i, _resigned_claims(w, i, _pack_map(pairs)), "canonical")


def oversized(w: World, tmp: Path) -> Hostile:
    i = w.issue()
    h = _malformed(i, i.data + bytes(bundle_fmt.CAP), "cap")
    h.import_exc = FormatError  # too large to be valid: refused before reading
    return h


# -- the bundle file itself ----------------------------------------------------


def fifo(w: World, tmp: Path) -> Hostile:
    i = w.issue()
    h = _malformed(i, i.data, "not a regular file")
    h.path = tmp / "bundle.fifo"
    os.mkfifo(h.path)
    return h


def symlink(w: World, tmp: Path) -> Hostile:
    # The link points at a genuine, valid bundle: the link itself is refused.
    i = w.issue()
    h = _plain(i, MediaError, "unreadable", "symbolic link")
    (tmp / "real.kit").write_bytes(i.data)
    h.path = tmp / "link.kit"
    h.path.symlink_to(tmp / "real.kit")
    h.bundle_id = ""
    h.at_import = "refuse"
    h.import_message = "symbolic link"
    return h


# The file-level rows reach kit only as files: the library takes bytes.
FILE_ONLY = {
    "library": "the library takes bytes; reading the file is the CLI's step "
    "(Host.read_bundle is covered by test_refusals)"
}
NO_RACE = {
    "verify": "verify consumes nothing, so there is no use to race for",
}

BUNDLE_ATTACKS = [
    Attack(f.__name__, f, BUNDLE_COLUMNS)
    for f in (
        forged_by_untrusted_key,
        resigned_by_attacker,
        bit_flipped,
        resealed_by_attacker,
        swapped_claims_unsigned,
        swapped_claims_resigned,
        sealed_to_another_host,
        hmac_with_public_key,
        signed_by_approver_role,
        wrong_host,
        wrong_env,
        wrong_task,
        wrong_command,
        wrong_dataset,
        risk_not_accepted,
        expired,
        not_yet_valid,
        over_long_lifetime,
        clock_wound_back,
        replay_past_use_count,
        replay_after_crash,
        *(_revoked(k) for k in ("bundle", "identity", "host", "env", "key", "before")),
        stale_revocation_list,
        missing_approvals,
        duplicated_approval,
        truncated,
        deeply_nested,
        duplicate_key,
        extension_type,
        non_canonical_integer,
    )
]
BUNDLE_ATTACKS += [
    Attack(
        "concurrent_replay",
        concurrent_replay,
        ("library", "run", "import"),
        {
            **NO_RACE,
            "qr": "the race is at use, after import: the import "
            "column covers it and QR only changes the carrier",
        },
    ),
    Attack("oversized", oversized, BUNDLE_COLUMNS[1:], FILE_ONLY),
    Attack(
        "fifo",
        fifo,
        ("verify", "run"),
        {
            **FILE_ONLY,
            "import": "media FIFOs are refused by read_media (test_media)",
            "qr": "a QR image folder carries bytes, not file types",
        },
    ),
    Attack(
        "symlink",
        symlink,
        ("verify", "run"),
        {
            **FILE_ONLY,
            "import": "media symlinks are refused by read_media (test_media)",
            "qr": "a QR image folder carries bytes, not file types",
        },
    ),
]
BUNDLE_ROWS = {a.name: a for a in BUNDLE_ATTACKS}
BUNDLE_WHY_NOT = {
    "reconcile": "an auditor reconciles the denial receipts these rows leave "
    "(the receipt rows), never a bundle",
}


# -- running one cell ----------------------------------------------------------


def _encodings(secret: bytes) -> list[bytes]:
    b64 = base64.b64encode(secret)
    u64 = base64.urlsafe_b64encode(secret)
    return [secret, secret.hex().encode(), b64, b64.rstrip(b"="), u64, u64.rstrip(b"=")]


def assert_not_leaked(secret: bytes, *blobs: bytes) -> None:
    for blob in blobs:
        for form in _encodings(secret):
            assert form not in blob, "the secret leaked into an output"


@dataclass
class Before:
    receipts: int
    uses: list[tuple[object, ...]]


def _before(w: World) -> Before:
    return Before(len(w.receipts()), w.uses())


def _assert_on_record(w: World, before: Before, h: Hostile, action: str) -> None:
    receipts = w.receipts()
    assert len(receipts) == before.receipts + 1, "one decision, one receipt"
    last = receipts[-1]
    assert (last.event, last.action, last.reason) == ("deny", action, h.reason)
    assert last.bundle_id == h.bundle_id
    assert last.use == 0
    assert w.uses() == before.uses, "a refusal consumes nothing"


def _command(h: Hostile, out: Path) -> tuple[str, ...]:
    if h.command is None:
        return child_argv(out)
    return tuple(str(out) if a == "OUT" else a for a in h.command)


def _bundle_file(h: Hostile, tmp: Path) -> Path:
    if h.path is not None:
        return h.path
    path = tmp / "hostile.kit"
    path.write_bytes(h.data)
    return path


def _cli_args(h: Hostile, w: World, action: str, ref: str | Path, out: Path) -> list:
    cmd = _command(h, out)
    args: list[str | Path] = [action, ref, "--task", h.task]
    args += ["--home", w.host_home("build-01")]
    for d in h.datasets:
        args += ["--dataset", d]
    if action == "verify":
        return [*args, "--command", shlex.join(cmd)]
    return [*args, "--", *cmd]


def _expect_cli_refusal(
    proc: subprocess.CompletedProcess[bytes], h: Hostile, code: int, out: Path
) -> None:
    assert proc.returncode == code, proc.stderr
    err = proc.stderr.decode()
    assert "Traceback" not in err
    if h.exc is DeniedError:
        assert f"[{h.reason}]" in err, err
    assert h.message in err, err
    assert not out.exists(), "the child ran"
    assert_not_leaked(h.secret, proc.stdout, proc.stderr)


def _library(w: World, h: Hostile, tmp: Path) -> None:
    out = tmp / "out"
    before = _before(w)
    host = w.host()
    try:
        with pytest.raises(KitError) as err:
            host.authorize(
                h.data,
                task=h.task,
                command=_command(h, out),
                datasets=h.datasets,
                now=T0,
            )
    finally:
        host.close()
    assert type(err.value) is h.exc, err.value
    if isinstance(err.value, DeniedError):
        assert err.value.code == h.reason
    assert h.message in str(err.value)
    assert_not_leaked(h.secret, str(err.value).encode(), repr(err.value).encode())
    _assert_on_record(w, before, h, "run")


def _verify(w: World, h: Hostile, tmp: Path) -> None:
    out = tmp / "out"
    before = _before(w)
    proc = w.kit(*_cli_args(h, w, "verify", _bundle_file(h, tmp), out))
    _expect_cli_refusal(proc, h, VERIFY_EXIT[h.exc], out)
    _assert_on_record(w, before, h, "verify")


def _run(w: World, h: Hostile, tmp: Path, ref: str | Path | None = None) -> None:
    out = tmp / "out"
    before = _before(w)
    ref = _bundle_file(h, tmp) if ref is None else ref
    proc = w.kit(*_cli_args(h, w, "run", ref, out))
    _expect_cli_refusal(proc, h, RUN_EXIT[h.exc], out)
    _assert_on_record(w, before, h, "run")


def _inbox(w: World) -> list[str]:
    return sorted(p.name for p in (w.host_home("build-01") / "inbox").iterdir())


def _media(h: Hostile, tmp: Path) -> Path:
    folder = tmp / "usb"
    write_media(folder, {f"bundle-{'0' * 32}.kit": h.data})
    return folder


# Bytes that do not parse as a kit object cannot even be named by the QR
# carrier (FORMAT.md 13.3): it refuses them before kit's import sees them.
QR_UNNAMED = "unknown object: not something a host imports; nothing imported"


def _through_import(
    w: World, h: Hostile, tmp: Path, folder: Path, qr: bool = False
) -> None:
    """``kit import FOLDER``, then ``kit run`` of what it staged."""
    before, staged = _before(w), _inbox(w)
    proc = w.kit("import", folder, "--home", w.host_home("build-01"))
    assert "Traceback" not in proc.stderr.decode()
    assert_not_leaked(h.secret, proc.stdout, proc.stderr)
    if h.at_import == "refuse":
        err = proc.stderr.decode()
        exc, reason = h.import_exc or h.exc, h.reason
        if qr and QR_UNNAMED in err and h.exc is not DeniedError:
            exc, reason = MediaError, "unreadable"
        else:
            assert h.import_message in err, err
        # The same exit code as kit verify of the same bytes.
        assert proc.returncode == VERIFY_EXIT[exc], err
        assert "nothing imported" in err
        assert _inbox(w) == staged, "a refused import stages nothing"
        # One denial receipt, action "import", and no use counted.
        receipts = w.receipts()
        assert len(receipts) == before.receipts + 1
        denial = receipts[-1]
        assert (denial.event, denial.action, denial.reason) == (
            "deny",
            "import",
            reason,
        )
        assert w.uses() == before.uses
        return
    assert proc.returncode == 0, proc.stderr
    if h.at_import == "skip":
        assert h.import_message in proc.stderr.decode()
        assert _inbox(w) == staged
        # Asked for by id anyway, the bundle is not there to read.
        skipped = Hostile(
            h.data,
            h.secret,
            MediaError,
            "unreadable",
            "is not staged on this host",
            "",
            h.task,
            h.command,
            h.datasets,
        )
        _run(w, skipped, tmp, ref=h.bundle_id)
        return
    assert _inbox(w) == sorted({*staged, f"{h.bundle_id}.kit"})
    _run(w, h, tmp, ref=h.bundle_id)


def _import(w: World, h: Hostile, tmp: Path) -> None:
    _through_import(w, h, tmp, _media(h, tmp))


def _cli_has(*path: str) -> bool:
    from kit.cli.main import app

    node: Any = typer.main.get_command(app)
    for name in path:
        node = getattr(node, "commands", {}).get(name)
        if node is None:
            return False
    return True


def _as_qr(w: World, folder: Path, tmp: Path) -> Path:
    """Every file of a media folder as QR images, with the real ``kit qr``
    (``--any-bytes``: hostile files need not parse as kit objects)."""
    assert _cli_has("qr", "encode"), "the QR column needs kit qr encode"
    images = tmp / "qr"
    for path in sorted(folder.iterdir()):
        if path.name == "SHA256SUMS":
            continue
        proc = w.kit("qr", "encode", path, "--out", images, "--any-bytes")
        assert proc.returncode == 0, proc.stderr
    assert any(p.suffix == ".png" for p in images.iterdir())
    return images


def _qr(w: World, h: Hostile, tmp: Path) -> None:
    _through_import(w, h, tmp, _as_qr(w, _media(h, tmp), tmp), qr=True)


def _race(w: World, h: Hostile, tmp: Path, column: str) -> None:
    """``h.racers`` real processes (or threads on their own Host, for the
    library) present the same one-use bundle at once: one release."""
    ref: str | Path
    if column == "import":
        folder = _media(h, tmp)
        proc = w.kit("import", folder, "--home", w.host_home("build-01"))
        assert proc.returncode == 0, proc.stderr
        ref = h.bundle_id
    else:
        ref = _bundle_file(h, tmp)
    outs = [tmp / f"out-{n}" for n in range(h.racers)]
    codes: list[int] = []
    if column == "library":
        lock = threading.Lock()

        def one(out: Path) -> None:
            host = w.host()
            try:
                host.authorize(h.data, task=TASK, command=child_argv(out), now=T0)
                code = 0
            except DeniedError as exc:
                assert exc.code == h.reason and h.message in str(exc)
                code = RUN_EXIT[DeniedError]
            finally:
                host.close()
            with lock:
                codes.append(code)

        threads = [threading.Thread(target=one, args=(o,)) for o in outs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        released = codes.count(0)  # authorize returned the secret
    else:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
        procs = [
            subprocess.Popen(
                [str(KIT), *map(str, _cli_args(h, w, "run", ref, o))],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )
            for o in outs
        ]
        for p in procs:
            stdout, stderr = p.communicate(timeout=60)
            codes.append(p.returncode)
            assert_not_leaked(h.secret, stdout, stderr)
            if p.returncode:
                assert f"[{h.reason}]".encode() in stderr, stderr
        released = sum(o.exists() for o in outs)
        winners = [o for o in outs if o.exists()]
        assert [o.read_bytes() for o in winners] == [h.secret]
    assert sorted(codes) == [0] + [RUN_EXIT[DeniedError]] * (h.racers - 1)
    assert released == 1
    events = [(r.event, r.reason) for r in w.receipts() if r.event != "exit"]
    assert sorted(events) == sorted(
        [("release", "")] + [("deny", h.reason)] * (h.racers - 1)
    )
    assert len(w.uses()) == 1


COLUMN_RUNNERS: dict[str, Callable[[World, Hostile, Path], None]] = {
    "library": _library,
    "verify": _verify,
    "run": _run,
    "import": _import,
    "qr": _qr,
}

BUNDLE_CELLS = [
    pytest.param(a.name, col, id=f"{a.name}-{col}")
    for a in BUNDLE_ATTACKS
    for col in a.columns
]


@pytest.mark.parametrize(("attack", "column"), BUNDLE_CELLS)
def test_bundle_attack(world: World, tmp_path: Path, attack: str, column: str) -> None:
    h = BUNDLE_ROWS[attack].build(world, tmp_path)
    if h.racers:
        _race(world, h, tmp_path, column)
    else:
        COLUMN_RUNNERS[column](world, h, tmp_path)


# -- objects carried on media: lists and trust roots ---------------------------


@dataclass
class HostileMedia:
    files: dict[str, bytes]  # media file name -> bytes, besides a valid bundle
    message: str
    exc: type[KitError] = MediaError
    secret: bytes = b""


def _state(w: World) -> tuple[int, bytes | None, bytes | None]:
    host = w.host()
    try:
        return (
            host.root.version,
            host.state.get("revocation_list"),
            host.state.get("trust_root_sha256"),
        )
    finally:
        host.close()


def revocation_list_rollback(w: World, tmp: Path) -> HostileMedia:
    v1 = w.signer.revocation_list(T0, DAY)
    w.signer.revoke([("bundle", "1" * 32)], T0)
    _carry(w, tmp / "v2", {"revocations.kit": w.signer.revocation_list(T0, DAY)})
    return HostileMedia({"revocations.kit": v1}, "rollback", DeniedError)


def revocation_list_by_stranger(w: World, tmp: Path) -> HostileMedia:
    from kit.formats.revocation import sign_list

    forged = sign_list(w.signer.root.name, 99, T0, T0 + DAY, [], SigningKey.generate())
    return HostileMedia({"revocations.kit": forged}, UNAUTH, UnauthenticatedError)


def trust_root_skipped_version(w: World, tmp: Path) -> HostileMedia:
    w.signer.rotate(T0)
    w.signer.rotate(T0)
    history = w.signer.root_history()
    del history["trust-root-v000002.kit"]
    return HostileMedia(history, "does not follow v1", FormatError)


def trust_root_by_new_keys_only(w: World, tmp: Path) -> HostileMedia:
    thief = SigningKey.generate()
    root = w.signer.root
    forged = sign_trust_root(
        root.name,
        [KeySpec(thief.public_key, ("root", "issuer"), "thief")],
        [thief],
        version=root.version + 1,
        created_at=T0,
        expires_at=T0 + 365 * DAY,
    )
    return HostileMedia(
        {"trust-root-v000002.kit": forged}, "root signature", UnauthenticatedError
    )


def trust_root_threshold_by_one_key_twice(w: World, tmp: Path) -> HostileMedia:
    # The next root asks for two root signatures; the signer's key signs twice.
    second = SigningKey.generate()
    root = w.signer.root
    keys = [
        KeySpec(w.signer.key.public_key, ("root", "issuer", "revoker"), "a"),
        KeySpec(second.public_key, ("root",), "b"),
    ]
    thresholds = {"root": 2, "issuer": 1, "revoker": 1}
    v2 = sign_trust_root(
        root.name,
        keys,
        [w.signer.key, second],
        version=2,
        created_at=T0,
        expires_at=T0 + 365 * DAY,
        thresholds=thresholds,
    )
    _carry(w, tmp / "v2", {"trust-root-v000002.kit": v2})
    env = encoding.decode(
        sign_trust_root(
            root.name,
            keys,
            [w.signer.key],
            version=3,
            created_at=T0,
            expires_at=T0 + 365 * DAY,
            thresholds=thresholds,
        ),
        cap=1 << 16,
        what="root",
    )
    env[2] = env[2] + env[2]  # the same signature twice
    return HostileMedia(
        {"trust-root-v000003.kit": encoding.encode(env)}, UNAUTH, UnauthenticatedError
    )


def trust_root_rollback_fork(w: World, tmp: Path) -> HostileMedia:
    w.signer.rotate(T0)
    _carry(w, tmp / "v2", w.signer.root_history())
    other = sign_trust_root(
        w.signer.root.name,
        [KeySpec(w.signer.key.public_key, ("root", "issuer"), "again")],
        [w.signer.key],
        version=2,
        created_at=T0 + 5,
        expires_at=T0 + 365 * DAY,
    )
    return HostileMedia(
        {"trust-root-v000002.kit": other}, "is not the pinned one", FormatError
    )


MEDIA_ATTACKS = [
    Attack(f.__name__, f, MEDIA_COLUMNS)
    for f in (
        revocation_list_rollback,
        revocation_list_by_stranger,
        trust_root_skipped_version,
        trust_root_by_new_keys_only,
        trust_root_threshold_by_one_key_twice,
        trust_root_rollback_fork,
    )
]
MEDIA_ROWS = {a.name: a for a in MEDIA_ATTACKS}
MEDIA_WHY_NOT = {
    "verify": "lists and trust roots reach a host only through import",
    "run": "lists and trust roots reach a host only through import",
    "reconcile": "an auditor reconciles receipts, not lists or roots",
}


@pytest.mark.parametrize(
    ("attack", "column"),
    [
        pytest.param(a.name, c, id=f"{a.name}-{c}")
        for a in MEDIA_ATTACKS
        for c in a.columns
    ],
)
def test_media_attack(world: World, tmp_path: Path, attack: str, column: str) -> None:
    hm = MEDIA_ROWS[attack].build(world, tmp_path)
    good = world.issue()  # all or nothing: a valid bundle on the same media
    folder = tmp_path / "usb"
    write_media(folder, {**hm.files, f"bundle-{good.claims.bundle_id}.kit": good.data})
    state, staged, receipts = _state(world), _inbox(world), len(world.receipts())
    if column == "library":
        host = world.host()
        try:
            with pytest.raises(hm.exc) as err:
                host.import_media(folder, now=T0)
        finally:
            host.close()
        assert hm.message in str(err.value) and "nothing imported" in str(err.value)
        assert_not_leaked(good.secret, str(err.value).encode())
    else:
        if column == "qr":
            folder = _as_qr(world, folder, tmp_path)
        proc = world.kit("import", folder, "--home", world.host_home("build-01"))
        assert proc.returncode == VERIFY_EXIT[hm.exc], proc.stderr
        assert hm.message in proc.stderr.decode(), proc.stderr
        assert "nothing imported" in proc.stderr.decode()
        assert_not_leaked(good.secret, proc.stdout, proc.stderr)
    assert _state(world) == state, "host state changed by a refused import"
    assert _inbox(world) == staged, "a refused import stages nothing"
    *_, denial = world.receipts()  # one denial receipt, nothing else
    assert len(world.receipts()) == receipts + 1
    assert (denial.event, denial.action) == ("deny", "import")
    assert hm.message in denial.detail


# -- receipts carried back: deleted, truncated, reordered, forked, forged ------


@dataclass
class HostileReceipts:
    folders: list[Path]
    codes: set[str]  # anomaly codes that must all be reported
    secret: bytes
    # Set when the tampering cannot change any conclusion: the report must be
    # exactly the one of this untouched evidence (docs/LIMITATIONS.md).
    genuine: list[Path] | None = None


def _flow(w: World, tmp: Path) -> tuple[Path, Issued]:
    """A release, its exit and two denials on build-01, exported."""
    issued = w.use_and_export(tmp / "first", tmp / "child-out")
    host = w.host()
    try:
        for task in ("other-a", "other-b"):
            with pytest.raises(DeniedError):
                host.check(issued.data, task=task, command=None, now=T0 + 3)
        result = host.export_receipts(tmp / "usb", T0 + 4, from_seq=1)
    finally:
        host.close()
    assert result is not None
    return result[0], issued


def _raws(batch: Path) -> tuple[list[bytes], bytes]:
    receipts, cp = rfmt.parse_batch(batch.read_bytes())
    return [r.envelope.raw for r in receipts], cp.envelope.raw


def _rewritten(batch: Path, folder: Path, raws: list[bytes], cp: bytes) -> Path:
    write_media(folder, {batch.name: rfmt.encode_batch(raws, cp)})
    return folder


def receipt_deleted(w: World, tmp: Path) -> HostileReceipts:
    batch, i = _flow(w, tmp)
    raws, cp = _raws(batch)
    folder = _rewritten(batch, tmp / "cut", raws[:1] + raws[2:], cp)
    return HostileReceipts([folder], {"chain-gap", "batch-incomplete"}, i.secret)


def receipts_truncated(w: World, tmp: Path) -> HostileReceipts:
    batch, i = _flow(w, tmp)
    raws, cp = _raws(batch)
    folder = _rewritten(batch, tmp / "short", raws[:-1], cp)
    return HostileReceipts([folder], {"checkpoint-mismatch"}, i.secret)


def receipts_reordered(w: World, tmp: Path) -> HostileReceipts:
    batch, i = _flow(w, tmp)
    raws, cp = _raws(batch)
    # Receipts are placed by their signed seq and prev hash, not by their
    # place in the file, so a shuffled batch proves what the original does;
    # but kit always writes them in seq order, so the shuffle itself shows.
    # (A reorder that changes seq or prev is a forgery: receipt_forged.)
    raws.reverse()
    folder = _rewritten(batch, tmp / "shuffled", raws, cp)
    return HostileReceipts([folder], {"batch-out-of-order"}, i.secret)


def receipts_forked(w: World, tmp: Path) -> HostileReceipts:
    batch, i = _flow(w, tmp)
    home = w.host_home("build-01")
    twin = home.parent / "build-01-snapshot"
    shutil.copytree(home, twin)
    for h, name in ((home, "fork-a"), (twin, "fork-b")):
        host = Host(h)
        try:
            host.authorize(w.issue().data, task=TASK, command=CHILD, now=T0 + 10)
            assert host.export_receipts(tmp / name, T0 + 11) is not None
        finally:
            host.close()
    return HostileReceipts(
        [batch.parent, tmp / "fork-a", tmp / "fork-b"], {"chain-fork"}, i.secret
    )


def receipt_forged(w: World, tmp: Path) -> HostileReceipts:
    batch, i = _flow(w, tmp)
    raws, cp = _raws(batch)
    original = rfmt.parse_receipt(raws[2]).receipt
    raws[2] = rfmt.sign_receipt(original, SigningKey.generate())
    folder = _rewritten(batch, tmp / "forged", raws, cp)
    return HostileReceipts([folder], {"bad-signature", "chain-gap"}, i.secret)


def checkpoint_forged(w: World, tmp: Path) -> HostileReceipts:
    batch, i = _flow(w, tmp)
    raws, _ = _raws(batch)
    _, cp = rfmt.parse_batch(batch.read_bytes())
    forged = rfmt.sign_checkpoint(
        cp.host, cp.first_seq, cp.seq, cp.head, cp.time, SigningKey.generate()
    )
    folder = _rewritten(batch, tmp / "forged-cp", raws, forged)
    return HostileReceipts([folder], {"unknown-host"}, i.secret)


RECEIPT_ATTACKS = [
    Attack(f.__name__, f, RECEIPT_COLUMNS)
    for f in (
        receipt_deleted,
        receipts_truncated,
        receipts_reordered,
        receipts_forked,
        receipt_forged,
        checkpoint_forged,
    )
]
RECEIPT_ROWS = {a.name: a for a in RECEIPT_ATTACKS}
RECEIPT_WHY_NOT = {
    c: "receipts go to the auditor, never to a host command"
    for c in ("verify", "run", "import", "qr")
}


@pytest.mark.parametrize(
    ("attack", "column"),
    [
        pytest.param(a.name, c, id=f"{a.name}-{c}")
        for a in RECEIPT_ATTACKS
        for c in a.columns
    ],
)
def test_receipt_attack(world: World, tmp_path: Path, attack: str, column: str) -> None:
    hr = RECEIPT_ROWS[attack].build(world, tmp_path)
    ledger = world.signer.ledger
    anchor, usage = ledger.anchor("build-01"), ledger.usage()
    if hr.genuine is not None:
        _same_as_genuine(world, hr, column)
        return
    if column == "library":
        report = reconcile(
            load_batches(hr.folders), ledger.hosts(), ledger.bundles(), now=T0 + 60
        )
        codes = {a.code for a in report.anomalies}
        assert hr.codes <= codes, codes
        assert not report.clean
        text = repr(report).encode()
    else:
        world.close()  # the CLI opens the signer's ledger itself
        proc = world.kit("reconcile", *hr.folders, "--home", world.signer_home)
        assert proc.returncode == 1, proc.stderr
        for code in hr.codes:
            assert f"ANOMALY {code}".encode() in proc.stdout, proc.stdout
        assert b"Traceback" not in proc.stderr
        text = proc.stdout + proc.stderr
    assert_not_leaked(hr.secret, text)
    # Nothing lost, nothing learnt from bad evidence: the ledger keeps its
    # anchor and usage as they were (only clean reconciliations feed it).
    ledger = world.signer.ledger if column == "library" else _ledger(world)
    assert (ledger.anchor("build-01"), ledger.usage()) == (anchor, usage)


def _summary(folders: list[Path], w: World) -> tuple[object, ...]:
    ledger = w.signer.ledger
    r = reconcile(load_batches(folders), ledger.hosts(), ledger.bundles(), now=T0)
    return (
        r.receipts,
        r.clean,
        sorted((b.bundle_id, b.status, b.uses, tuple(b.denials)) for b in r.bundles),
        [(a.code, a.seq) for a in r.anomalies],
    )


def _same_as_genuine(w: World, hr: HostileReceipts, column: str) -> None:
    assert hr.genuine is not None
    if column == "library":
        assert _summary(hr.folders, w) == _summary(hr.genuine, w)
        return
    w.close()
    got = w.kit("reconcile", *hr.folders, "--home", w.signer_home, "--json")
    w._signer = None
    want = w.kit("reconcile", *hr.genuine, "--home", w.signer_home, "--json")
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout)
    assert_not_leaked(hr.secret, got.stdout, got.stderr)


def _ledger(w: World) -> Any:
    w._signer = None
    return w.signer.ledger


# -- every entry point has a column --------------------------------------------

# CLI commands through which a hostile bundle, list, root or receipt reaches
# kit, and the column of this suite that attacks them.
ENTRY_POINTS = {
    "verify": "verify",
    "run": "run",
    "import": "import",  # and "qr" for a folder of QR images
    "reconcile": "reconcile",
}
# Commands that read other outside input, and where that input is attacked.
OTHER_INPUT = {
    "enroll": "enrollment requests: test_signer, test_vectors_cli",
    "approve": "a bundle to co-sign: test_trust (approver refuses what it "
    "cannot vouch for)",
    "host init": "the trust root to pin: test_vectors_cli, test_hardening",
    "trust install": "a candidate root: test_trust",
    "trust add-key": "a public key file: test_trust",
    "approver init": "the trust root to start from: test_trust",
    "audit init": "the trust root an auditor pins: the auditor's own tests",
    "inventory": "identity declarations: test_inventory, test_identities",
    "policy check": "identity declarations: test_identities",
    "policy show": "identity declarations: test_identities",
}
# Commands that read nothing but their own home and flags.
NO_HOSTILE_INPUT = {
    "signer init": "creates a home from flags",
    "issue": "the operator's own request, checked against identities",
    "export": "writes media from the signer's own home",
    "ledger export": "writes media from the signer's own ledger",
    "revoke": "the operator's own flags",
    "retire": "the operator's own flags",
    "host status": "reads the host's own home",
    "receipts export": "writes media from the host's own journal",
    "trust renew": "the signer's own home",
    "trust show": "the signer's own home",
    "trust rotate": "the operator's own flags",
    "trust remove-key": "the operator's own flags",
    "trust approvals": "the operator's own flags",
}
QR_COMMANDS = {
    "qr encode": "writes images from a file the operator chose",
    "qr decode": "QR images: the qr column (through kit import)",
}


def _leaves(node: Any, prefix: str = "") -> list[str]:
    commands = getattr(node, "commands", None)
    if commands is None:
        return [prefix.strip()]
    out: list[str] = []
    for name, sub in commands.items():
        out += _leaves(sub, f"{prefix} {name}")
    return out


def test_every_entry_point_has_a_column() -> None:
    from kit.cli.main import app

    leaves = set(_leaves(typer.main.get_command(app)))
    qr = {c for c in leaves if c.startswith("qr ")}
    assert qr <= set(QR_COMMANDS), f"unclassified QR commands: {qr - set(QR_COMMANDS)}"
    known = set(ENTRY_POINTS) | set(OTHER_INPUT) | set(NO_HOSTILE_INPUT) | qr
    assert leaves - known == set(), (
        "a command without a column in the attack suite (or a classification "
        f"in tests/test_attacks.py): {sorted(leaves - known)}"
    )
    assert known - qr - leaves == set(), f"gone: {sorted(known - qr - leaves)}"
    columns = {c for a in BUNDLE_ATTACKS for c in a.columns}
    columns |= {c for a in RECEIPT_ATTACKS for c in a.columns}
    assert set(ENTRY_POINTS.values()) | {"library", "qr"} == columns


@pytest.mark.parametrize(
    ("table", "columns", "why"),
    [
        (BUNDLE_ATTACKS, BUNDLE_COLUMNS, BUNDLE_WHY_NOT),
        (MEDIA_ATTACKS, MEDIA_COLUMNS, MEDIA_WHY_NOT),
        (RECEIPT_ATTACKS, RECEIPT_COLUMNS, RECEIPT_WHY_NOT),
    ],
    ids=["bundles", "media", "receipts"],
)
def test_every_row_covers_or_explains_every_column(
    table: list[Attack], columns: tuple[str, ...], why: dict[str, str]
) -> None:
    every = {*BUNDLE_COLUMNS, *RECEIPT_COLUMNS}
    for a in table:
        assert set(a.columns) <= set(columns), a
        explained = {**why, **a.why_not}
        assert not set(a.columns) & set(explained), a
        assert set(a.columns) | set(explained) == every, a
        assert all(explained.values()), a
    assert len({a.name for a in table}) == len(table)


def test_hostile_encodings_of_a_secret_are_all_checked() -> None:
    """The leak check itself must catch every form it claims to."""
    secret = b"tok-\xfb\xff-secret"
    for form in _encodings(secret):
        with pytest.raises(AssertionError):
            assert_not_leaked(secret, b"log: " + form + b"\n")
