"""Approvers: people who co-sign risky bundles, from a home of their own on a
machine apart from the signer (issue 5). An approval is one more Ed25519
signature in the bundle's envelope, over the same label and exact body the
issuer signed; hosts count approvals by distinct approver key."""

from __future__ import annotations

from pathlib import Path

from kit import encoding
from kit.crypto import atrest
from kit.crypto.sign import SigningKey
from kit.errors import DeniedError, HomeError, UsageError
from kit.formats import bundle as bundle_fmt
from kit.formats.envelope import verify_envelope
from kit.formats.pubkey import make_public_key_file
from kit.formats.trustroot import TrustRoot, load_trust_root, successors
from kit.fsutil import atomic_write, check_private, read_regular
from kit.home import create_home, require_kind

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
    create_home(home, "approver")
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


class Approver:
    def __init__(self, home: Path) -> None:
        require_kind(home, "approver")
        self.home = home
        self.root: TrustRoot = load_trust_root(
            read_regular(home / ROOT_FILE, 1 << 16, "trust root")
        )
        self._key: SigningKey | None = None

    def unlock(self, passphrase: bytes) -> None:
        check_private(self.home / KEY_FILE)
        sealed = read_regular(self.home / KEY_FILE, atrest.CAP, "approver key")
        self._key = SigningKey(atrest.open_key(sealed, passphrase))

    def catch_up(self, roots: list[bytes]) -> int:
        """Follow newer trust roots by the rules hosts use (FORMAT.md 4.3).
        Returns the version now pinned."""
        for new in successors(self.root, [load_trust_root(r) for r in roots]):
            atomic_write(self.home / ROOT_FILE, new.envelope.raw)
            self.root = new
        return self.root.version

    def approve_root(self, data: bytes) -> tuple[bytes, TrustRoot]:
        """Co-sign the next trust root, which changes approvers or approval
        counts and so needs the current approvers (FORMAT.md 4.3)."""
        if self._key is None:
            raise HomeError("the approver key is locked")
        candidate = load_trust_root(data)
        if candidate.version != self.root.version + 1:
            raise UsageError(
                f"trust root v{candidate.version} is not the next version after the "
                f"pinned v{self.root.version}; catch up first (--trust MEDIA)"
            )
        if self._key.key_id not in self.root.keys_for("approver"):
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
        env = candidate.envelope
        if any(kid == self._key.key_id for kid, _ in env.signatures):
            raise DeniedError(
                "already-approved", "this trust root already has this approval"
            )
        sigs = [[kid, sig] for kid, sig in env.signatures]
        sigs.append([self._key.key_id, self._key.sign(env.label, env.body)])
        return encoding.encode([env.label, env.body, sigs]), candidate

    def approve(self, data: bytes) -> tuple[bytes, bundle_fmt.Claims]:
        """Check the issuer's signature, then add this approver's signature.

        Refuses a bundle not signed by a pinned issuer key, and a bundle this
        key has already approved.
        """
        if self._key is None:
            raise HomeError("the approver key is locked")
        if self._key.key_id not in self.root.keys_for("approver"):
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
        env = bundle.envelope
        if any(kid == self._key.key_id for kid, _ in env.signatures):
            raise DeniedError(
                "already-approved",
                f"bundle {claims.bundle_id} already has this approval",
            )
        sigs = [[kid, sig] for kid, sig in env.signatures]
        sigs.append([self._key.key_id, self._key.sign(env.label, env.body)])
        return encoding.encode([env.label, env.body, sigs]), claims
