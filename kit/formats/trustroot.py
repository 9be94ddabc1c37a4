"""Trust root: the signed list of keys a host trusts, by role (FORMAT.md 4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kit import encoding
from kit.crypto.sign import ALGORITHM, PUB_LEN, SigningKey, key_id
from kit.errors import FormatError
from kit.formats.envelope import Envelope, open_self_signed, seal_envelope

LABEL = "kit/trust-root/v1"
CAP = 16 * 1024
ROLES = ("root", "issuer")
MAX_KEYS = 32


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    public_key: bytes
    roles: frozenset[str]


@dataclass(frozen=True)
class TrustRoot:
    name: str
    version: int
    created_at: int
    expires_at: int
    keys: tuple[TrustedKey, ...]
    envelope: Envelope

    def keys_for(self, role: str) -> dict[str, bytes]:
        return {k.key_id: k.public_key for k in self.keys if role in k.roles}

    @property
    def digest(self) -> bytes:
        return self.envelope.digest


def make_trust_root(
    name: str, key: SigningKey, *, version: int, created_at: int, expires_at: int
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
                    "key_id": key.key_id,
                    "public_key": key.public_key,
                    "roles": list(ROLES),
                }
            ],
        }
    )
    return seal_envelope(LABEL, body, [key])


def load_trust_root(data: bytes) -> TrustRoot:
    """Parse and check the self-signature by the root key(s) it lists.

    Raises FormatError or UnauthenticatedError.
    """
    env, body = open_self_signed(
        data, label=LABEL, cap=CAP, what="trust root", signing_keys=_root_keys
    )
    f = encoding.Fields(body, "trust root")
    name = f.text("name", encoding.NAME_RE)
    version = f.integer("version", 1, 1 << 31)
    created_at = f.time("created_at")
    expires_at = f.time("expires_at")
    keys: list[TrustedKey] = []
    for i, item in enumerate(f.array("keys", MAX_KEYS)):
        k = encoding.Fields(item, f"trust root key {i}")
        k.choice("algorithm", (ALGORITHM,))
        kid = k.text("key_id", encoding.HEX32_RE)
        pub = k.binary("public_key", PUB_LEN)
        roles = k.array("roles", len(ROLES))
        k.done()
        if kid != key_id(pub):
            raise FormatError(f"trust root key {i}: key_id does not match public_key")
        if (
            not roles
            or any(r not in ROLES for r in roles)
            or len(set(roles)) != len(roles)
        ):
            raise FormatError(
                f"trust root key {i}: roles must be distinct, from " + ", ".join(ROLES)
            )
        keys.append(TrustedKey(kid, pub, frozenset(roles)))
    f.done()
    if len({k.key_id for k in keys}) != len(keys):
        raise FormatError("trust root lists a key twice")
    if expires_at <= created_at:
        raise FormatError("trust root expires before it was created")
    return TrustRoot(name, version, created_at, expires_at, tuple(keys), env)


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
