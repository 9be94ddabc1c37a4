"""Trust root: the signed list of keys a host trusts, by role (FORMAT.md 4).

A trust root names each key's roles (``root`` signs trust roots, ``issuer``
signs bundles, ``approver`` co-signs risky bundles), how many distinct root
and issuer signatures an object needs, and how many distinct approvals each
risk level needs. Version N+1 is accepted only when signed by a threshold of
version N's root keys and of its own (FORMAT.md 4.3).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from kit import encoding
from kit.crypto.sign import ALGORITHM, PUB_LEN, SigningKey, fingerprint, key_id
from kit.errors import FormatError, UnauthenticatedError
from kit.formats.envelope import (
    MAX_SIGNATURES,
    Envelope,
    open_self_signed,
    seal_envelope,
    verify_envelope,
)

LABEL = "kit/trust-root/v1"
CAP = 16 * 1024
ROLES = ("root", "issuer", "approver", "revoker")
THRESHOLD_ROLES = ("root", "issuer", "revoker")
RISKS = ("low", "medium", "high")
MAX_KEYS = 32
LABEL_RE = encoding.NAME_RE


class TrustedKey(NamedTuple):
    key_id: str
    public_key: bytes
    roles: frozenset[str]
    label: str = ""


class TrustRoot(NamedTuple):
    name: str
    version: int
    created_at: int
    expires_at: int
    keys: tuple[TrustedKey, ...]
    envelope: Envelope
    # Read-only defaults: one mapping is shared by every root that takes it.
    thresholds: Mapping[str, int] = MappingProxyType(
        {"root": 1, "issuer": 1, "revoker": 1}
    )
    approvals: Mapping[str, int] = MappingProxyType({"low": 0, "medium": 0, "high": 0})

    def keys_for(self, role: str) -> dict[str, bytes]:
        return {k.key_id: k.public_key for k in self.keys if role in k.roles}

    def label_of(self, kid: str) -> str:
        """A key as people compare it: its label and a short fingerprint."""
        for k in self.keys:
            if k.key_id == kid:
                return f"{k.label or 'unlabelled'} ({kid[:12]})"
        return f"unknown key ({kid[:12]})"

    @property
    def digest(self) -> bytes:
        return self.envelope.digest


class KeySpec(NamedTuple):
    """One key of a trust root being made."""

    public_key: bytes
    roles: tuple[str, ...]
    label: str


def make_trust_root(
    name: str,
    key: SigningKey,
    *,
    version: int,
    created_at: int,
    expires_at: int,
    label: str = "signer",
) -> bytes:
    """Version 1: one key holding every role but approver, self-signed."""
    return sign_trust_root(
        name,
        [KeySpec(key.public_key, ("root", "issuer", "revoker"), label)],
        [key],
        version=version,
        created_at=created_at,
        expires_at=expires_at,
    )


def sign_trust_root(
    name: str,
    keys: list[KeySpec],
    signers: list[SigningKey],
    *,
    version: int,
    created_at: int,
    expires_at: int,
    thresholds: dict[str, int] | None = None,
    approvals: dict[str, int] | None = None,
) -> bytes:
    body = encoding.encode(
        {
            "name": name,
            "version": version,
            "created_at": created_at,
            "expires_at": expires_at,
            "keys": [
                {
                    "algorithm": ALGORITHM,
                    "key_id": key_id(k.public_key),
                    "public_key": k.public_key,
                    "roles": list(k.roles),
                    "label": k.label,
                }
                for k in keys
            ],
            "thresholds": thresholds or {"root": 1, "issuer": 1, "revoker": 1},
            "approvals": approvals or {"low": 0, "medium": 0, "high": 0},
        }
    )
    return seal_envelope(LABEL, body, signers)


def load_trust_root(data: bytes) -> TrustRoot:
    """Parse a trust root and check it is signed by a threshold of the root
    keys it lists itself. (That it descends from the pinned root is checked
    by :func:`check_successor`.)

    Raises FormatError or UnauthenticatedError.
    """
    env, body = open_self_signed(
        data,
        label=LABEL,
        cap=CAP,
        what="trust root",
        signing_keys=_root_keys,
        threshold=_root_threshold,
    )
    f = encoding.Fields(body, "trust root")
    name = f.text("name", encoding.NAME_RE)
    version = f.integer("version", 1, 1 << 31)
    created_at = f.time("created_at")
    expires_at = f.time("expires_at")
    keys = tuple(_key(item, i) for i, item in enumerate(f.array("keys", MAX_KEYS)))
    thresholds = _counts(f.raw("thresholds"), THRESHOLD_ROLES, "thresholds", 1)
    approvals = _counts(f.raw("approvals"), RISKS, "approvals", 0)
    f.done()
    if len({k.key_id for k in keys}) != len(keys):
        raise FormatError("trust root lists a key twice")
    if expires_at <= created_at:
        raise FormatError("trust root expires before it was created")
    for role in THRESHOLD_ROLES:
        have = sum(1 for k in keys if role in k.roles)
        if role == "revoker" and have == 0:
            continue  # a root may name no revoker: it then accepts no list
        if thresholds[role] > have:
            raise FormatError(
                f"trust root threshold for {role} is {thresholds[role]} but it "
                f"lists {have} {role} key(s)"
            )
    if thresholds["issuer"] + max(approvals.values()) > MAX_SIGNATURES:
        raise FormatError(
            f"trust root asks for {thresholds['issuer']} issuer signature(s) and up to "
            f"{max(approvals.values())} approval(s); a bundle carries at most "
            f"{MAX_SIGNATURES} signatures"
        )
    approvers = sum(1 for k in keys if "approver" in k.roles)
    for risk in RISKS:
        if approvals[risk] > approvers:
            raise FormatError(
                f"trust root needs {approvals[risk]} approval(s) for {risk} risk "
                f"but lists {approvers} approver key(s)"
            )
    return TrustRoot(
        name, version, created_at, expires_at, keys, env, thresholds, approvals
    )


def check_successor(current: TrustRoot, candidate: TrustRoot) -> None:
    """A new root must be the next version, signed by a threshold of the
    current root keys as well as its own (a stolen new key alone, or an old
    key alone, is not enough). Raises FormatError or UnauthenticatedError."""
    if candidate.version != current.version + 1:
        raise FormatError(
            f"trust root v{candidate.version} does not follow v{current.version} "
            "(versions step by one; rollbacks and skips are refused)"
        )
    if candidate.name != current.name:
        raise FormatError(
            f"trust root v{candidate.version} is for {candidate.name!r}, not "
            f"{current.name!r}"
        )
    try:
        verify_envelope(
            candidate.envelope,
            current.keys_for("root"),
            threshold=current.thresholds["root"],
            what="trust root",
        )
    except UnauthenticatedError:
        needed = current.thresholds["root"]
        raise UnauthenticatedError(
            f"trust root v{candidate.version} (needs {needed} root signature(s) "
            f"of v{current.version})"
        ) from None
    needed = approver_quorum(current, candidate)
    if needed:
        try:
            verify_envelope(
                candidate.envelope,
                current.keys_for("approver"),
                threshold=needed,
                what="trust root",
            )
        except UnauthenticatedError:
            raise UnauthenticatedError(
                f"trust root v{candidate.version} (it changes the approvers or the "
                f"approvals needed, so {needed} approver(s) of v{current.version} "
                "must co-sign it)"
            ) from None


def approver_quorum(current: TrustRoot, candidate: TrustRoot) -> int:
    """How many of the current approvers must co-sign ``candidate``: none when
    it leaves approvers and approval counts alone, or when there are no
    approvers yet; otherwise the largest approval count in force (at least 1,
    at most the number of approvers). So a signer alone cannot add approvers
    of its own or lower the counts once approvers exist."""
    approvers = current.keys_for("approver")
    same = (
        set(approvers) == set(candidate.keys_for("approver"))
        and current.approvals == candidate.approvals
    )
    if same or not approvers:
        return 0
    return min(len(approvers), max(1, *current.approvals.values()))


def successors(current: TrustRoot, found: list[TrustRoot]) -> list[TrustRoot]:
    """The roots in ``found`` that extend ``current``, in order, each checked
    against its predecessor. Older versions are ignored; two different roots
    for one version, a different root at the current version, or a gap
    refuse the lot (FORMAT.md 4.3)."""
    by_version: dict[int, TrustRoot] = {}
    for r in found:
        other = by_version.get(r.version)
        if other is not None and other.digest != r.digest:
            raise FormatError(f"two different trust roots claim version {r.version}")
        by_version[r.version] = r
    mine = by_version.get(current.version)
    if mine is not None and mine.digest != current.digest:
        raise FormatError(
            f"the media's trust root v{mine.version} (fingerprint "
            f"{fingerprint(mine.digest)}) is not the pinned one "
            f"({fingerprint(current.digest)})"
        )
    chain: list[TrustRoot] = []
    for version in sorted(v for v in by_version if v > current.version):
        new = by_version[version]
        check_successor(chain[-1] if chain else current, new)
        chain.append(new)
    return chain


def _key(item: Any, i: int) -> TrustedKey:
    k = encoding.Fields(item, f"trust root key {i}")
    k.choice("algorithm", (ALGORITHM,))
    kid = k.text("key_id", encoding.HEX32_RE)
    pub = k.binary("public_key", PUB_LEN)
    roles = k.array("roles", len(ROLES))
    label = k.text("label", LABEL_RE)
    k.done()
    if kid != key_id(pub):
        raise FormatError(f"trust root key {i}: key_id does not match public_key")
    if not roles or any(r not in ROLES for r in roles) or len(set(roles)) != len(roles):
        raise FormatError(
            f"trust root key {i}: roles must be distinct, from " + ", ".join(ROLES)
        )
    if "approver" in roles and len(roles) > 1:
        raise FormatError(
            f"trust root key {i}: an approver key holds no other role, so an "
            "issuer cannot approve its own bundles"
        )
    return TrustedKey(kid, pub, frozenset(roles), label)


def _counts(value: Any, names: tuple[str, ...], what: str, low: int) -> dict[str, int]:
    f = encoding.Fields(value, f"trust root {what}")
    counts = {n: f.integer(n, low, MAX_KEYS) for n in names}
    f.done()
    return counts


def _root_keys(body: Any) -> dict[str, bytes]:
    """The root-role keys a trust root lists, read just far enough to check its
    self-signature; key ids are computed, not taken from the body."""
    keys = body.get("keys") if isinstance(body, dict) else None
    if not isinstance(keys, list):
        raise FormatError("trust root lists no keys")
    found = {}
    for item in keys[:MAX_KEYS]:
        if not isinstance(item, dict):
            continue
        pub, roles = item.get("public_key"), item.get("roles")
        if (
            isinstance(pub, bytes)
            and len(pub) == PUB_LEN
            and isinstance(roles, list)
            and "root" in roles
        ):
            found[key_id(pub)] = pub
    return found


def _root_threshold(body: Any) -> int:
    thresholds = body.get("thresholds") if isinstance(body, dict) else None
    value = thresholds.get("root") if isinstance(thresholds, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FormatError("trust root has no root threshold")
    return value
