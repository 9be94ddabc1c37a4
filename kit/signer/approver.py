"""Approvers: people who co-sign risky bundles, from a home of their own on a
machine apart from the signer (issue 5). An approval is one more Ed25519
signature in the bundle's envelope, over the same label and exact body the
issuer signed; hosts count approvals by distinct approver key."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from kit import encoding
from kit.crypto import atrest
from kit.crypto.sign import SigningKey
from kit.errors import DeniedError, HomeError, UsageError
from kit.formats import bundle as bundle_fmt
from kit.formats.envelope import Envelope, peek_label, verify_envelope
from kit.formats.pubkey import make_public_key_file
from kit.formats.trustroot import LABEL as TRUST_ROOT_LABEL
from kit.formats.trustroot import TrustRoot, load_trust_root, successors
from kit.fsutil import (
    atomic_write,
    check_not_writable_by_others,
    check_private,
    read_regular,
)
from kit.home import new_home, require_kind

KEY_FILE = "approver.key"
PUB_FILE = "approver.pub"
ROOT_FILE = "trust-root.kit"


def init_approver(
    home: Path,
    label: str,
    passphrase: bytes,
    root_bytes: bytes,
    *,
    now: int,
    kdf_profile: str = "moderate",
) -> bytes:
    """Create an approver home pinning the trust root; return the public key
    file to hand to the signer (``kit trust add-key``)."""
    encoding.check_text(label, "approver label", encoding.NAME_RE)
    load_trust_root(root_bytes)
    with new_home(home, "approver"):
        key = SigningKey.generate()
        atomic_write(
            home / KEY_FILE,
            atrest.seal_key(key.seed_unsafe(), passphrase, kdf_profile),
            0o600,
        )
        atomic_write(home / ROOT_FILE, root_bytes)
        pub = make_public_key_file(key, label, now)
        atomic_write(home / PUB_FILE, pub)
    return pub


class Pending(NamedTuple):
    """What an approval would sign, checked and parsed, before it is signed
    (:meth:`Approver.prepare`). ``claims`` is set for a bundle, ``root`` for a
    candidate trust root; :meth:`Approver.sign` signs ``envelope`` as it is,
    so the bytes signed are the bytes these were read from."""

    envelope: Envelope
    claims: bundle_fmt.Claims | None = None
    root: TrustRoot | None = None


class Approver:
    def __init__(self, home: Path) -> None:
        require_kind(home, "approver")
        # As the signer's home: the key is secret, and the folder and trust
        # root decide what this approver vouches for.
        for p in (home, home / ROOT_FILE):
            check_not_writable_by_others(p)
        check_private(home / KEY_FILE)
        self.home = home
        self.root: TrustRoot = load_trust_root(
            read_regular(home / ROOT_FILE, 1 << 16, "trust root")
        )
        self._key: SigningKey | None = None
        self._prepared: Pending | None = None

    def unlock(self, passphrase: bytes) -> None:
        check_private(self.home / KEY_FILE)
        sealed = read_regular(self.home / KEY_FILE, atrest.CAP, "approver key")
        self._key = SigningKey(atrest.open_key(sealed, passphrase))

    @property
    def key(self) -> SigningKey:
        if self._key is None:
            raise HomeError("the approver key is locked")
        return self._key

    def catch_up(self, roots: list[bytes], *, write: bool = True) -> int:
        """Follow newer trust roots by the rules hosts use (FORMAT.md 4.3).
        Returns the version now pinned. ``write=False`` follows them in
        memory only, until :meth:`pin` (kit approve pins nothing when the
        approver declines)."""
        for new in successors(self.root, [load_trust_root(r) for r in roots]):
            if write:
                atomic_write(self.home / ROOT_FILE, new.envelope.raw)
            self.root = new
            self._prepared = None  # checked against the root it replaced
        return self.root.version

    def pin(self) -> None:
        """Write the trust root followed in memory to the home, if newer."""
        on_disk = load_trust_root(
            read_regular(self.home / ROOT_FILE, 1 << 16, "trust root")
        )
        if self.root.version > on_disk.version:
            atomic_write(self.home / ROOT_FILE, self.root.envelope.raw)

    def prepare(self, data: bytes) -> Pending:
        """Check a bundle or candidate trust root as :meth:`prepare_bundle` or
        :meth:`prepare_root` do, by its label."""
        if peek_label(data, len(data)) == TRUST_ROOT_LABEL:
            return self.prepare_root(data)
        return self.prepare_bundle(data)

    def prepare_root(self, data: bytes) -> Pending:
        """Check the next trust root, which changes approvers or approval
        counts and so needs the current approvers (FORMAT.md 4.3): the next
        version, same name, signed by the pinned root keys, this key an
        approver and not yet among its signatures. Signs nothing."""
        key = self.key
        candidate = load_trust_root(data)
        if candidate.version != self.root.version + 1:
            raise UsageError(
                f"trust root v{candidate.version} is not the next version after the "
                f"pinned v{self.root.version}; catch up first (--trust MEDIA)"
            )
        if key.key_id not in self.root.keys_for("approver"):
            raise UsageError("this approver is not an approver of the pinned root")
        if candidate.name != self.root.name:
            raise UsageError(
                f"trust root for {candidate.name!r}, not {self.root.name!r}"
            )
        verify_envelope(  # made by the signer this approver follows
            candidate.envelope,
            self.root.keys_for("root"),
            threshold=self.root.thresholds["root"],
            what="trust root",
        )
        if any(kid == key.key_id for kid, _ in candidate.envelope.signatures):
            raise DeniedError(
                "already-approved", "this trust root already has this approval"
            )
        self._prepared = Pending(candidate.envelope, root=candidate)
        return self._prepared

    def prepare_bundle(self, data: bytes) -> Pending:
        """Check a bundle: this key an approver of the pinned root, the
        bundle signed by its issuer keys and not yet approved by this key.
        Returns its claims; signs nothing.
        """
        key = self.key
        if key.key_id not in self.root.keys_for("approver"):
            raise UsageError(
                "this key is not an approver in the pinned trust root; catch up "
                "with --trust MEDIA once the signer has added it"
            )
        bundle = bundle_fmt.parse_bundle(data)
        verify_envelope(
            bundle.envelope,
            self.root.keys_for("issuer"),
            threshold=self.root.thresholds["issuer"],
            what="bundle",
        )
        claims = bundle_fmt.decode_claims(bundle.claims_bytes)
        if any(kid == key.key_id for kid, _ in bundle.envelope.signatures):
            raise DeniedError(
                "already-approved",
                f"bundle {claims.bundle_id} already has this approval",
            )
        self._prepared = Pending(bundle.envelope, claims=claims)
        return self._prepared

    def sign(self, pending: Pending) -> bytes:
        """Add this approver's signature to what :meth:`prepare` (or
        :meth:`prepare_bundle`, :meth:`prepare_root`) last checked, and
        return the approved object. Nothing is parsed or checked again: the
        body signed is the one checked and shown."""
        if pending is not self._prepared:
            raise UsageError("sign only what prepare() of this approver returned")
        self._prepared = None  # one signature per check
        env = pending.envelope
        sigs = [[kid, sig] for kid, sig in env.signatures]
        sigs.append([self.key.key_id, self.key.sign(env.label, env.body)])
        return encoding.encode([env.label, env.body, sigs])

    def approve_root(self, data: bytes) -> tuple[bytes, TrustRoot]:
        """Check and co-sign the next trust root at once (no one is shown
        anything in between: for callers that already know what it is)."""
        pending = self.prepare_root(data)
        assert pending.root is not None  # noqa: S101 - set by prepare_root
        return self.sign(pending), pending.root

    def approve(self, data: bytes) -> tuple[bytes, bundle_fmt.Claims]:
        """Check a bundle's issuer signature and add this approver's at once.

        Refuses a bundle not signed by a pinned issuer key, and a bundle this
        key has already approved.
        """
        pending = self.prepare_bundle(data)
        assert pending.claims is not None  # noqa: S101 - set by prepare_bundle
        return self.sign(pending), pending.claims
