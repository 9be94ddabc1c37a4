"""The signer: its home, enrollment of hosts and issuance of bundles."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kit import encoding
from kit.crypto import atrest
from kit.crypto.seal import seal
from kit.crypto.sign import SigningKey, key_id
from kit.errors import DeniedError, FormatError, HomeError, UsageError
from kit.formats import bundle as bundle_fmt
from kit.formats import ledger_export as lx
from kit.formats import revocation
from kit.formats.enrollment import Enrollment, load_enrollment
from kit.formats.envelope import seal_envelope
from kit.formats.trustroot import (
    ROLES,
    KeySpec,
    TrustRoot,
    approver_quorum,
    check_successor,
    load_trust_root,
    make_trust_root,
    sign_trust_root,
)
from kit.fsutil import (
    atomic_write,
    check_not_writable_by_others,
    check_private,
    ensure_private_dir,
    read_regular,
)
from kit.home import new_home, require_kind
from kit.signer.identity import Identity
from kit.storage.base import HostRecord, IssuanceRecord
from kit.storage.sqlite import SqliteLedger

log = logging.getLogger(__name__)

KEY_FILE = "signer.key"
ROOT_FILE = "trust-root.kit"
LEDGER_FILE = "ledger.db"
OUTBOX = "outbox"
ROOTS = "trust-roots"
REVOCATIONS = "revocations.kit"
DIGEST_INFO = b"kit/ledger-secret-digest/v1"
ROOT_TTL_DEFAULT = 365 * 24 * 3600


@dataclass(frozen=True)
class IssueRequest:
    host: str
    env: str
    task: str
    commands: tuple[tuple[str, ...], ...]
    ttl: int
    max_uses: int
    secret_name: str
    owner: str
    not_before: int | None = None
    datasets: tuple[str, ...] = ()
    risk: str = "low"
    delivery: tuple[str, ...] = bundle_fmt.DELIVERY_MODES
    # The workflow identity the bundle is issued under; None for ad hoc.
    identity: Identity | None = None
    # Refuse, rather than warn, when the same secret has been issued under
    # the identity for longer than its rotation period.
    refuse_stale_secret: bool = False


def check_within(ident: Identity, req: IssueRequest, now: int) -> None:
    """Refuse a request wider than its identity's declaration, naming the
    field (issue 5: policy as code)."""
    where = f"identity {ident.name} ({ident.path.name})"
    if ident.is_retired(now):
        raise UsageError(
            f"{where} is retired since {ident.retire_on}; nothing more "
            "is issued under it"
        )
    if req.env != ident.environment:
        raise UsageError(f"env: {where} is for {ident.environment!r}, not {req.env!r}")
    if req.task != ident.task:
        raise UsageError(f"task: {where} is for {ident.task!r}, not {req.task!r}")
    for cmd in req.commands:
        if not ident.declares_command(cmd):
            raise UsageError(f"command: {' '.join(cmd)!r} is not declared by {where}")
    for dataset in req.datasets:
        if dataset not in ident.datasets:
            raise UsageError(f"dataset: {dataset!r} is not declared by {where}")
    if req.ttl > ident.max_lifetime:
        raise UsageError(
            f"ttl: {req.ttl} s exceeds the max_lifetime of {where}, "
            f"{ident.max_lifetime} s"
        )
    if req.max_uses > ident.max_uses:
        raise UsageError(
            f"max_uses: {req.max_uses} exceeds the max_uses of "
            f"{where}, {ident.max_uses}"
        )
    for mode in req.delivery:
        if mode not in ident.delivery:
            raise UsageError(f"delivery: {mode!r} is not allowed by {where}")
    if req.risk != ident.risk or req.owner != ident.owner:
        raise UsageError(f"risk and owner come from {where}; do not override them")


def init_signer(
    home: Path,
    name: str,
    passphrase: bytes,
    *,
    now: int,
    kdf_profile: str = "moderate",
    root_ttl: int = ROOT_TTL_DEFAULT,
) -> TrustRoot:
    """Create a signer home: issuing key sealed under the passphrase, trust root
    v1 and an empty ledger. Returns the trust root."""
    encoding.check_text(name, "signer name", encoding.NAME_RE)
    with new_home(home, "signer"):
        key = SigningKey.generate()
        atomic_write(
            home / KEY_FILE,
            atrest.seal_key(key.seed_unsafe(), passphrase, kdf_profile),
            0o600,
        )
        root_bytes = make_trust_root(
            name, key, version=1, created_at=now, expires_at=now + root_ttl
        )
        atomic_write(home / ROOT_FILE, root_bytes)
        ensure_private_dir(home / ROOTS)
        atomic_write(home / ROOTS / root_file_name(1), root_bytes)
        ensure_private_dir(home / OUTBOX)
        SqliteLedger(home / LEDGER_FILE).close()
    log.debug("signer home created, issuer key %s", key.key_id)
    return load_trust_root(root_bytes)


def _digest_key(key: SigningKey) -> tuple[SigningKey, bytes]:
    """The ledger's secret-digest key, bound to the signing key it came from."""
    return key, HKDF(hashes.SHA256(), 32, salt=None, info=DIGEST_INFO).derive(
        key.seed_unsafe()
    )


