"""The whole-process floor for ``kit verify``: a plain script with the same
crypto libraries doing the same work, no CLI framework and no kit import.

Reads the host's HPKE key, pinned trust root (signature checked), policy and
state database; checks the bundle's signature by an issuer key of the root,
decodes its claims and checks host, key, env, task, command, times and the
policy caps; opens the HPKE ciphertext; counts the uses spent. Exits 0 when
the bundle would be released, 1 otherwise.

    python bench/baseline_verify.py BUNDLE HOME TASK
"""

import hashlib
import sqlite3
import sys
import time
import tomllib

import msgpack
import nacl.signing
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


def opened(data, label, keys):
    got, body, sigs = msgpack.unpackb(data, raw=False)
    if got != label:
        sys.exit(1)
    for kid, sig in sigs:
        if kid in keys:
            nacl.signing.VerifyKey(keys[kid]).verify(label.encode() + b"\0" + body, sig)
            return msgpack.unpackb(body, raw=False)
    sys.exit(1)


def main():
    bundle_path, home, task = sys.argv[1], sys.argv[2], sys.argv[3]
    now = int(time.time())
    with open(f"{home}/hpke.key", "rb") as f:
        key = X25519PrivateKey.from_private_bytes(f.read())
    with open(f"{home}/trust-root.kit", "rb") as f:
        root_bytes = f.read()
    _, body, _ = msgpack.unpackb(root_bytes, raw=False)
    root_keys = {
        k["key_id"]: k["public_key"]
        for k in msgpack.unpackb(body, raw=False)["keys"]
        if "root" in k["roles"]
    }
    root = opened(root_bytes, "kit/trust-root/v1", root_keys)
    issuers = {
        k["key_id"]: k["public_key"] for k in root["keys"] if "issuer" in k["roles"]
    }
    with open(f"{home}/policy.toml", "rb") as f:
        policy = tomllib.load(f)
    db = sqlite3.connect(f"{home}/state.db")
    name, env = (
        db.execute("SELECT value FROM kv WHERE key = ?", (k,)).fetchone()[0].decode()
        for k in ("name", "env")
    )
    with open(bundle_path, "rb") as f:
        data = f.read()
    body = opened(data, "kit/bundle/v1", issuers)
    c = msgpack.unpackb(body["claims"], raw=False)
    host_key = hashlib.sha256(b"kit/key-id/v1\0" + key.public_key().public_bytes_raw())
    leeway = policy["leeway"]
    ok = (
        c["host"] == name
        and c["host_key"] == host_key.hexdigest()[:32]
        and c["env"] == env
        and env in policy["environments"]
        and c["task"] == task
        and c["issued_at"] <= now + leeway
        and c["expires_at"] - c["not_before"] <= policy["max_lifetime"]
        and c["max_uses"] <= policy["max_uses"]
        and c["not_before"] - leeway <= now <= c["expires_at"] + leeway
        and now <= root["expires_at"]
    )
    info = b"kit/bundle-seal/v1\0" + hashlib.sha256(body["claims"]).digest()
    SUITE.decrypt(body["sealed"], key, info=info)
    (spent,) = db.execute(
        "SELECT count(*) FROM uses WHERE bundle_id = ?", (c["bundle_id"],)
    ).fetchone()
    db.close()
    sys.exit(0 if ok and spent < c["max_uses"] else 1)


main()
