"""Peers verifying an equivalent signed token: Ed25519 signature, an expiry,
an audience (the host) and a task, checked in-process.

Each ``make_*`` returns a zero-argument verify function over bytes made once,
or raises ImportError when the library is missing (the table says so).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

HOST, TASK = "bench-01", "nightly-export"


def _claims() -> dict[str, object]:
    now = int(time.time())
    return {
        "sub": "ops",
        "aud": HOST,
        "task": TASK,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "cmd": [["true"], ["python3", "job.py"]],
    }


def make_pyjwt() -> Callable[[], object]:
    import jwt

    key = Ed25519PrivateKey.generate()
    token = jwt.encode(_claims(), key, algorithm="EdDSA")
    pub = key.public_key()

    def verify() -> object:
        c = jwt.decode(
            token,
            pub,
            algorithms=["EdDSA"],
            audience=HOST,
            options={"require": ["exp", "aud", "nbf"]},
        )
        if c["task"] != TASK:
            raise ValueError("task")
        return c

    return verify


def make_pyseto() -> Callable[[], object]:
    from pyseto import Key, Paseto

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    priv = Key.new(version=4, purpose="public", key=pem)
    pub = Key.new(version=4, purpose="public", key=pub_pem)
    paseto = Paseto.new(exp=3600, include_iat=True)
    claims = {k: v for k, v in _claims().items() if k not in ("iat", "exp", "nbf")}
    token = paseto.encode(priv, claims, serializer=json)

    def verify() -> object:
        t = paseto.decode(pub, token, deserializer=json, aud=HOST)
        if t.payload["task"] != TASK:  # type: ignore[index]
            raise ValueError("task")
        return t

    return verify


def make_biscuit() -> Callable[[], object]:
    from biscuit_auth import AuthorizerBuilder, Biscuit, BiscuitBuilder, KeyPair

    kp = KeyPair()
    expires = datetime.now(UTC) + timedelta(hours=1)
    token = (
        BiscuitBuilder(
            "host({host}); task({task}); check if time($t), $t < {exp};",
            {"host": HOST, "task": TASK, "exp": expires},
        )
        .build(kp.private_key)
        .to_bytes()
    )
    pub = kp.public_key
    # The default 1 ms budget trips on a loaded machine; a policy this small
    # needs far less, so the limit only guards against noise here.
    limits = AuthorizerBuilder("").limits()
    limits.max_time = timedelta(seconds=1)

    def verify() -> object:
        b = Biscuit.from_bytes(token, pub)
        ab = AuthorizerBuilder(
            "time({now}); allow if host({host}), task({task});",
            {"now": datetime.now(UTC), "host": HOST, "task": TASK},
        )
        ab.set_limits(limits)
        return ab.build(b).authorize()

    return verify


PEERS: dict[str, tuple[str, Callable[[], Callable[[], object]]]] = {
    "PyJWT (EdDSA)": ("jwt", make_pyjwt),
    "pyseto (v4.public)": ("pyseto", make_pyseto),
    "biscuit-python (expiry check + one allow policy)": ("biscuit_auth", make_biscuit),
}
