"""``make bench``: kit's costs against the physical floor and against peers.

Prints one table (each figure a median over repeats with min and max, and
its ratio to a baseline measured in the same run) and writes the same rows
as JSON. docs/BENCHMARKS.md explains each figure and records a run.

    python bench/run.py [--quick] [--json PATH] [--no-full] [--only FIGURE]...

--quick: few repeats and small sizes (a smoke run, numbers meaningless).
--no-full (or BENCH_FULL=0): skip the 1,000,000-receipt reconcile.
--only FIGURE: run only that figure (verify, process, run, issue, size,
reconcile); repeat it for several.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import inproc, peers, process, sizes  # noqa: E402
from bench.timing import (  # noqa: E402
    Row,
    Stat,
    fmt_stat,
    fmt_time,
    interleaved,
    processes,
)
from bench.world import build  # noqa: E402

RECONCILE = HERE / "reconcile_scale.py"
FIGURES = ("verify", "process", "run", "issue", "size", "reconcile")


def verdict(ratio: float, limit: float) -> str:
    return "met" if ratio <= limit else "MISSED"


def stat_json(**stats: Stat) -> dict[str, Any]:
    return {k: v.as_json() for k, v in stats.items()}


# -- figures --------------------------------------------------------------------


def fig_verify_open(world: Any, data: bytes, reps: int, inner: int) -> list[Row]:
    fns = inproc.verify_and_open(world, data)
    names = {k: f for k, f in fns.items()}
    for label, (_, make) in peers.PEERS.items():
        try:
            names[label] = make()
        except ImportError as exc:
            names[label] = exc  # type: ignore[assignment]
    ok = {k: f for k, f in names.items() if callable(f)}
    st = interleaved(ok, repeats=reps, inner=inner)
    kit, floor = st["kit"], st["floor"]
    rows = [
        Row(
            "verify + open one bundle in-process (decode, signature, claims, "
            "HPKE open)",
            fmt_stat(kit),
            f"Ed25519 verify (libsodium) + HPKE open: {fmt_stat(floor)}",
            kit.median / floor.median,
            "<= 1.3x floor",
            verdict(kit.median / floor.median, 1.3),
            {"stats": stat_json(kit=kit, floor=floor)},
        ),
        Row(
            "  the same without the HPKE open (what the peers do)",
            fmt_stat(st["kit-verify-only"]),
            f"Ed25519 verify (libsodium) + HPKE open: {fmt_time(floor.median)}",
            st["kit-verify-only"].median / floor.median,
            "",
            "report",
            {"stats": stat_json(kit_verify_only=st["kit-verify-only"])},
        ),
    ]
    only = st["kit-verify-only"]
    for label, (module, _) in peers.PEERS.items():
        f = names[label]
        if not callable(f):
            rows.append(
                Row(f"peer: {label}", "-", "kit", None, "", f"skipped: {f}", {})
            )
            continue
        p = st[label]
        # Peers verify a signed token and decrypt nothing, so the verdict
        # compares them with kit's verification alone (authenticate +
        # check_scope); the ratio to kit's verify *and open* is shown too.
        must_beat = label.startswith(("PyJWT", "pyseto"))
        rows.append(
            Row(
                f"peer: {label}, verify + expiry + audience",
                fmt_stat(p),
                f"kit verify only: {fmt_time(only.median)} "
                f"(verify + open: {fmt_time(kit.median)}, "
                f"ratio {p.median / kit.median:.2f}x)",
                p.median / only.median,
                "kit verify-only faster (ratio > 1)" if must_beat else "report",
                ("met" if p.median > only.median else "MISSED")
                if must_beat
                else "report",
                {
                    "stats": stat_json(peer=p),
                    "module": module,
                    "ratio_to_kit_verify_only": p.median / only.median,
                    "ratio_to_kit_verify_open": p.median / kit.median,
                },
            )
        )
    return rows


def fig_process(world: Any, data: bytes, reps: int, work: Path) -> list[Row]:
    bundle = world.root / "verify.kit"
    bundle.write_bytes(world.issue(max_uses=100))
    cmds: dict[str, Any] = dict(process.verify_cmds(bundle, world.host_home))
    refs: dict[str, str] = {}
    for name, made in (
        ("ssh-keygen -Y verify", process.ssh_keygen_cmd(work)),
        ("age -d", process.age_cmd(work)),
    ):
        if isinstance(made, str):
            refs[name] = made
        else:
            cmds[name] = made
    st = processes(cmds, repeats=reps)
    kit, floor = st["kit"], st["floor"]
    rows = [
        Row(
            "`kit verify BUNDLE`, whole process, cold",
            fmt_stat(kit),
            f"plain script, same libraries and checks: {fmt_stat(floor)}",
            kit.median / floor.median,
            "<= 1.3x",
            verdict(kit.median / floor.median, 1.3),
            {"stats": stat_json(kit=kit, floor=floor)},
        ),
        Row(
            "  the same through typer (the path before kit/cli/fast.py)",
            fmt_stat(st["typer"]),
            f"plain script: {fmt_time(floor.median)}",
            st["typer"].median / floor.median,
            "",
            "report",
            {"stats": stat_json(typer=st["typer"])},
        ),
        Row(
            "  the same with no bytecode cache (PYTHONDONTWRITEBYTECODE)",
            fmt_stat(st["nocache"]),
            f"plain script: {fmt_time(floor.median)}",
            st["nocache"].median / floor.median,
            "",
            "report",
            {"stats": stat_json(nocache=st["nocache"])},
        ),
    ]
    for name in ("ssh-keygen -Y verify", "age -d"):
        if name in refs:
            rows.append(Row(f"  reference: {name}", "-", "", None, "", refs[name]))
        else:
            rows.append(
                Row(
                    f"  reference: {name}",
                    fmt_stat(st[name]),
                    f"kit verify: {fmt_time(kit.median)}",
                    st[name].median / kit.median,
                    "",
                    "report",
                    {"stats": stat_json(ref=st[name])},
                )
            )
    return rows


def fig_run(world: Any, reps: int) -> list[Row]:
    per_bundle = 90  # the host policy allows 100 uses per bundle
    bundles: dict[int, Path] = {}

    def bundle_for(i: int) -> Path:
        k = (i + 1) // per_bundle
        if k not in bundles:
            bundles[k] = world.root / f"run-{k}.kit"
            bundles[k].write_bytes(world.issue(max_uses=100))
        return bundles[k]

    verify_bundle = world.root / "run-verify.kit"
    verify_bundle.write_bytes(world.issue(max_uses=100))
    cmds = process.run_cmds(bundle_for, world.host_home, verify_bundle)
    st = processes(cmds, repeats=reps)
    run, verify = st["run"], st["verify"]
    fs = process.fsync_cost(world.host_home, max(reps, 20))
    argv, env = cmds["run"](10_000)
    syncs = process.count_syncs(argv, env)
    sync_note = (
        f"{syncs} fsync-family calls x {fmt_time(fs.median)} = "
        f"{fmt_time(syncs * fs.median)}"
        if isinstance(syncs, int)
        else f"fsync {fmt_time(fs.median)} each; count: {syncs}"
    )
    over = run.median - verify.median
    return [
        Row(
            "`kit run BUNDLE -- true`, whole process, receipt synced",
            fmt_stat(run),
            f"kit verify, same bundle: {fmt_stat(verify)}",
            run.median / verify.median,
            "overhead reported",
            "report",
            {
                "stats": stat_json(run=run, verify=verify, fsync=fs),
                "overhead_s": over,
                "fsync_calls": syncs,
            },
        ),
        Row(
            "  overhead of run over verify, and its fsyncs",
            fmt_time(over),
            sync_note,
            None,
            "",
            "report",
            {},
        ),
    ]


def fig_issue(world: Any, reps: int, inner: int) -> list[Row]:
    fns = inproc.issue(world)
    try:
        st = interleaved(fns, repeats=reps, inner=inner)
    finally:
        inproc.close()
    fs = process.fsync_cost(world.root, max(reps, 20))
    kit, floor, durable = st["kit"], st["floor"], st["durable-floor"]
    return [
        Row(
            "issue one bundle in-process (checks, seal, sign, durable ledger commit)",
            fmt_stat(kit),
            "HPKE seal + Ed25519 sign + one fsync'd append of the same size: "
            f"{fmt_stat(durable)}",
            kit.median / durable.median,
            "<= 1.5x durable floor",
            verdict(kit.median / durable.median, 1.5),
            {"stats": stat_json(kit=kit, floor=floor, durable_floor=durable, fsync=fs)},
        ),
        Row(
            "  the same against seal + sign alone (nothing on disk)",
            fmt_stat(kit),
            f"HPKE seal + Ed25519 sign (libsodium): {fmt_stat(floor)}",
            kit.median / floor.median,
            "",
            "report",
            {},
        ),
        Row(
            "  one 300-byte fsync on the same disk, for scale",
            fmt_stat(fs),
            "(information: the ledger commit is synchronous=FULL)",
            None,
            "",
            "report",
            {},
        ),
    ]


def fig_size(data: bytes) -> list[Row]:
    s = sizes.bundle_size(data)
    frames = s.get("frames")
    return [
        Row(
            "bundle size, 64-byte secret and two commands",
            f"{s['bytes']} B",
            f"secret + signature + HPKE overhead: {s['floor_bytes']} B",
            s["bytes"] / s["floor_bytes"],
            "report",
            "report",
            s,
        ),
        Row(
            "  QR frames needed (kit qr, default frame)",
            "-" if frames is None else str(frames),
            f"{s.get('frame_payload_bytes', '?')} compressed bytes per frame",
            None,
            "one frame",
            s.get("frames_note", "met" if frames == 1 else "MISSED"),
            {},
        ),
    ]


def reconcile_at(n: int, hosts: int, work: Path) -> dict[str, Any] | str:
    """bench/reconcile_scale.py (the auditor's figure) at one size, plus the
    floor on the very files it reconciled."""
    if not RECONCILE.exists():
        return f"{RECONCILE.name} not present yet (the auditor helper writes it)"
    out, keep = work / f"reconcile-{n}.json", work / f"reconcile-{n}"
    done = subprocess.run(
        [
            sys.executable,
            str(RECONCILE),
            "--receipts",
            str(n),
            "--hosts",
            str(hosts),
            "--json",
            str(out),
            "--keep",
            str(keep),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not out.exists():
        return f"{RECONCILE.name} failed ({done.returncode}): {done.stderr[-200:]}"
    result: dict[str, Any] = json.loads(out.read_text())
    result["floor"] = reconcile_floor(keep)
    shutil.rmtree(keep, ignore_errors=True)
    return result


def reconcile_floor(folder: Path) -> dict[str, Any]:
    """SHA-256 over every receipt's bytes plus decoding them (batch, envelope,
    body) and the ledger exports: what reconciling cannot do without."""
    import hashlib

    import msgpack

    files = sorted((folder / "receipts").rglob("*.kit"))
    ledger = sorted((folder / "ledger").glob("*.kit"))
    t0 = time.perf_counter()
    count = 0
    for path in ledger:
        _, body, _ = msgpack.unpackb(path.read_bytes())
        msgpack.unpackb(body)
    for path in files:
        _, raws, _ = msgpack.unpackb(path.read_bytes())
        for raw in raws:
            hashlib.sha256(raw).digest()
            _, body, _ = msgpack.unpackb(raw)
            msgpack.unpackb(body)
            count += 1
    seconds = time.perf_counter() - t0
    return {
        "receipts": count,
        "seconds": seconds,
        "receipts_per_second": count / seconds if seconds else None,
    }


def fig_reconcile(sizes_: list[int], hosts: int, work: Path) -> list[Row]:
    rows: list[Row] = []
    results: list[tuple[int, dict[str, Any]]] = []
    for n in sizes_:
        r = reconcile_at(n, hosts, work)
        if isinstance(r, str):
            rows.append(
                Row(
                    f"reconcile {n:,} receipts",
                    "-",
                    "",
                    None,
                    ">= 100,000/s, < 1 GiB",
                    f"skipped: {r}",
                )
            )
            continue
        rate, rss = r.get("receipts_per_second"), r.get("peak_rss_mib")
        floor = r["floor"]["receipts_per_second"]
        ok = bool(rate and rate >= 100_000 and rss is not None and rss < 1024)
        results.append((n, r))
        rows.append(
            Row(
                f"reconcile {n:,} receipts from {hosts:,} hosts",
                f"{rate:,.0f} receipts/s, peak {rss:,.0f} MiB",
                f"SHA-256 + decoding: {floor:,.0f} receipts/s",
                (floor / rate) if floor and rate else None,
                ">= 100,000/s, < 1 GiB",
                "met" if ok else "MISSED",
                {"result": r},
            )
        )
    if len(results) >= 2:
        (n0, r0), (n1, r1) = results[0], results[-1]
        t0, t1 = r0["reconcile_seconds"], r1["reconcile_seconds"]
        m0, m1 = r0["peak_rss_mib"], r1["peak_rss_mib"]
        # Growth exponents: 1 is linear, 0 is flat.
        size = math.log(n1 / n0)
        time_exp = math.log(t1 / t0) / size if t0 and t1 else None
        mem_exp = math.log(m1 / m0) / size if m0 and m1 else None
        ok = time_exp is not None and time_exp <= 1.05 and m1 < 1024
        rows.append(
            Row(
                f"  growth {n0:,} -> {n1:,} ({n1 // n0}x receipts, "
                f"{len(results)} sizes)",
                f"time x{t1 / t0:.1f}, peak memory x{m1 / m0:.2f}",
                "growth exponents (1 = linear): "
                + (
                    f"time {time_exp:.2f}, memory {mem_exp:.2f}"
                    if time_exp is not None and mem_exp is not None
                    else "-"
                ),
                time_exp,
                "time <= linear, memory < 1 GiB",
                "met" if ok else "MISSED",
                {
                    "sizes": [n for n, _ in results],
                    "seconds": [r["reconcile_seconds"] for _, r in results],
                    "peak_rss_mib": [r["peak_rss_mib"] for _, r in results],
                    "time_exponent": time_exp,
                    "memory_exponent": mem_exp,
                },
            )
        )
    return rows


# -- report ---------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in (
        "kit",
        "cryptography",
        "pynacl",
        "msgpack",
        "typer",
        "pyjwt",
        "pyseto",
        "biscuit-python",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    from cryptography.hazmat.backends.openssl.backend import backend

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "openssl": backend.openssl_version_text(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
    }


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def table(rows: list[Row]) -> str:
    """Fixed-width text; long cells are cut here (the JSON has them whole)."""
    head = ("figure", "median (min..max)", "baseline, same run", "ratio", "target")
    caps = (60, 34, 58, 8, 24, 40)
    cells = [(*head, "verdict")] + [
        (
            r.figure,
            r.value,
            r.baseline,
            "" if r.ratio is None else f"{r.ratio:.2f}x",
            r.target,
            r.verdict,
        )
        for r in rows
    ]
    cells = [tuple(_cut(c, w) for c, w in zip(row, caps, strict=True)) for row in cells]
    widths = [max(len(c[i]) for c in cells) for i in range(len(caps))]
    out = []
    for j, c in enumerate(cells):
        out.append(
            "  ".join(s.ljust(w) for s, w in zip(c, widths, strict=True)).rstrip()
        )
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny repeats")
    ap.add_argument(
        "--no-full",
        dest="full",
        action="store_false",
        default=os.environ.get("BENCH_FULL", "1") != "0",
        help="skip the 1,000,000-receipt reconcile, about 3 minutes (BENCH_FULL=0)",
    )
    ap.add_argument(
        "--json",
        type=Path,
        help="where to write the JSON (default bench/results.json, the recorded "
        "run; with --only, none unless given, so a partial run never replaces it)",
    )
    ap.add_argument(
        "--only",
        action="append",
        choices=FIGURES,
        help="run only this figure (repeatable); the JSON then holds only its rows",
    )
    args = ap.parse_args()
    only = set(args.only or FIGURES)
    q = args.quick
    reps, inner = (3, 20) if q else (15, 300)
    proc_reps = 3 if q else 30
    with tempfile.TemporaryDirectory(prefix="kit-bench-") as tmp:
        work = Path(tmp)
        (work / "world").mkdir()
        (work / "ref").mkdir()
        world = build(work / "world")
        try:
            data = world.issue(max_uses=100)
            rows: list[Row] = []
            steps = {
                "verify": lambda: fig_verify_open(world, data, reps, inner),
                "process": lambda: fig_process(world, data, proc_reps, work / "ref"),
                "run": lambda: fig_run(world, proc_reps),
                "issue": lambda: fig_issue(world, reps, 5 if q else 30),
                "size": lambda: fig_size(data),
                "reconcile": lambda: fig_reconcile(
                    [100, 200, 400]
                    if q
                    else [10_000, 100_000, *([1_000_000] if args.full else [])],
                    10 if q else 1000,
                    work,
                ),
            }
            for name, step in steps.items():
                if name not in only:
                    continue
                new = step()
                rows.extend(new)
                print(table(new).split("\n", 2)[-1], file=sys.stderr, flush=True)
        finally:
            world.close()
    info = machine()
    print()
    print(
        f"kit bench, {info['date']}: {info['cpu']}, {info['cores']} cores, "
        f"Python {info['python']}, {info['openssl']}, load {info['load_average']}"
    )
    print(table(rows))
    if args.json is None and args.only:
        print("\nJSON: not written (--only without --json)")
        return 0
    args.json = args.json or HERE / "results.json"
    args.json.write_text(
        json.dumps(
            {"machine": info, "quick": q, "rows": [r.as_json() for r in rows]},
            indent=2,
        )
        + "\n"
    )
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
