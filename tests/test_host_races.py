"""Use counts hold across real concurrent processes and crashes (issue 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit.formats.receipt import parse_receipt
from kit.host.host import Host, init_host
from kit.signer.signer import IssueRequest, Signer, init_signer

KIT = str(Path(sys.executable).with_name("kit"))
PASSPHRASE = b"race-test passphrase"


def _setup(tmp: Path, max_uses: int) -> tuple[Path, Path, str]:
    now = int(time.time())
    signer_home, host_home = tmp / "signer", tmp / "host"
    root = init_signer(
        signer_home, "ops", PASSPHRASE, now=now, kdf_profile="interactive"
    )
    request, _ = init_host(host_home, "build-01", "prod", root.envelope.raw, now)
    signer = Signer(signer_home)
    signer.unlock(PASSPHRASE)
    signer.enroll(request, now)
    data, claims = signer.issue(
        IssueRequest(
            host="build-01",
            env="prod",
            task="job",
            commands=(("sh",),),
            ttl=3600,
            max_uses=max_uses,
            secret_name="KIT_SECRET",
            owner="ops",
        ),
        b"race-secret-value",
        now,
    )
    signer.close()
    bundle = tmp / "bundle.kit"
    bundle.write_bytes(data)
    return host_home, bundle, claims.bundle_id


def _events(host_home: Path) -> list[str]:
    host = Host(host_home)
    try:
        return [
            parse_receipt(raw).receipt.event for _, raw in host.state.receipts_after(0)
        ]
    finally:
        host.close()


@pytest.mark.parametrize(("runs", "max_uses"), [(8, 1), (10, 3)])
def test_concurrent_runs_release_exactly_max_uses(
    tmp_path: Path, runs: int, max_uses: int
) -> None:
    host_home, bundle, _ = _setup(tmp_path, max_uses)
    marks = tmp_path / "marks"
    marks.mkdir()
    script = f'printf %s "$KIT_SECRET" > {marks}/$$'
    procs = [
        subprocess.Popen(
            [
                KIT,
                "run",
                str(bundle),
                "--task",
                "job",
                "--home",
                str(host_home),
                "--",
                "sh",
                "-c",
                script,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(runs)
    ]
    codes = [p.wait(timeout=120) for p in procs]
    assert sorted(codes) == [0] * max_uses + [120] * (runs - max_uses)
    released = list(marks.iterdir())
    assert len(released) == max_uses
    assert all(p.read_bytes() == b"race-secret-value" for p in released)
    events = _events(host_home)
    assert events.count("release") == max_uses
    assert events.count("deny") == runs - max_uses
    assert events.count("exit") == max_uses


def test_sigkill_during_child_keeps_the_use_consumed(tmp_path: Path) -> None:
    host_home, bundle, _ = _setup(tmp_path, 1)
    started = tmp_path / "started"
    proc = subprocess.Popen(
        [
            KIT,
            "run",
            str(bundle),
            "--task",
            "job",
            "--home",
            str(host_home),
            "--",
            "sh",
            "-c",
            f"touch {started}; sleep 30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while not started.exists():
        assert time.monotonic() < deadline, "child never started"
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # kit and its child die together
    proc.wait(timeout=10)

    again = subprocess.run(
        [
            KIT,
            "run",
            str(bundle),
            "--task",
            "job",
            "--home",
            str(host_home),
            "--",
            "sh",
            "-c",
            "echo released twice",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 120
    assert "uses-exhausted" in again.stderr
    assert "released twice" not in again.stdout
    events = _events(host_home)
    assert events == ["release", "deny"]  # the killed run left no exit receipt


def test_sigkill_at_any_moment_never_allows_a_second_release(tmp_path: Path) -> None:
    """Kill `kit run` at spread-out moments (before, during and after the
    commit of the use); afterwards the journal is whole, every counted use has
    its release receipt, and the single use was released at most once."""
    host_home, bundle, bundle_id = _setup(tmp_path, 1)
    marks = tmp_path / "marks"
    marks.mkdir()
    for i in range(12):
        proc = subprocess.Popen(
            [
                KIT,
                "run",
                str(bundle),
                "--task",
                "job",
                "--home",
                str(host_home),
                "--",
                "sh",
                "-c",
                f"touch {marks}/{i}; sleep 5",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(0.05 + 0.04 * i)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    host = Host(host_home)
    try:
        host.state.check_journal()
        uses = host.state.uses(bundle_id)
        events = [parse_receipt(raw).receipt for _, raw in host.state.receipts_after(0)]
    finally:
        host.close()
    releases = [r for r in events if r.event == "release"]
    assert len(uses) == len(releases) <= 1
    assert len(list(marks.iterdir())) <= len(releases)
    assert [u.seq for u in uses] == [r.seq for r in releases]
