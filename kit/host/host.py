"""An offline host: its home, its decisions and its receipt journal.

Every decision becomes a signed, hash-linked receipt in the host database.
A release commits the use and its receipt durably before the secret leaves
this module; a refusal commits a denial receipt before it is raised.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from kit import encoding
from kit.crypto.seal import SealingKey
from kit.crypto.sign import SigningKey, key_id
from kit.errors import (
    DeniedError,
    FormatError,
    HomeError,
    JournalError,
    KitError,
    MediaError,
    UnauthenticatedError,
    restated,
)
from kit.formats.bundle import CAP as BUNDLE_CAP
from kit.formats.bundle import MAX_ARGS, MAX_DATASETS, Claims
from kit.formats.revocation import CAP as REVOCATION_CAP
from kit.formats.revocation import RevocationList, load_list
from kit.formats.trustroot import CAP as TRUST_ROOT_CAP
from kit.formats.trustroot import TrustRoot, load_trust_root, successors
from kit.fsutil import (
    atomic_write,
    check_not_writable_by_others,
    check_private,
    ensure_private_dir,
    fsync_dir,
    read_regular,
)
from kit.home import new_home, require_kind
from kit.host.policy import FILE as POLICY_FILE
from kit.host.policy import HostPolicy, load_policy
from kit.host.verifier import (
    HostIdentity,
    Request,
    Verified,
    approvals_of,
    authenticate,
    check_approvals,
    check_scope,
)
from kit.lazylog import LazyLogger
from kit.storage.base import ReceiptBuilder, UseRecord
from kit.storage.sqlite import SqliteHostState

log = LazyLogger(__name__)

HPKE_KEY = "hpke.key"
RECEIPT_KEY = "receipt.key"
ROOT_FILE = "trust-root.kit"
PENDING_ROOT = "trust-root.pending"
REVOCATIONS = "revocations.kit"
ENROLLMENT_FILE = "enrollment.kit"
STATE_FILE = "state.db"
INBOX = "inbox"


def init_host(
    home: Path, name: str, env: str, root_bytes: bytes, now: int
) -> tuple[bytes, TrustRoot]:
    """Create a host home pinning ``root_bytes``; return the enrollment request."""
    encoding.check_text(name, "host name", encoding.NAME_RE)
    encoding.check_text(env, "environment", encoding.NAME_RE)
    root = load_trust_root(root_bytes)
    if now > root.expires_at:
        raise HomeError(f"trust root {root.name} v{root.version} has expired")
    with new_home(home, "host"):
        hpke, rkey = SealingKey.generate(), SigningKey.generate()
        atomic_write(home / HPKE_KEY, hpke.raw_unsafe(), 0o600)
        atomic_write(home / RECEIPT_KEY, rkey.seed_unsafe(), 0o600)
        atomic_write(home / ROOT_FILE, root_bytes)
        ensure_private_dir(home / INBOX)
        atomic_write(
            home / POLICY_FILE, HostPolicy(environments=(env,)).to_toml().encode()
        )
        state = SqliteHostState(home / STATE_FILE)
        state.put("name", name.encode())
        state.put("env", env.encode())
        state.put("trust_root_sha256", root.digest)
        state.close()
        from kit.formats.enrollment import Enrollment, make_enrollment

        request = make_enrollment(
            Enrollment(name, env, hpke.public_key, rkey.public_key, root.digest, now),
            rkey,
        )
        atomic_write(home / ENROLLMENT_FILE, request)
    return request, root


class Release(NamedTuple):
    """A granted use. ``secret`` must go to the child and nowhere else."""

    verified: Verified
    secret: bytes
    use: int
    request: Request
    program: str  # the executable command[0] resolved to

    @property
    def command(self) -> tuple[str, ...]:
        return self.request.command or ()

    def __repr__(self) -> str:
        return f"Release(bundle={self.verified.claims.bundle_id}, use={self.use})"


def _host_cap(name: str) -> int:
    """What a host reads of a media file, by name: bundles and trust roots up
    to their format caps, receipt batches not at all (they are skipped)."""
    if name.startswith("bundle-"):
        return BUNDLE_CAP
    if name.startswith("trust-root"):
        return TRUST_ROOT_CAP
    if name.startswith("receipts-"):
        from kit.formats import receipt as rfmt

        return rfmt.BATCH_CAP
    if name == REVOCATIONS:
        return REVOCATION_CAP
    raise MediaError(f"{name}: not a file kit imports; nothing imported")


class ImportResult(NamedTuple):
    staged: list[Verified]
    skipped: list[str]  # file names with the reason they were passed over
    pinned: tuple[int, ...] = ()  # trust-root versions pinned
    revocation: int = 0  # version of a newer revocation list taken in, else 0


def _utc(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _printable(text: str) -> str:
    """Text as UTF-8 can carry it (argv may hold undecodable bytes)."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _check_deliverable(secret: bytes, delivery: str | None) -> None:
    """Refuse, before any use is counted, a secret the delivery cannot carry."""
    if delivery == "env" and b"\0" in secret:
        raise DeniedError(
            "delivery-not-possible",
            "the secret holds a NUL byte, which an environment variable cannot "
            "carry; use --deliver fd, file or stdin",
        )


