"""Private keys at rest: Argon2id passphrase KDF + XSalsa20-Poly1305 (libsodium
secretbox), both from pynacl. File layout in docs/FORMAT.md section 9."""

from __future__ import annotations

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.utils

from kit import encoding
from kit.errors import HomeError

LABEL = "kit/sealed-key/v1"
CAP = 4096

# Named cost profiles; the chosen numbers are stored in the file.
PROFILES = {
    "interactive": (argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE),
    "moderate": (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE),
    "sensitive": (argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE),
}


def _derive(passphrase: bytes, salt: bytes, ops: int, mem: int) -> bytes:
    return argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=ops, memlimit=mem
    )


def seal_key(secret: bytes, passphrase: bytes, profile: str) -> bytes:
    if not passphrase:
        raise HomeError("the passphrase is empty")
    ops, mem = PROFILES[profile]
    salt = nacl.utils.random(argon2id.SALTBYTES)
    box = nacl.secret.SecretBox(_derive(passphrase, salt, ops, mem))
    return encoding.encode(
        {
            "label": LABEL,
            "kdf": "argon2id",
            "ops": ops,
            "mem": mem,
            "salt": salt,
            "box": bytes(box.encrypt(secret)),
        }
    )


def open_key(data: bytes, passphrase: bytes) -> bytes:
    f = encoding.Fields(encoding.decode(data, cap=CAP, what="sealed key"), "sealed key")
    f.choice("label", (LABEL,))
    f.choice("kdf", ("argon2id",))
    # Bounded by the strongest profile: a doctored key file must not be able to
    # make the KDF run for hours or take more than 1 GiB.
    ops = f.integer("ops", argon2id.OPSLIMIT_MIN, argon2id.OPSLIMIT_SENSITIVE)
    mem = f.integer("mem", argon2id.MEMLIMIT_MIN, argon2id.MEMLIMIT_SENSITIVE)
    salt = f.binary("salt", argon2id.SALTBYTES)
    boxed = f.binary("box", max_len=256)
    f.done()
    box = nacl.secret.SecretBox(_derive(passphrase, salt, ops, mem))
    try:
        return bytes(box.decrypt(boxed))
    except nacl.exceptions.CryptoError:
        raise HomeError("the passphrase does not open the signing key") from None