class Signer:
    """An opened signer home. The issuing key is loaded only when needed."""

    def __init__(self, home: Path) -> None:
        require_kind(home, "signer")
        # As the host does with state.db: the ledger is what an audit is
        # checked against, and the folder and trust root decide what is made.
        for p in (home, home / ROOT_FILE):
            check_not_writable_by_others(p)
        check_private(home / LEDGER_FILE)
        if os.path.lexists(home / f"{LEDGER_FILE}-wal"):  # holds recent commits
            check_private(home / f"{LEDGER_FILE}-wal")
        self.home = home
        self.root = load_trust_root(
            read_regular(home / ROOT_FILE, 1 << 16, "trust root")
        )
        self.ledger = SqliteLedger(home / LEDGER_FILE)
        self._key: SigningKey | None = None
        self._digest_key: tuple[SigningKey, bytes] | None = None
        self.warnings: list[str] = []  # said to the operator, never refused

    def unlock(self, passphrase: bytes) -> None:
        check_private(self.home / KEY_FILE)
        sealed = read_regular(self.home / KEY_FILE, atrest.CAP, "signer key")
        key = SigningKey(atrest.open_key(sealed, passphrase))
        if key.key_id not in self.root.keys_for("issuer"):
            raise HomeError("the signer key is not an issuer in this home's trust root")
        self._key = key
        self._digest_key = _digest_key(key)

    @property
    def key(self) -> SigningKey:
        if self._key is None:
            raise HomeError("the signer key is locked")
        return self._key

    def close(self) -> None:
        self.ledger.close()

    # -- enrollment ---------------------------------------------------------

    def enroll(self, request: bytes, now: int) -> Enrollment:
        """Record a host from its self-signed enrollment request."""
        e = load_enrollment(request)
        if e.trust_root != self.root.digest:
            raise DeniedError(
                "wrong-trust-root",
                f"host {e.host} pinned a different trust root "
                f"({e.trust_root.hex()[:16]}...), not this signer's "
                f"({self.root.digest.hex()[:16]}...)",
            )
        existing = self.ledger.get_host(e.host)
        if existing is not None:
            since = datetime.fromtimestamp(existing.enrolled_at, UTC)
            raise DeniedError(
                "already-enrolled",
                f"host {e.host} is already enrolled (since "
                f"{since:%Y-%m-%d %H:%M:%SZ}); hosts are not re-keyed in place",
            )
        for other in self.ledger.hosts():
            if e.receipt_public == other.receipt_public or (
                e.hpke_public == other.hpke_public
            ):
                raise DeniedError(
                    "already-enrolled",
                    f"host {e.host}'s keys are already enrolled as host {other.name}; "
                    "each host needs keys of its own",
                )
        self.ledger.add_host(
            HostRecord(
                e.host,
                e.env,
                e.hpke_public,
                e.receipt_public,
                now,
                hashlib.sha256(request).digest(),
            )
        )
        return e

    # -- issuance -----------------------------------------------------------

    def _secret_digest(self, secret: bytes) -> bytes:
        # A keyed digest: a plain hash of a short token could be brute-forced
        # from a leaked ledger. Its key is derived once per unlocked key.
        key = self.key
        if self._digest_key is None or self._digest_key[0] is not key:
            self._digest_key = _digest_key(key)
        return hmac.new(self._digest_key[1], secret, hashlib.sha256).digest()

    def issue(
        self, req: IssueRequest, secret: bytes, now: int
    ) -> tuple[bytes, bundle_fmt.Claims]:
        """Seal ``secret`` to the host, sign the claims, record the issuance."""
        if req.identity is not None:  # the declaration first: it is the policy
            check_within(req.identity, req, now)
        retired = set(self.ledger.revocations())  # read once, not per name
        for kind, value in (
            ("identity", req.identity.name if req.identity else ""),
            ("env", req.env),
            ("host", req.host),
        ):
            if value and (kind, value) in retired:
                raise UsageError(
                    f"{kind} {value} is retired (revoked); nothing more "
                    "is issued for it"
                )
        host = self.ledger.get_host(req.host)
        if host is None:
            raise UsageError(f"host {req.host!r} is not enrolled (kit enroll REQUEST)")
        if host.env != req.env:
            raise UsageError(
                f"host {req.host} is enrolled for env {host.env!r}, not {req.env!r}"
            )
        secret_digest = self._secret_digest(secret)
        if req.identity is not None:
            self._check_rotation(req, secret_digest, now)
        if not 0 < len(secret) <= bundle_fmt.MAX_SECRET:
            raise UsageError(
                f"the secret must be 1 to {bundle_fmt.MAX_SECRET} bytes, "
                f"got {len(secret)}"
            )
        if not 0 < req.ttl <= bundle_fmt.MAX_LIFETIME:
            raise UsageError(f"--ttl must be 1 s to {bundle_fmt.MAX_LIFETIME} s")
        anchor = self.ledger.anchor(host.name)
        not_before = now if req.not_before is None else req.not_before
        claims = bundle_fmt.Claims(
            bundle_id=secrets.token_hex(16),
            issuer=self.key.key_id,
            owner=req.owner,
            host=host.name,
            host_key=key_id(host.hpke_public),
            env=req.env,
            task=req.task,
            commands=req.commands,
            secret_name=req.secret_name,
            issued_at=now,
            not_before=not_before,
            expires_at=not_before + req.ttl,
            max_uses=req.max_uses,
            identity=req.identity.name if req.identity else "",
            declaration=bytes.fromhex(req.identity.digest) if req.identity else b"",
            datasets=req.datasets,
            risk=req.risk,
            delivery=req.delivery,
            approvals=max(
                req.identity.approvals if req.identity else 0,
                self.root.approvals[req.risk],
            ),
            anchor_seq=anchor[0] if anchor else 0,
            anchor_head=anchor[1] if anchor else b"",
        )
        approvers = len(self.root.keys_for("approver"))
        if claims.approvals > approvers:
            raise UsageError(
                f"this bundle needs {claims.approvals} approval(s) (its identity or "
                f"the trust root asks for them) but the trust root names {approvers} "
                "approver key(s): add approvers first (kit approver init, kit trust "
                "add-key)"
            )
        if claims.expires_at > self.root.expires_at:
            self.warnings.append(
                f"this bundle is valid until {_utc(claims.expires_at)}, after the "
                f"trust root expires ({_utc(self.root.expires_at)}): hosts refuse it "
                "from then until they import a renewed root (kit trust renew)"
            )
        claims_bytes = encoding.encode(claims.to_map())
        try:  # the same checks the host will make, so nothing unusable is issued
            bundle_fmt.decode_claims(claims_bytes)
        except FormatError as exc:
            raise UsageError(str(exc).replace("bundle claims", "request")) from None
        sealed = seal(secret, host.hpke_public, bundle_fmt.seal_info_for(claims_bytes))
        data = seal_envelope(
            bundle_fmt.LABEL, bundle_fmt.encode_body(claims_bytes, sealed), [self.key]
        )
        self.ledger.record_bundle(
            IssuanceRecord(
                bundle_id=claims.bundle_id,
                host=claims.host,
                env=claims.env,
                task=claims.task,
                owner=claims.owner,
                issuer=claims.issuer,
                commands=claims.commands,
                issued_at=now,
                not_before=claims.not_before,
                expires_at=claims.expires_at,
                max_uses=claims.max_uses,
                claims=claims_bytes,
                bundle_digest=hashlib.sha256(data).digest(),
                secret_digest=secret_digest,
                identity=claims.identity,
                risk=claims.risk,
                datasets=claims.datasets,
            )
        )
        log.debug("issued bundle %s for host %s", claims.bundle_id, claims.host)
        return data, claims

    def _check_rotation(self, req: IssueRequest, digest: bytes, now: int) -> None:
        """The same secret (by keyed digest) issued under the identity for
        longer than its rotation period: a warning, or a refusal on request."""
        ident = req.identity
        assert ident is not None  # noqa: S101 - only called with an identity
        since = [
            r.issued_at
            for r in self.ledger.bundles()
            if r.identity == ident.name and r.secret_digest == digest
        ]
        if not since or now - min(since) <= ident.rotation_period:
            return
        message = (
            f"rotation: this secret has been issued under {ident.name} since "
            f"{datetime.fromtimestamp(min(since), UTC):%Y-%m-%d}, longer than its "
            f"rotation_period ({ident.rotation_period} s); rotate it at the source"
        )
        if req.refuse_stale_secret:
            raise UsageError(message)
        self.warnings.append(message)

    def outbox_path(self, bundle_id: str) -> Path:
        return self.home / OUTBOX / f"{bundle_id}.kit"

    def exportable(self, now: int) -> tuple[list[str], int, int]:
        """The ids of the outbox's bundles worth carrying to hosts, in ledger
        order, and how many were left out as revoked (by the rules hosts
        apply to the revocation list, FORMAT.md 12) and as used up (by the
        uses reconciled from receipts). Expired bundles are not counted."""
        revoked = self.ledger.revocations()
        used = self.ledger.usage()
        out: list[str] = []
        gone = spent = 0
        for b in self.ledger.bundles():
            if b.expires_at < now or not self.outbox_path(b.bundle_id).exists():
                continue
            if revocation.revoking_entry(
                revoked,
                bundle_id=b.bundle_id,
                identity=b.identity,
                host=b.host,
                env=b.env,
                issuer=b.issuer,
                issued_at=b.issued_at,
            ):
                gone += 1
            elif used.get(b.bundle_id, (0, 0))[0] >= b.max_uses:
                spent += 1
            else:
                out.append(b.bundle_id)
        return out, gone, spent

    # -- trust-root rotation -------------------------------------------------

    def propose(
        self,
        now: int,
        *,
        add: tuple[KeySpec, ...] = (),
        remove: tuple[str, ...] = (),
        approvals: dict[str, int] | None = None,
        ttl: int | None = None,
    ) -> tuple[bytes, TrustRoot, int]:
        """Make trust root version N+1 (the current keys less ``remove`` plus
        ``add``), signed by this signer's root key. Returns its bytes, the
        parsed root, and how many current approvers must co-sign it before it
        can be installed (FORMAT.md 4.3)."""
        current = self.root
        known = {k.key_id for k in current.keys}
        for spec in add:
            if key_id(spec.public_key) in known:
                raise UsageError(
                    f"key {key_id(spec.public_key)[:12]} is already in trust root "
                    f"v{current.version}"
                )
        for kid in remove:
            if kid not in known:
                raise UsageError(f"no key {kid[:12]} in trust root v{current.version}")
        if self.key.key_id in remove:
            raise UsageError("the signer cannot remove its own root key")
        keys = [
            KeySpec(k.public_key, tuple(r for r in ROLES if r in k.roles), k.label)
            for k in current.keys
            if k.key_id not in remove
        ] + list(add)
        if ttl is not None and ttl < 3600:
            raise UsageError("a trust root lifetime is at least 1 h")
        expires = now + ttl if ttl is not None else current.expires_at
        if expires <= now:
            raise UsageError(
                "the trust root has expired: renew it first (kit trust renew --ttl)"
            )
        data = sign_trust_root(
            current.name,
            keys,
            [self.key],
            version=current.version + 1,
            created_at=now,
            expires_at=expires,
            thresholds=dict(current.thresholds),
            approvals=dict(approvals or current.approvals),
        )
        try:
            new = load_trust_root(data)
        except FormatError as exc:
            raise UsageError(f"the new trust root would be invalid: {exc}") from None
        return data, new, approver_quorum(current, new)

    def install(self, data: bytes) -> TrustRoot:
        """Install a proposed root once it is signed as a host will require,
        and keep it with every earlier version for hosts that missed some."""
        new = load_trust_root(data)
        check_successor(self.root, new)
        ensure_private_dir(self.home / ROOTS)
        atomic_write(self.home / ROOTS / root_file_name(new.version), data)
        atomic_write(self.home / ROOT_FILE, data)
        self.root = new
        return new

    def rotate(self, now: int, **changes: Any) -> TrustRoot:
        """Propose and install in one step, when no approver must co-sign."""
        data, new, needed = self.propose(now, **changes)
        if needed:
            raise UsageError(
                f"trust root v{new.version} changes the approvers or approval counts: "
                f"{needed} current approver(s) must co-sign it first"
            )
        return self.install(data)

    # -- revocation (FORMAT.md 12) -----------------------------------------

    def revoke(self, entries: list[tuple[str, str]], now: int) -> int:
        """Add entries (each checked for its one spelling); return how many
        were new. The list itself is signed by :meth:`revocation_list`."""
        checked = [revocation.check_entry(k, v) for k, v in entries]
        return sum(self.ledger.add_revocation(e.kind, e.value, now) for e in checked)

    def revocation_list(self, now: int, validity: int) -> bytes:
        """Sign the next version of the list, fresh from ``now``, even when no
        entry changed: hosts receive freshness with every export."""
        if not 0 < validity <= revocation.MAX_VALIDITY:
            raise UsageError(
                f"a revocation list is valid 1 s to {revocation.MAX_VALIDITY} s"
            )
        if self.key.key_id not in self.root.keys_for("revoker"):
            raise HomeError("the signer key is not a revoker in its trust root")
        entries = [revocation.Entry(k, v) for k, v in self.ledger.revocations()]
        data = revocation.sign_list(
            self.root.name,
            self.ledger.next_counter("revocation-list"),
            now,
            now + validity,
            entries,
            self.key,
        )
        atomic_write(self.home / REVOCATIONS, data)
        return data

    # -- ledger export (FORMAT.md 14) ----------------------------------------

    def ledger_exports(
        self, now: int, max_items: int = lx.MAX_ITEMS
    ) -> list[tuple[bytes, tuple[int, int, int]]]:
        """Sign the next ledger export(s): every host, issuance and revocation
        recorded since the last one, ``max_items`` issuances per export.
        They are recorded as prepared before being returned, and
        :meth:`commit_ledger_exports` records them as made once they are
        safely on media. Exports prepared but never committed (a run that
        stopped in between) are returned again, the same bytes, instead of
        new ones: the same number never gets two different exports. Always
        at least one export, so an auditor also learns that nothing was
        issued."""
        with self.ledger.export_snapshot():  # one consistent read, then recorded
            prepared = self.ledger.prepared_exports()
            if prepared:
                return prepared
            out = self._next_exports(now, max_items)
            for data, upto in out:
                export = lx.open_export(data, {self.key.key_id: self.key.public_key}, 1)
                self.ledger.record_prepared(
                    export.seq, hashlib.sha256(data).digest(), now, upto, data
                )
            return out

    def _next_exports(
        self, now: int, max_items: int
    ) -> list[tuple[bytes, tuple[int, int, int]]]:
        seq, prev, hosts_to, bundles_to, revs_to = self.ledger.last_export()
        enrolled = self.ledger.hosts_after(hosts_to)  # read once
        hosts = [
            lx.ExportedHost(
                h.name, h.env, h.receipt_public, key_id(h.hpke_public), h.enrolled_at
            )
            for _, h in enrolled
        ]
        new_hosts_to = max([hosts_to, *(i for i, _ in enrolled)])
        revs = self.ledger.revocations_after(revs_to)
        out: list[tuple[bytes, tuple[int, int, int]]] = []
        top = self.ledger.max_bundle_rowid()
        while True:
            rows = self.ledger.bundles_after(bundles_to, max_items)
            last = rows[-1][0] if rows else bundles_to
            if last < top and len(rows) < max_items:
                last = top  # rows deleted at the end: the range still says so
            export = lx.LedgerExport(
                signer=self.root.name,
                seq=seq + 1,
                prev=prev,
                time=now,
                first_lseq=bundles_to + 1,
                last_lseq=last,
                hosts=tuple(hosts),
                issuances=tuple(
                    lx.ExportedIssuance(
                        lseq=i,
                        bundle_id=r.bundle_id,
                        host=r.host,
                        env=r.env,
                        task=r.task,
                        identity=r.identity,
                        owner=r.owner,
                        issuer=r.issuer,
                        issued_at=r.issued_at,
                        not_before=r.not_before,
                        expires_at=r.expires_at,
                        max_uses=r.max_uses,
                        claims_digest=hashlib.sha256(r.claims).digest(),
                        bundle_digest=r.bundle_digest,
                    )
                    for i, r in rows
                ),
                revocations=tuple(
                    lx.ExportedRevocation(k, v, t) for _, k, v, t in revs
                ),
            )
            data = lx.sign_export(export, self.key)
            revs_to = max([revs_to, *(i for i, _, _, _ in revs)])
            out.append((data, (new_hosts_to, last, revs_to)))
            seq, prev, bundles_to = seq + 1, hashlib.sha256(data).digest(), last
            hosts, revs = [], []
            if bundles_to >= top:
                return out

    def commit_ledger_exports(
        self, exports: list[tuple[bytes, tuple[int, int, int]]], now: int
    ) -> None:
        """Remember exports written to media (all or none), so the next one
        follows them. ``now`` is kept for the callers' sake: an export's own
        time is the one it was signed with."""
        del now
        rows = []
        for data, upto in exports:
            export = lx.open_export(data, {self.key.key_id: self.key.public_key}, 1)
            rows.append(
                (export.seq, hashlib.sha256(data).digest(), export.time, upto, data)
            )
        self.ledger.commit_exports(rows)

    def retired(self, kind: str, name: str) -> bool:
        return (kind, name) in set(self.ledger.revocations())

    def root_history(self) -> dict[str, bytes]:
        """Every trust-root version this signer made, by media file name."""
        folder = self.home / ROOTS
        return {
            p.name: read_regular(p, 1 << 16, "trust root")
            for p in sorted(folder.glob("trust-root-v*.kit"))
        }


def root_file_name(version: int) -> str:
    return f"trust-root-v{version:06d}.kit"


def _utc(t: int) -> str:
    return f"{datetime.fromtimestamp(t, UTC):%Y-%m-%d %H:%M:%SZ}"
