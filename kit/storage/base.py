"""Storage interfaces and the records they hold."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol


class HostRecord(NamedTuple):
    name: str
    env: str
    hpke_public: bytes
    receipt_public: bytes
    enrolled_at: int
    request_digest: bytes


class IssuanceRecord(NamedTuple):
    """What the ledger keeps of a bundle: claims and digests, never the secret."""

    bundle_id: str
    host: str
    env: str
    task: str
    owner: str
    issuer: str
    commands: tuple[tuple[str, ...], ...]
    issued_at: int
    not_before: int
    expires_at: int
    max_uses: int
    claims: bytes
    bundle_digest: bytes
    secret_digest: bytes  # HMAC-SHA256 under a key derived from the issuer key
    identity: str = ""  # "" for an ad-hoc bundle
    risk: str = "low"
    datasets: tuple[str, ...] = ()


class Ledger(Protocol):
    def add_host(self, host: HostRecord) -> None: ...
    def get_host(self, name: str) -> HostRecord | None: ...
    def hosts(self) -> list[HostRecord]: ...
    def record_bundle(self, rec: IssuanceRecord) -> None: ...
    def get_bundle(self, bundle_id: str) -> IssuanceRecord | None: ...
    def bundles(self) -> list[IssuanceRecord]: ...
    def record_usage(self, bundle_id: str, uses: int, last_use: int) -> None:
        """Remember what reconciliation found (never lowers either value)."""
        ...

    def usage(self) -> dict[str, tuple[int, int]]:
        """bundle id -> (uses seen, time of the last use seen)."""
        ...

    def add_revocation(self, kind: str, value: str, now: int) -> bool: ...
    def revocations(self) -> list[tuple[str, str]]: ...
    def next_counter(self, name: str) -> int: ...
    def record_anchor(self, host: str, seq: int, head: bytes) -> None: ...
    def anchor(self, host: str) -> tuple[int, bytes] | None: ...
    def close(self) -> None: ...


class UseRecord(NamedTuple):
    use: int
    time: int
    seq: int


# Builds a signed receipt from (seq, prev hash, use number): called inside the
# storage transaction so that numbering, linking and use counting are atomic.
ReceiptBuilder = Callable[[int, bytes, int], bytes]


class HostState(Protocol):
    def release(
        self,
        bundle_id: str,
        max_uses: int,
        now: int,
        build: ReceiptBuilder,
        floor: int,
    ) -> tuple[int, bytes] | list[UseRecord]:
        """Atomically count one use and durably append the release receipt,
        raising the clock floor to at least ``floor`` in the same transaction.

        Returns (use number, receipt bytes), or, when every use is spent, the
        earlier uses and nothing written.
        """
        ...

    def append(self, build: ReceiptBuilder, floor: int) -> bytes:
        """Durably append one receipt (use number 0), raising the floor."""
        ...

    def check_journal(self) -> None:
        """Raise JournalError if the journal lost entries or is damaged."""
        ...

    def floor(self) -> int: ...
    def uses(self, bundle_id: str) -> list[UseRecord]: ...
    def hash_at(self, seq: int) -> bytes | None: ...
    def receipts_after(self, seq: int) -> list[tuple[int, bytes]]: ...
    def head(self) -> tuple[int, bytes]: ...
    def get(self, key: str) -> bytes | None: ...
    def put(self, key: str, value: bytes) -> None: ...
    def close(self) -> None: ...
