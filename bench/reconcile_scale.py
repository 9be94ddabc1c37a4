"""Benchmark (not a test): reconcile N receipts from H hosts against N
issuances in an auditor home, and report receipts per second and the peak
memory of the reconciling process.

The data set is made with the library directly: a trust root, ledger
exports signed by its issuer key, and per host a hash-chained journal of
release receipts (one per issuance) signed by the host's receipt key, cut
into batches with signed checkpoints. The reconciliation itself runs as the
real ``kit`` command in a child process, so its peak RSS is its own.

On a shared machine the seconds say little alone, so the same run also
times a baseline in this process: reading every batch, hashing each receipt
with SHA-256 and decoding its envelope and body with msgpack's C decoder,
the least any reader must do, once before the reconciliation and once
after. ``cpu_ratio_to_baseline`` is the reconciling process's CPU time over
the mean of the two (the ledger, the store and the verdicts included).

    python bench/reconcile_scale.py --receipts 1000000 --hosts 1000 --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack

from kit.crypto.sign import SigningKey
from kit.formats import ledger_export as lx
from kit.formats import receipt as rfmt
from kit.formats.trustroot import make_trust_root
from kit.media import write_media
from kit.storage.audit import AuditStore

KIT = Path(sys.executable).parent / "kit"
BATCH = 20_000  # receipts per batch file


def generate(folder: Path, receipts: int, hosts: int, now: int) -> Path:
    """Write the data set under ``folder``; return the trust root file."""
    issuer = SigningKey.generate()
    root_file = folder / "trust-root.kit"
    root_file.write_bytes(
        make_trust_root("bench", issuer, version=1, created_at=now - 86400,
                        expires_at=now + 86400 * 365)
    )  # fmt: skip
    host_keys = [SigningKey.generate() for _ in range(hosts)]
    names = [f"host-{i:05d}" for i in range(hosts)]
    start = now - 86400
    # issuance i goes to host i % hosts
    ids = [secrets.token_hex(16) for _ in range(receipts)]
    _ledger(folder / "ledger", issuer, names, host_keys, ids, start)
    (folder / "receipts").mkdir()
    for h, (name, key) in enumerate(zip(names, host_keys, strict=True)):
        _journal(folder / "receipts", name, key, ids[h::hosts], start)
    return root_file


def _ledger(
    out: Path,
    issuer: SigningKey,
    names: list[str],
    keys: list[SigningKey],
    ids: list[str],
    start: int,
) -> None:
    hosts = tuple(
        lx.ExportedHost(n, "prod", k.public_key, secrets.token_hex(16), start)
        for n, k in zip(names, keys, strict=True)
    )
    prev, seq = lx.GENESIS, 0
    for lo in range(0, max(len(ids), 1), lx.MAX_ITEMS):
        chunk = ids[lo : lo + lx.MAX_ITEMS]
        seq += 1
        export = lx.LedgerExport(
            signer="bench", seq=seq, prev=prev, time=start, first_lseq=lo + 1,
            last_lseq=lo + len(chunk), hosts=hosts if seq == 1 else (),
            issuances=tuple(
                lx.ExportedIssuance(
                    lseq=lo + i + 1, bundle_id=b, host=names[(lo + i) % len(names)],
                    env="prod", task="bench-task", identity="", owner="ops",
                    issuer=issuer.key_id, issued_at=start, not_before=start,
                    expires_at=start + 2 * 86400, max_uses=1,
                    claims_digest=hashlib.sha256(b.encode()).digest(),
                    bundle_digest=hashlib.sha256(b.encode() + b"b").digest(),
                )
                for i, b in enumerate(chunk)
            ),
            revocations=(),
        )  # fmt: skip
        data = lx.sign_export(export, issuer)
        write_media(out, {f"ledger-export-{seq:010d}.kit": data})
        prev = hashlib.sha256(data).digest()


def _journal(
    out: Path, host: str, key: SigningKey, bundle_ids: list[str], start: int
) -> None:
    prev, raws, first = rfmt.GENESIS, [], 1
    for seq, bundle_id in enumerate(bundle_ids, 1):
        r = rfmt.Receipt(
            host=host, seq=seq, prev=prev, time=start + 60 + seq, event="release",
            action="run", bundle_id=bundle_id, bundle_digest=bytes(32),
            task="bench-task", command=("true",), reason="", detail="", use=1,
            exit_status=0, duration_ms=0, delivery="fd",
        )  # fmt: skip
        raw = rfmt.sign_receipt(r, key)
        prev = hashlib.sha256(raw).digest()
        raws.append(raw)
        if len(raws) == BATCH or seq == len(bundle_ids):
            cp = rfmt.sign_checkpoint(host, first, seq, prev, start + 61 + seq, key)
            name = f"receipts-{host}-{first:010d}-{seq:010d}.kit"
            write_media(out / host, {name: rfmt.encode_batch(raws, cp)})
            raws, first = [], seq + 1


def baseline(receipts: Path) -> tuple[int, float]:
    """Receipts read and the CPU seconds taken to read every batch file,
    SHA-256 each receipt and decode its envelope and body: the floor."""
    n = 0
    t0 = time.process_time()
    for path in sorted(receipts.rglob("*.kit")):
        raws, _ = rfmt.split_batch(path.read_bytes())
        for raw in raws:
            hashlib.sha256(raw).digest()
            msgpack.unpackb(msgpack.unpackb(raw)[1])
        n += len(raws)
    return n, time.process_time() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--receipts", type=int, default=100_000)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument(
        "--keep",
        type=Path,
        help="build in this folder and keep it; a data set already there is "
        "used again (with a new auditor home)",
    )
    args = ap.parse_args()
    if args.receipts < 1 or not 1 <= args.hosts <= args.receipts:
        ap.error("need --receipts >= --hosts >= 1")
    now = int(time.time())
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        root_file = folder / "trust-root.kit"
        if not root_file.exists():
            generate(folder, args.receipts, args.hosts, now)
        generated = time.perf_counter() - t0
        home = folder / "audit"
        shutil.rmtree(home, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
        subprocess.run(
            [str(KIT), "audit", "init", "--trust", str(root_file), "--home", str(home)],
            check=True, env=env, capture_output=True,
        )  # fmt: skip
        inputs = [folder / "ledger", *sorted((folder / "receipts").iterdir())]
        base_n, base_before = baseline(folder / "receipts")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t1 = time.perf_counter()
        done = subprocess.run(
            [str(KIT), "reconcile", "--home", str(home), *map(str, inputs)],
            env=env, capture_output=True, check=False,
        )  # fmt: skip
        seconds = time.perf_counter() - t1
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak = usage.ru_maxrss / 1024
        # CPU time of the reconciling process: steadier than the wall clock
        # on a shared machine.
        cpu = (usage.ru_utime + usage.ru_stime) - (before.ru_utime + before.ru_stime)
        if done.returncode not in (0, 1):
            sys.stderr.write(done.stderr.decode())
            return 1
        _, base_after = baseline(folder / "receipts")
        base_cpu = (base_before + base_after) / 2  # the load may change
        store = AuditStore(home / "audit.db")  # the results, read afterwards
        try:
            counts = store.counts()
            statuses = store.status_counts()
            exceptions = {c: n for c, _, n in store.exception_counts()}
        finally:
            store.close()
    result = {
        "receipts": counts["receipts"],
        "hosts": counts["hosts"],
        "issuances": counts["issuances"],
        "generate_seconds": round(generated, 2),
        "reconcile_seconds": round(seconds, 2),
        "receipts_per_second": round(counts["receipts"] / seconds, 1),
        "reconcile_cpu_seconds": round(cpu, 2),
        "peak_rss_mib": round(peak, 1),
        "baseline_receipts": base_n,
        "baseline_cpu_seconds": round(base_cpu, 2),
        "baseline_cpu_seconds_before_after": [
            round(base_before, 2),
            round(base_after, 2),
        ],
        "baseline_receipts_per_second": round(base_n / max(base_cpu, 1e-9), 1),
        "cpu_ratio_to_baseline": round(cpu / max(base_cpu, 1e-9), 2),
        "exceptions": exceptions,
        "statuses": statuses,
        "exit_status": done.returncode,
        "python": sys.version.split()[0],
    }
    text = json.dumps(result, indent=2, sort_keys=True)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