def reason_code(exc: KitError) -> str:
    if isinstance(exc, DeniedError):
        return exc.code
    if isinstance(exc, UnauthenticatedError):
        return "unauthenticated"
    if isinstance(exc, FormatError):
        return "malformed"
    if isinstance(exc, MediaError):
        return exc.reason
    return "error"


class Host:
    def __init__(self, home: Path) -> None:
        require_kind(home, "host")
        self.home = home
        for f in (HPKE_KEY, RECEIPT_KEY):
            check_private(home / f)
        for p in (home, home / ROOT_FILE, home / STATE_FILE):
            check_not_writable_by_others(p)
        check_private(home / STATE_FILE)  # use counts, clock floor, journal
        self._sealing = SealingKey(read_regular(home / HPKE_KEY, 32, "host key"))
        self._signing = SigningKey(read_regular(home / RECEIPT_KEY, 32, "receipt key"))
        self.root = load_trust_root(
            read_regular(home / ROOT_FILE, 1 << 16, "pinned trust root")
        )
        self.state = SqliteHostState(home / STATE_FILE)
        name, env = self.state.get("name"), self.state.get("env")
        if name is None or env is None:
            raise HomeError(f"{home}: host state lacks its name or environment")
        pinned = self.state.get("trust_root_sha256")
        pending = home / PENDING_ROOT
        if pinned != self.root.digest and os.path.lexists(pending):
            data = read_regular(pending, 1 << 16, "pending trust root")
            if hashlib.sha256(data).digest() == pinned:  # finish an interrupted pin
                os.replace(pending, home / ROOT_FILE)
                self.root = load_trust_root(data)
        if pinned != self.root.digest:
            raise HomeError(
                f"{home / ROOT_FILE} is not the trust root pinned at host init "
                f"(fingerprint {self.root.digest.hex()[:16]}, pinned "
                f"{(pinned or b'').hex()[:16] or 'none'}); restore the pinned one"
            )
        self.identity = HostIdentity(
            name.decode(), env.decode(), key_id(self._sealing.public_key)
        )
        self.policy = load_policy(home)
        self.revocations = self._stored_revocations()

    def close(self) -> None:
        self.state.close()

    def _stored_revocations(self) -> RevocationList | None:
        """The list in force. One that no longer verifies (its revoker left
        the trust root) is set aside: releases are then refused as stale
        until a fresh list is imported, which stays possible."""
        self.revocation_unusable = False
        data = self.state.get("revocation_list")
        if data is None:
            return None
        try:
            return load_list(
                data, self.root.keys_for("revoker"), self.root.thresholds["revoker"]
            )
        except (FormatError, UnauthenticatedError):
            self.revocation_unusable = True
            return None

    @property
    def receipt_key_id(self) -> str:
        return self._signing.key_id

    # -- receipts -------------------------------------------------------------

    def _builder(
        self,
        *,
        now: int,
        event: str,
        action: str,
        digest: bytes,
        bundle_id: str,
        request: Request,
        reason: str = "",
        detail: str = "",
        status: int = 0,
        duration_ms: int = 0,
        approvals: tuple[str, ...] = (),
    ) -> ReceiptBuilder:
        # Loaded with the first receipt: `kit verify` of a good bundle writes none.
        from kit.formats import receipt as rfmt

        # What was asked is recorded as asked, cut to the receipt's bounds.
        task = _printable(request.task)[: rfmt.MAX_TASK]
        command = tuple(_printable(a)[:256] for a in (request.command or ())[:MAX_ARGS])
        datasets = tuple(
            _printable(d)[:63] for d in request.datasets[:MAX_DATASETS] if d
        )
        delivery = request.delivery if event != "deny" and request.delivery else ""

        def build(seq: int, prev: bytes, use: int) -> bytes:
            return rfmt.sign_receipt(
                rfmt.Receipt(
                    host=self.identity.name,
                    seq=seq,
                    prev=prev,
                    time=now,
                    event=event,
                    action=action,
                    bundle_id=bundle_id,
                    bundle_digest=digest,
                    task=task,
                    command=command,
                    reason=reason,
                    detail=detail[:512],
                    use=use,
                    exit_status=status,
                    duration_ms=duration_ms,
                    datasets=datasets,
                    delivery=delivery,
                    approvals=approvals,
                ),
                self._signing,
            )

        return build

    def _deny(
        self,
        exc: KitError,
        *,
        now: int,
        action: str,
        data: bytes,
        verified: Verified | None,
        request: Request,
    ) -> None:
        """Record a denial receipt for ``exc``; the caller re-raises ``exc``."""
        bundle_id = verified.claims.bundle_id if verified else ""
        try:
            self.state.append(
                self._builder(
                    now=now,
                    event="deny",
                    action=action,
                    digest=hashlib.sha256(data).digest(),
                    bundle_id=bundle_id,
                    request=request,
                    reason=reason_code(exc),
                    detail=_printable(str(exc)),
                ),
                floor=0,  # a refusal never raises the floor (FORMAT.md 7.3)
            )
        except JournalError as jexc:
            raise JournalError(
                f"{exc}; and the denial receipt could not be written: {jexc}"
            ) from None
        log.debug("denied bundle %s: %s", bundle_id or "?", reason_code(exc))

    # -- decisions ------------------------------------------------------------

    def _scope(self, verified: Verified, request: Request, now: int) -> None:
        self._check_anchor(verified)
        if self.revocation_unusable:
            raise DeniedError(
                "revocation-list-stale",
                "the stored revocation list is no longer signed by a revoker of the "
                "pinned trust root; import a fresh one (every kit export carries one)",
            )
        check_scope(
            verified,
            root=self.root,
            host=self.identity,
            policy=self.policy,
            floor=self.state.floor(),
            request=request,
            now=now,
            revoked=self.revocations,
        )

    def _check_anchor(self, verified: Verified) -> None:
        """The bundle names the newest receipt of this host the signer has
        reconciled; this journal must hold exactly that receipt. A host restored
        from an old copy of its home, or whose journal was rewritten, fails."""
        c = verified.claims
        if not c.anchor_seq:
            return
        held = self.state.hash_at(c.anchor_seq)
        if held != c.anchor_head:
            what = (
                f"lacks receipt {c.anchor_seq}"
                if held is None
                else f"holds a different receipt {c.anchor_seq}"
            )
            raise DeniedError(
                "anchor-not-extended",
                f"the signer has reconciled this host's receipts up to "
                f"{c.anchor_seq}, but this journal {what}: the host home was "
                "restored from an old copy or its journal was replaced",
            )

    def _exhausted(self, verified: Verified, spent: list[UseRecord]) -> DeniedError:
        c = verified.claims
        times = ", ".join(_utc(u.time) for u in spent)
        return DeniedError(
            "uses-exhausted",
            f"all {c.max_uses} use(s) of bundle {c.bundle_id} are "
            f"spent (used at {times})",
        )

    def check(
        self,
        data: bytes,
        *,
        task: str,
        command: tuple[str, ...] | None,
        now: int,
        datasets: tuple[str, ...] = (),
        delivery: str | None = None,
    ) -> Verified:
        """Would this bundle be released now? Releases nothing, consumes nothing.
        ``command`` and ``delivery`` are checked when given.

        Raises KitError after writing a denial receipt (action "verify").
        """
        request = Request(task, command, datasets, delivery)
        verified: Verified | None = None
        try:
            verified = authenticate(data, self.root, approvals=False)
            check_approvals(verified.bundle, verified.claims, self.root)
            self._scope(verified, request, now)
            secret = self._sealing.open(
                verified.bundle.sealed, verified.bundle.seal_info
            )
            _check_deliverable(secret, delivery)
            spent = self.state.uses(verified.claims.bundle_id)
            if len(spent) >= verified.claims.max_uses:
                raise self._exhausted(verified, spent)
            return verified
        except (FormatError, UnauthenticatedError, DeniedError) as exc:
            self._deny(
                exc,
                now=now,
                action="verify",
                data=data,
                verified=verified,
                request=request,
            )
            raise

    def authorize(
        self,
        data: bytes,
        *,
        task: str,
        command: tuple[str, ...],
        now: int,
        datasets: tuple[str, ...] = (),
        delivery: str = "env",
        resolve: Callable[[tuple[str, ...]], str] | None = None,
        confirm: Callable[[Claims], bool] | None = None,
        ready: Callable[[], None] | None = None,
    ) -> Release:
        """Verify, open the secret, find the program, then atomically count the
        use and commit the release receipt. Only after that commit is the
        secret returned.

        ``resolve`` maps the command to the program to start (raising
        DeniedError when there is none); ``confirm`` may ask a person to
        approve a high-risk release; ``ready`` prepares the delivery (raising
        DeniedError when it cannot be made, e.g. no room on tmpfs). All run
        after every check, so they never hide a worse refusal, and before the
        use is counted, so a refusal there costs no use.
        """
        request = Request(task, command, datasets, delivery)
        verified: Verified | None = None
        try:
            verified = authenticate(data, self.root, approvals=False)
            check_approvals(verified.bundle, verified.claims, self.root)
            self._scope(verified, request, now)
            c = verified.claims
            secret = self._sealing.open(
                verified.bundle.sealed, verified.bundle.seal_info
            )
            _check_deliverable(secret, delivery)
            program = resolve(command) if resolve is not None else command[0]
            spent = self.state.uses(c.bundle_id)  # ask no one about a spent bundle
            if len(spent) >= c.max_uses:
                raise self._exhausted(verified, spent)
            if c.risk == "high" and confirm is not None and not confirm(c):
                raise DeniedError(
                    "not-confirmed", "the high-risk release was not confirmed"
                )
            if ready is not None:
                ready()
            build = self._builder(
                now=now,
                event="release",
                action="run",
                digest=verified.bundle.envelope.digest,
                bundle_id=c.bundle_id,
                request=request,
                approvals=tuple(sorted(approvals_of(verified.bundle, self.root))),
            )
            outcome = self.state.release(
                c.bundle_id, c.max_uses, now, build, floor=max(now, c.issued_at)
            )
            if isinstance(outcome, list):
                raise self._exhausted(verified, outcome)
            return Release(verified, secret, outcome[0], request, program)
        except (FormatError, UnauthenticatedError, DeniedError) as exc:
            self._deny(
                exc,
                now=now,
                action="run",
                data=data,
                verified=verified,
                request=request,
            )
            raise

    def record_unreadable(
        self,
        exc: KitError,
        *,
        task: str,
        command: tuple[str, ...],
        action: str,
        now: int,
        datasets: tuple[str, ...] = (),
    ) -> None:
        """A bundle that could not even be read is still a refusal on record."""
        self._deny(
            exc,
            now=now,
            action=action,
            data=b"",
            verified=None,
            request=Request(task, command, datasets),
        )

    def record_exit(
        self, release: Release, *, status: int, duration_ms: int, now: int
    ) -> None:
        self.state.append(
            self._builder(
                now=now,
                event="exit",
                action="run",
                digest=release.verified.bundle.envelope.digest,
                bundle_id=release.verified.claims.bundle_id,
                request=release.request,
                status=max(-255, min(255, status)),
                duration_ms=duration_ms,
            ),
            floor=now,
        )

    # -- status ---------------------------------------------------------------

    def status(self, now: int) -> dict[str, Any]:
        """What an operator asks of a host, and every problem found."""
        problems: list[str] = []  # key file permissions are checked on opening
        try:
            self.state.check_journal()
        except JournalError as exc:
            problems.append(str(exc))
        floor = self.state.floor()
        if now + self.policy.leeway < floor:
            problems.append(f"the clock is {floor - now} s behind the clock floor")
        if now > self.root.expires_at:
            problems.append(
                "the pinned trust root has expired: kit import the renewed one "
                "(kit trust renew and kit export on the signer)"
            )
        rl = self.revocations
        if self.revocation_unusable:
            problems.append(
                "the stored revocation list no longer verifies: import a fresh one"
            )
        elif rl is None:
            problems.append(
                "no revocation list yet: import one (kit export carries it)"
            )
        elif now - self.policy.leeway > rl.expires_at:
            problems.append(f"the revocation list v{rl.version} has expired")
        staged = []
        for path in sorted((self.home / INBOX).glob("*.kit")):
            try:
                v = authenticate(self.read_bundle(path), self.root)
            except KitError as exc:
                problems.append(f"staged {path.name}: {exc}")
                continue
            c = v.claims
            used = len(self.state.uses(c.bundle_id))
            staged.append(
                {
                    "bundle_id": c.bundle_id,
                    "task": c.task,
                    "env": c.env,
                    "expires_at": c.expires_at,
                    "expired": now > c.expires_at,
                    "uses_left": max(0, c.max_uses - used),
                    "max_uses": c.max_uses,
                }
            )
        head, _ = self.state.head()
        exported = int((self.state.get("exported_seq") or b"0").decode())
        return {
            "host": self.identity.name,
            "env": self.identity.env,
            "hpke_key_id": self.identity.hpke_key_id,
            "receipt_key_id": self.receipt_key_id,
            "trust_root": {
                "name": self.root.name,
                "version": self.root.version,
                "expires_at": self.root.expires_at,
                "sha256": self.root.digest.hex(),
            },
            "clock": {"now": now, "floor": floor},
            "policy": {
                "environments": list(self.policy.environments),
                "max_lifetime": self.policy.max_lifetime,
                "max_uses": self.policy.max_uses,
                "risk_levels": list(self.policy.risk_levels),
                "leeway": self.policy.leeway,
            },
            "revocations": None
            if rl is None
            else {
                "version": rl.version,
                "expires_at": rl.expires_at,
                "entries": len(rl.entries),
            },
            "staged": staged,
            "receipts": {
                "last_seq": head,
                "exported_seq": exported,
                "not_exported": head - exported,
            },
            "problems": problems,
        }

    # -- media ----------------------------------------------------------------

    def import_media(self, folder: Path, *, now: int) -> ImportResult:
        """Stage the bundles on the media that are for this host: all of them,
        or nothing at all.

        A folder of QR images (FORMAT.md 13.3) is read by
        :meth:`import_qr_images`; any other folder must carry a SHA256SUMS
        manifest (FORMAT.md 10). A refusal keeps the kind of the error that
        caused it (so the exit code of ``kit verify``), names the file, and
        is recorded in a denial receipt (action "import") with the digest of
        the refused file, or of nothing when no one file is at fault.
        """
        from kit import qr  # Pillow and zxing-cpp load only for QR folders
        from kit.media import read_media  # not on the verify / run path

        try:
            if qr.is_image_folder(folder):
                return self.import_qr_images(folder, now=now)
            return self.import_files(folder, read_media(folder, _host_cap), now=now)
        except (FormatError, UnauthenticatedError, DeniedError, MediaError) as exc:
            if not str(exc).endswith("nothing imported"):  # e.g. from read_media
                exc.args = (f"{exc}; nothing imported",)
            self._deny(
                exc,
                now=now,
                action="import",
                data=exc.evidence,
                verified=None,
                request=Request("", None),
            )
            raise

    def import_qr_images(self, folder: Path, *, now: int) -> ImportResult:
        """Decode every image, rebuild every object (each one complete and
        matching its message id), name it as ``kit export`` would and import
        the lot by :meth:`import_files`. Images with no QR code are named in
        ``skipped``; an incomplete or inconsistent message refuses it all."""
        from kit import qr

        try:
            report = qr.collect_images(qr.image_paths([folder]))
            objects = report.collector.results()
        except FormatError as exc:
            raise restated(exc, folder) from None  # FORMAT.md 13.2: exit 3
        files: dict[str, bytes] = {}
        for mid, data in objects.items():
            try:
                name = qr.media_name(data, mid)
            except MediaError as exc:
                raise MediaError(
                    f"{folder}: QR message {mid[:8]}: {exc}; nothing imported"
                ) from None
            if name in files:
                raise MediaError(
                    f"{folder}: two different objects would both be {name}; "
                    "nothing imported"
                )
            if len(data) > _host_cap(name):
                raise FormatError(
                    f"{folder}: QR message {mid[:8]} is {len(data)} bytes, over the "
                    f"{_host_cap(name)}-byte cap of {name}"
                )
            files[name] = data
        result = self.import_files(folder, files, now=now)
        empty = [f"{p.name} (no QR code found)" for p in report.empty]
        return ImportResult(
            result.staged, empty + result.skipped, result.pinned, result.revocation
        )

    def import_files(
        self, folder: Path, files: dict[str, bytes], *, now: int
    ) -> ImportResult:
        """Import media files already read, by name (FORMAT.md 10).

        Every bundle must authenticate against the pinned root, and a trust
        root on the media must extend the pinned one (4.3). Bundles for other
        hosts and receipt batches (one stick may serve several hosts and carry
        receipts back) are skipped and named. A bundle already staged with
        approvals the new copy lacks is kept (a fresh export of the signer's
        outbox must not undo approvals added on the way).
        """
        chain = self._root_chain(folder, files)
        root = chain[-1] if chain else self.root
        staged: dict[str, Verified] = {}
        skipped: list[str] = []
        for name, data in files.items():
            path = folder / name
            if name.startswith("trust-root") or name == REVOCATIONS:
                continue
            if name.startswith("receipts-"):
                skipped.append(f"{name} (a receipt batch, for the signer)")
                continue
            if not (name.startswith("bundle-") and name.endswith(".kit")):
                not_ours = MediaError("not a file kit imports")
                raise restated(not_ours, path, data)
            try:  # approvals are counted when the bundle is used
                v = authenticate(data, root, approvals=False)
            except (FormatError, UnauthenticatedError, DeniedError) as exc:
                raise restated(exc, path, data) from None
            c = v.claims
            if c.host != self.identity.name or c.host_key != self.identity.hpke_key_id:
                skipped.append(f"{name} (for host {c.host})")
                continue
            staged[c.bundle_id] = v
        newer = self._newer_revocations(folder, files, root, now)
        for bundle_id, v in list(staged.items()):
            held = self._approvals_kept(v, root)
            if held:
                del staged[bundle_id]
                skipped.append(
                    f"bundle-{bundle_id}.kit (the staged copy has {held} "
                    "approval(s) this one lacks; kept it)"
                )
        # Bundles first: a failed write (read-only or full inbox) then leaves
        # the pinned root and the list in force as they were, and the bundles
        # this import added are removed again, so "nothing imported" holds.
        added: list[Path] = []
        try:
            for v in staged.values():
                path = self.inbox_path(v.claims.bundle_id)
                fresh = not os.path.lexists(path)
                atomic_write(path, v.bundle.envelope.raw)
                if fresh:
                    added.append(path)
        except MediaError:
            for path in added:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        for new in chain:
            self._pin(new)
        if newer is not None:
            self.state.put("revocation_list", newer.envelope.raw)
            self.state.put("revocation_version", str(newer.version).encode())
            self.revocations = newer
            self.revocation_unusable = False
        return ImportResult(
            list(staged.values()),
            skipped,
            tuple(r.version for r in chain),
            newer.version if newer is not None else 0,
        )

    def _root_chain(self, folder: Path, files: dict[str, bytes]) -> list[TrustRoot]:
        """The trust roots on the media that extend the pinned one, in order
        (FORMAT.md 4.3); any flaw refuses the whole import."""
        found = []
        for name, data in files.items():
            if name.startswith("trust-root"):
                try:
                    found.append(load_trust_root(data))
                except (FormatError, UnauthenticatedError) as exc:
                    raise restated(exc, folder / name, data) from None
        try:
            return successors(self.root, found)
        except (FormatError, UnauthenticatedError) as exc:
            raise restated(exc, folder) from None

    def _approvals_kept(self, new: Verified, root: TrustRoot) -> int:
        """How many approvals the copy of this bundle already staged has that
        ``new`` lacks, when it has more in all; 0 to stage ``new``."""
        try:
            path = self.inbox_path(new.claims.bundle_id)
            old = authenticate(
                read_regular(path, BUNDLE_CAP, "bundle"), root, approvals=False
            )
        except KitError:  # none staged, or unusable now: take the new copy
            return 0
        if old.bundle.envelope.body != new.bundle.envelope.body:
            return 0
        have, got = approvals_of(old.bundle, root), approvals_of(new.bundle, root)
        return len(have - got) if len(have) > len(got) else 0

    def _newer_revocations(
        self, folder: Path, files: dict[str, bytes], root: TrustRoot, now: int
    ) -> RevocationList | None:
        """The list on the media if it is authentic and not older than the one
        in force; a rollback or a different list of the same version refuses
        the whole import (the list in force stays)."""
        data = files.get(REVOCATIONS)
        if data is None:
            return None
        try:
            new = load_list(data, root.keys_for("revoker"), root.thresholds["revoker"])
        except (FormatError, UnauthenticatedError) as exc:
            raise restated(exc, folder / REVOCATIONS, data) from None
        try:
            if new.issued_at > now + self.policy.leeway:
                raise DeniedError(
                    "revocation-from-the-future",
                    f"{folder / REVOCATIONS}: revocation list v{new.version} was "
                    f"issued {new.issued_at - now} s after this host's clock "
                    f"({_utc(new.issued_at)}); the signer's or this host's clock is "
                    "wrong; nothing imported",
                )
            if new.name != root.name:
                raise DeniedError(
                    "revocation-foreign",
                    f"{folder / REVOCATIONS}: a revocation list of {new.name!r}, not "
                    f"{root.name!r}; nothing imported",
                )
            floor = int((self.state.get("revocation_version") or b"0").decode())
            if new.version < floor:
                raise DeniedError(
                    "revocation-rollback",
                    f"{folder / REVOCATIONS}: revocation list v{new.version} is older "
                    f"than v{floor} already taken in (rollback); nothing imported",
                )
            held = self.revocations
            if held is not None:
                if new.version < held.version:
                    raise DeniedError(
                        "revocation-rollback",
                        f"{folder / REVOCATIONS}: revocation list v{new.version} is "
                        f"older than v{held.version} in force (rollback); "
                        "nothing imported",
                    )
                if new.version == held.version:
                    if new.digest != held.digest:
                        raise DeniedError(
                            "revocation-fork",
                            f"{folder / REVOCATIONS}: a different revocation list "
                            f"v{new.version}; nothing imported",
                        )
                    return None
        except DeniedError as exc:
            exc.evidence = data  # the refused list's digest goes in the receipt
            raise
        return new

    def _pin(self, new: TrustRoot) -> None:
        """Pin a checked successor: pending file, then the digest, then the
        rename; an interruption is finished on the next open."""
        atomic_write(self.home / PENDING_ROOT, new.envelope.raw)
        self.state.put("trust_root_sha256", new.digest)
        os.replace(self.home / PENDING_ROOT, self.home / ROOT_FILE)
        fsync_dir(self.home)
        self.root = new
        log.debug("pinned trust root v%d", new.version)

    def inbox_path(self, bundle_id: str) -> Path:
        return self.home / INBOX / f"{bundle_id}.kit"

    def read_bundle(self, path: Path) -> bytes:
        return read_regular(path, BUNDLE_CAP, "bundle")

    def export_receipts(
        self, folder: Path, now: int, *, from_seq: int | None = None
    ) -> tuple[Path, int, int] | None:
        """Write receipts as one batch with a signed checkpoint: those not yet
        exported, or all from ``from_seq`` on (to replace lost media).

        Returns (path, first seq, last seq), or None when there is nothing new.
        """
        from kit.formats import receipt as rfmt

        self.state.check_journal()
        done = int((self.state.get("exported_seq") or b"0").decode())
        start = done if from_seq is None else max(0, from_seq - 1)
        rows = self.state.receipts_after(start)
        if not rows:
            return None
        first, last = rows[0][0], rows[-1][0]
        checkpoint = rfmt.sign_checkpoint(
            self.identity.name,
            first,
            last,
            rfmt.receipt_hash(rows[-1][1]),
            now,
            self._signing,
        )
        name = f"receipts-{self.identity.name}-{first:010d}-{last:010d}.kit"
        from kit.media import write_media  # not on the verify / run path

        [path] = write_media(
            folder, {name: rfmt.encode_batch([raw for _, raw in rows], checkpoint)}
        )
        self.state.put("exported_seq", str(max(done, last)).encode())
        return path, first, last
