"""Receipts, checkpoints and receipt batches (FORMAT.md 7 and 8).

Every host decision is a receipt signed by the host's receipt key, numbered
from 1 and linked to the previous receipt by ``prev`` = SHA-256 of the
previous receipt's envelope bytes (32 zero bytes for the first).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from kit import encoding
from kit.crypto.sign import SigningKey
from kit.errors import FormatError
from kit.formats.bundle import MAX_ARGS, MAX_DATASETS
from kit.formats.envelope import (
    Envelope,
    parse_envelope,
    parse_envelope_uniform,
    seal_envelope,
    verify_envelope,
)

LABEL = "kit/receipt/v1"
CHECKPOINT_LABEL = "kit/checkpoint/v1"
BATCH_LABEL = "kit/receipt-batch/v1"
CAP = 8 * 1024
BATCH_CAP = 64 * 1024 * 1024
MAX_BATCH = 100_000
GENESIS = bytes(32)
EVENTS = ("release", "deny", "exit")
ACTIONS = ("run", "verify", "import")
MAX_SEQ = 1 << 62
# A receipt records what was asked, which may be any argv: empty arguments
# are allowed here (unlike in bundle claims); longer ones are cut by the host.
RECEIPT_ARG_RE = re.compile(r"[^\x00]{0,256}")
MAX_TASK = 63
RECEIPT_NAME_RE = re.compile(r"[^\x00]{1,63}")
# A reason code (FORMAT.md 5.5): never free text, so it can be printed as is.
REASON_RE = re.compile(r"[a-z][a-z0-9-]{0,63}")


class Receipt(NamedTuple):
    host: str
    seq: int
    prev: bytes
    time: int
    event: str
    action: str
    bundle_id: str  # "" when the bundle could not be authenticated
    bundle_digest: bytes
    task: str
    command: tuple[str, ...]
    reason: str  # stable reason code, "" unless event == "deny"
    detail: str
    use: int  # 1-based use number on release, else 0
    exit_status: int
    duration_ms: int
    datasets: tuple[str, ...] = ()  # the datasets the task declared it touches
    delivery: str = ""  # how the secret was handed over, on release
    approvals: tuple[str, ...] = ()  # approver key ids counted, on release

    def to_map(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "seq": self.seq,
            "prev": self.prev,
            "time": self.time,
            "event": self.event,
            "action": self.action,
            "bundle_id": self.bundle_id,
            "bundle_digest": self.bundle_digest,
            "task": self.task,
            "command": list(self.command),
            "reason": self.reason,
            "detail": self.detail,
            "use": self.use,
            "exit_status": self.exit_status,
            "duration_ms": self.duration_ms,
            "datasets": list(self.datasets),
            "delivery": self.delivery,
            "approvals": list(self.approvals),
        }


class SignedReceipt(NamedTuple):
    receipt: Receipt
    envelope: Envelope

    @property
    def digest(self) -> bytes:
        return self.envelope.digest


class Checkpoint(NamedTuple):
    host: str
    first_seq: int
    seq: int
    head: bytes
    time: int
    envelope: Envelope


def sign_receipt(r: Receipt, key: SigningKey) -> bytes:
    return seal_envelope(LABEL, encoding.encode(r.to_map()), [key])


def open_receipt(data: bytes, keys: Mapping[str, bytes]) -> SignedReceipt:
    """Authenticate a receipt against ``keys`` (key id -> Ed25519 public key),
    then decode it (FORMAT.md 7.4).

    Before the signature is checked every flaw gives one uniform FormatError;
    after it, errors name the field.
    """
    env = parse_envelope_uniform(data, label=LABEL, cap=CAP, what="receipt")
    verify_envelope(env, keys, threshold=1, what="receipt")
    return SignedReceipt(_decode_receipt(env), env)


def parse_receipt(data: bytes) -> SignedReceipt:
    """Decode without checking the signature: only for receipts kit itself
    wrote and holds (the host's own journal). Untrusted input goes through
    :func:`open_receipt`."""
    env = parse_envelope(data, label=LABEL, cap=CAP, what="receipt")
    return SignedReceipt(_decode_receipt(env), env)


def _decode_receipt(env: Envelope) -> Receipt:
    f = encoding.Fields(
        encoding.decode(env.body, cap=CAP, what="receipt body"), "receipt"
    )
    command = f.array("command", MAX_ARGS)
    bundle_id = f.text("bundle_id", max_len=32)
    if bundle_id:
        encoding.check_text(bundle_id, "receipt bundle_id", encoding.HEX32_RE)
    task = f.text("task", max_len=MAX_TASK)
    r = Receipt(
        host=f.text("host", encoding.NAME_RE),
        seq=f.integer("seq", 1, MAX_SEQ),
        prev=f.binary("prev", 32),
        time=f.time("time"),
        event=f.choice("event", EVENTS),
        action=f.choice("action", ACTIONS),
        bundle_id=bundle_id,
        bundle_digest=f.binary("bundle_digest", 32),
        task=task,
        command=tuple(
            encoding.check_text(a, "receipt command", RECEIPT_ARG_RE) for a in command
        ),
        reason=f.text("reason", max_len=64),
        detail=f.text("detail", max_len=512),
        use=f.integer("use", 0, 1000),
        exit_status=f.integer("exit_status", -255, 255),
        duration_ms=f.integer("duration_ms", 0, 1 << 40),
        datasets=tuple(
            encoding.check_text(d, "receipt datasets", RECEIPT_NAME_RE)
            for d in f.array("datasets", MAX_DATASETS)
        ),
        delivery=f.text("delivery", max_len=16),
        approvals=tuple(
            encoding.check_text(k, "receipt approvals", encoding.HEX32_RE)
            for k in f.array("approvals", 8)
        ),
    )
    f.done()
    if (r.event == "deny") != bool(r.reason):
        raise FormatError("receipt: a reason is required on denials and only there")
    if r.reason:
        encoding.check_text(r.reason, "receipt reason", REASON_RE)
    return r


def sign_checkpoint(
    host: str, first_seq: int, seq: int, head: bytes, time: int, key: SigningKey
) -> bytes:
    body = encoding.encode(
        {"host": host, "first_seq": first_seq, "seq": seq, "head": head, "time": time}
    )
    return seal_envelope(CHECKPOINT_LABEL, body, [key])


def open_checkpoint(
    data: bytes, keys: Mapping[str, bytes]
) -> tuple[Checkpoint, frozenset[str]]:
    """Authenticate a checkpoint against ``keys``, then decode it; also return
    the ids of the keys whose signatures verified."""
    env = parse_envelope_uniform(
        data, label=CHECKPOINT_LABEL, cap=CAP, what="checkpoint"
    )
    signers = verify_envelope(env, keys, threshold=1, what="checkpoint")
    return _decode_checkpoint(env), signers


def parse_checkpoint(data: bytes) -> Checkpoint:
    """Decode without checking the signature (kit's own data only)."""
    env = parse_envelope(data, label=CHECKPOINT_LABEL, cap=CAP, what="checkpoint")
    return _decode_checkpoint(env)


def _decode_checkpoint(env: Envelope) -> Checkpoint:
    f = encoding.Fields(
        encoding.decode(env.body, cap=CAP, what="checkpoint body"), "checkpoint"
    )
    cp = Checkpoint(
        host=f.text("host", encoding.NAME_RE),
        first_seq=f.integer("first_seq", 1, MAX_SEQ),
        seq=f.integer("seq", 1, MAX_SEQ),
        head=f.binary("head", 32),
        time=f.time("time"),
        envelope=env,
    )
    f.done()
    if cp.first_seq > cp.seq:
        raise FormatError("checkpoint: first_seq is after seq")
    return cp


def encode_batch(receipts: list[bytes], checkpoint: bytes) -> bytes:
    return encoding.encode([BATCH_LABEL, receipts, checkpoint])


def parse_batch(data: bytes) -> tuple[list[SignedReceipt], Checkpoint]:
    """Decode a whole batch without checking signatures (kit's own data only)."""
    receipts, cp = split_batch(data)
    return [parse_receipt(i) for i in receipts], parse_checkpoint(cp)


def split_batch(data: bytes) -> tuple[list[bytes], bytes]:
    """The unsigned container: the receipts' and the checkpoint's raw bytes."""
    obj = encoding.decode(data, cap=BATCH_CAP, what="receipt batch")
    if not isinstance(obj, list) or len(obj) != 3 or obj[0] != BATCH_LABEL:
        raise FormatError(
            f"receipt batch: expected [{BATCH_LABEL!r}, receipts, checkpoint]"
        )
    _, items, cp = obj
    if (
        not isinstance(items, list)
        or len(items) > MAX_BATCH
        or not all(isinstance(i, bytes) for i in items)
    ):
        raise FormatError("receipt batch: receipts must be an array of byte strings")
    if not isinstance(cp, bytes):
        raise FormatError("receipt batch: checkpoint must be bytes")
    return items, cp


def receipt_hash(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()
