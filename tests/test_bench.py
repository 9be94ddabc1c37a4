"""`bench/run.py --quick` runs end to end and writes every figure's row.

No timing is asserted here (the machine running the tests is busy with
them); docs/BENCHMARKS.md records real runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert report["machine"]["cores"] >= 1
    figures = [r["figure"] for r in report["rows"]]
    for needle in (
        "verify + open one bundle in-process",
        "peer: PyJWT",
        "`kit verify BUNDLE`, whole process",
        "`kit run BUNDLE -- true`",
        "issue one bundle in-process",
        "bundle size",
        "QR frames",
        "reconcile",
    ):
        assert any(needle in f for f in figures), needle
    timed = [r for r in report["rows"] if r.get("stats")]
    for row in timed:
        for stat in row["stats"].values():
            assert 0 < stat["min_s"] <= stat["median_s"] <= stat["max_s"]
    # Peers decrypt nothing: judged against kit's verification alone, with
    # the ratio to kit's verify + open reported beside it.
    peers = [r for r in report["rows"] if r["figure"].startswith("peer:")]
    assert peers
    for row in peers:
        if row["verdict"].startswith("skipped"):
            continue
        assert row["ratio"] == row["ratio_to_kit_verify_only"]
        assert row["ratio_to_kit_verify_open"] < row["ratio_to_kit_verify_only"]
        assert "kit verify only" in row["baseline"]
    # Issuing is judged against the durable floor (seal, sign, one fsync).
    (issue,) = [r for r in report["rows"] if r["figure"].startswith("issue one")]
    assert set(issue["stats"]) >= {"kit", "floor", "durable_floor", "fsync"}
    assert issue["stats"]["durable_floor"]["min_s"] > issue["stats"]["floor"]["min_s"]
    assert "durable floor" in issue["target"]
    ratios = {r["figure"]: r["ratio"] for r in report["rows"]}
    assert ratios["bundle size, 64-byte secret and two commands"] > 1
    assert "figure" in done.stdout and "JSON:" in done.stdout


def test_bench_only_runs_the_figures_named(tmp_path: Path) -> None:
    out = tmp_path / "size.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "size",
         "--json", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    figures = [r["figure"] for r in json.loads(out.read_text())["rows"]]
    assert figures and all("size" in f or "QR" in f for f in figures), figures
    recorded = (ROOT / "bench" / "results.json").read_bytes()
    partial = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "size"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert partial.returncode == 0, partial.stderr[-2000:]
    assert "JSON: not written (--only without --json)" in partial.stdout
    assert (ROOT / "bench" / "results.json").read_bytes() == recorded
    bad = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--only", "everything"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "invalid choice: 'everything'" in bad.stderr
