"""Whole-process figures: ``kit verify`` and ``kit run`` cold, the plain
script floor, the typer path for comparison, and native reference tools."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.timing import Stat, bench_env

VENV_BIN = Path(sys.executable).parent
KIT = VENV_BIN / "kit"
HERE = Path(__file__).resolve().parent
TASK = "nightly-export"
# The typer-only path: what `kit verify` cost before kit/cli/fast.py.
TYPER_PATH = "import sys; sys.argv[0] = 'kit'; from kit.cli.main import app; app()"

Maker = Callable[[int], tuple[Sequence[str], dict[str, str]]]


def verify_cmds(bundle: Path, home: Path) -> dict[str, Maker]:
    env = bench_env()
    args = ["verify", str(bundle), "--task", TASK, "--home", str(home)]
    floor = [sys.executable, str(HERE / "baseline_verify.py"), str(bundle), str(home)]
    return {
        "kit": lambda i: ([str(KIT), *args], env),
        "floor": lambda i: ([*floor, TASK], env),
        "typer": lambda i: ([sys.executable, "-c", TYPER_PATH, *args], env),
        "nocache": lambda i: (
            [str(KIT), *args],
            {**env, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": _empty()},
        ),
    }


_EMPTY: list[str] = []


def _empty() -> str:
    """A bytecode cache folder that stays empty: kit compiled from source."""
    if not _EMPTY:
        _EMPTY.append(tempfile.mkdtemp(prefix="kit-bench-nocache-"))
    return _EMPTY[0]


def run_cmds(
    bundles: Callable[[int], Path], home: Path, bundle: Path
) -> dict[str, Maker]:
    env = bench_env()

    def run(i: int) -> tuple[Sequence[str], dict[str, str]]:
        b = bundles(i)
        return (
            [
                str(KIT),
                "run",
                str(b),
                "--task",
                TASK,
                "--home",
                str(home),
                "--",
                "true",
            ],
            env,
        )

    return {"run": run, "verify": verify_cmds(bundle, home)["kit"]}


def fsync_cost(folder: Path, repeats: int) -> Stat:
    """One 300-byte write and fsync on the host home's file system."""
    path = folder / ".bench-fsync"
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(repeats):
            os.write(fd, b"r" * 300)
            t0 = time.perf_counter()
            os.fsync(fd)
            samples.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return Stat(samples)


def count_syncs(argv: Sequence[str], env: dict[str, str]) -> int | str:
    """fsync-family calls a command makes, by strace; a reason if unavailable."""
    strace = shutil.which("strace")
    if strace is None:
        return "strace not installed"
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        done = subprocess.run(
            [
                strace,
                "-f",
                "-qq",
                "-c",
                "-o",
                out.name,
                "-e",
                "trace=fsync,fdatasync,sync_file_range,msync",
                *argv,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            return f"strace failed ({done.stderr.decode()[-120:].strip()})"
        calls = 0
        for line in out.read().splitlines():
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
            if m and m.group(2) != "total":
                calls += int(m.group(1))
        return calls


# -- native reference tools -------------------------------------------------


def ssh_keygen_cmd(work: Path) -> Maker | str:
    tool = shutil.which("ssh-keygen")
    if tool is None:
        return "ssh-keygen not installed (scripts/benchdeps.sh: openssh-client)"
    key = work / "id_ed25519"
    subprocess.run([tool, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    data = work / "token"
    data.write_bytes(os.urandom(600))
    subprocess.run(
        [tool, "-q", "-Y", "sign", "-f", str(key), "-n", "file", str(data)],
        check=True,
        capture_output=True,
    )
    pub = (work / "id_ed25519.pub").read_text().split()
    (work / "allowed").write_text(f"bench {pub[0]} {pub[1]}\n")
    env = dict(os.environ)

    def make(i: int) -> tuple[Sequence[str], dict[str, str]]:
        return (
            [
                "sh",
                "-c",
                f'exec "$0" -Y verify -f {work}/allowed -I bench -n file '
                f"-s {data}.sig < {data}",
                tool,
            ],
            env,
        )

    return make


def age_cmd(work: Path) -> Maker | str:
    age, keygen = shutil.which("age"), shutil.which("age-keygen")
    if age is None or keygen is None:
        return "age not installed (scripts/benchdeps.sh: age)"
    ident = work / "age.key"
    subprocess.run([keygen, "-o", str(ident)], check=True, capture_output=True)
    recipient = subprocess.run(
        [keygen, "-y", str(ident)], check=True, capture_output=True, text=True
    ).stdout.strip()
    secret = work / "secret"
    secret.write_bytes(b"s" * 64)
    sealed = work / "secret.age"
    subprocess.run([age, "-r", recipient, "-o", str(sealed), str(secret)], check=True)
    env = dict(os.environ)
    return lambda i: ([age, "-d", "-i", str(ident), "-o", os.devnull, str(sealed)], env)
