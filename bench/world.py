"""A throwaway signer, one enrolled host and bundles for the benchmarks.

Built through the library (the same calls the CLI makes), in a temporary
folder, with the interactive Argon2id profile so set-up stays quick.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from kit.host.host import init_host
from kit.signer.signer import ROOT_FILE, IssueRequest, Signer, init_signer

PASSPHRASE = b"bench passphrase, not a secret"
HOST, ENV, TASK = "bench-01", "prod", "nightly-export"
SECRET_64 = b"s" * 64  # printable: env delivery cannot carry NUL


@dataclass
class World:
    root: Path
    signer_home: Path
    host_home: Path
    signer: Signer

    def request(self, *, max_uses: int = 1, ttl: int = 3600) -> IssueRequest:
        """Two commands, as the size figure asks."""
        return IssueRequest(
            host=HOST,
            env=ENV,
            task=TASK,
            commands=(("true",), ("python3", "job.py")),
            ttl=ttl,
            max_uses=max_uses,
            secret_name="KIT_SECRET",  # noqa: S106 - a variable name
            owner="ops",
        )

    def issue(self, *, max_uses: int = 1, secret: bytes = SECRET_64) -> bytes:
        data, _ = self.signer.issue(
            self.request(max_uses=max_uses), secret, int(time.time())
        )
        return data

    def write_bundle(self, name: str, *, max_uses: int = 1) -> Path:
        path = self.root / name
        path.write_bytes(self.issue(max_uses=max_uses))
        return path

    def close(self) -> None:
        self.signer.close()


def build(root: Path) -> World:
    now = int(time.time())
    signer_home, host_home = root / "signer", root / "host"
    init_signer(
        signer_home, "bench", PASSPHRASE, now=now - 60, kdf_profile="interactive"
    )
    root_bytes = (signer_home / ROOT_FILE).read_bytes()
    request, _ = init_host(host_home, HOST, ENV, root_bytes, now - 60)
    signer = Signer(signer_home)
    signer.unlock(PASSPHRASE)
    signer.enroll(request, now - 60)
    os.environ.pop("KIT_HOME", None)
    return World(root, signer_home, host_home, signer)


def random_secret() -> bytes:
    return secrets.token_bytes(64)
