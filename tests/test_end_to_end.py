"""End to end with real ``kit`` processes: operator, offline host, auditor.

The flow runs once per module (``e2e`` fixture): signer init, host init,
enroll, issue a random API token, export; then the host side inside a network
namespace with only loopback (``unshare -n``): import, verify, a live call to
the demo API by the job ``kit run`` starts, a wrong-task run, a run past
max-uses, receipts export; then reconcile on the signer. The tests check each
result, that the token is in no file, database or argv, and that
``demo/demo.sh`` passes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shlex
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "demo"
BIN = Path(sys.executable).parent
KIT = BIN / "kit"
TASK = "nightly-export"
TIMEOUT = 30

# Runs inside ``unshare -n``: the whole host side in one network namespace, so
# the API server and the job kit starts share its loopback. Writes every
# command's exit status and output, and every argv it launched, as JSON.
HOST_SIDE = r"""
import errno, json, socket, subprocess, sys, time
from pathlib import Path

cfg = json.loads(Path(sys.argv[1]).read_text())
res = {"argv": []}


def run(name, argv, **kw):
    res["argv"].append(list(argv))
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL, **kw)
    res[name] = {"rc": p.returncode, "out": p.stdout, "err": p.stderr}
    return p


run("lo_up", ["ip", "link", "set", "lo", "up"])
run("links", ["ip", "-brief", "link"])
run("routes", ["ip", "route"])
try:
    socket.create_connection(("1.1.1.1", 443), timeout=3).close()
    res["egress"] = "connected"
except OSError as exc:
    res["egress"] = errno.errorcode.get(exc.errno or 0, str(exc))

kit, home, usb, bid = cfg["kit"], cfg["host"], cfg["usb"], cfg["bundle_id"]
run("import", [kit, "import", usb, "--home", home])
run("verify", [kit, "verify", bid, "--task", cfg["task"],
               "--command", "python3 job.py", "--home", home])

api = Path(cfg["api"])
server_argv = [sys.executable, cfg["api_server"], "--hash-file",
               str(api / "token.sha256"), "--port-file", str(api / "port"),
               "--timeout", "20"]
res["argv"].append(server_argv)
with open(api / "server.log", "w") as log:
    server = subprocess.Popen(server_argv, stderr=log, stdin=subprocess.DEVNULL)
try:
    for _ in range(100):
        if (api / "port").exists():
            break
        time.sleep(0.05)
    url = f"http://127.0.0.1:{(api / 'port').read_text().strip()}/v1/export"
    job = ["python3", "job.py", "--url", url]
    run("run", [kit, "run", bid, "--task", cfg["task"], "--home", home, "--", *job],
        cwd=cfg["demo"])
    try:
        res["server_rc"] = server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        res["server_rc"] = None
finally:
    if server.poll() is None:
        server.kill()
        server.wait()
res["server_log"] = (api / "server.log").read_text()
run("wrong_task", [kit, "run", bid, "--task", "weekly-export", "--home", home,
                   "--", *job], cwd=cfg["demo"])
run("exhausted", [kit, "run", bid, "--task", cfg["task"], "--home", home,
                  "--", *job], cwd=cfg["demo"])
run("receipts_export", [kit, "receipts", "export", "--home", home, "--to", usb])
Path(cfg["out"]).write_text(json.dumps(res))
"""


def netns_available() -> bool:
    try:
        p = subprocess.run(
            ["unshare", "-n", "true"], capture_output=True, timeout=TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0


@dataclass
class Flow:
    root: Path
    token: bytes
    env: dict[str, str]
    argvs: list[list[str]] = field(default_factory=list)
    results: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    host_side: dict[str, Any] = field(default_factory=dict)
    bundle_id: str = ""
    paths: dict[str, Path] = field(default_factory=dict)

    def run(
        self, name: str, *argv: str | Path, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        args = [str(a) for a in argv]
        self.argvs.append(args)
        p = subprocess.run(
            args,
            input=stdin if stdin is not None else b"",
            capture_output=True,
            env=self.env,
            cwd=self.root,
            timeout=TIMEOUT,
            check=False,
        )
        done = subprocess.CompletedProcess(
            args, p.returncode, p.stdout.decode(), p.stderr.decode()
        )
        self.results[name] = done
        return done

    def ok(
        self, name: str, *argv: str | Path, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        p = self.run(name, *argv, stdin=stdin)
        assert p.returncode == 0, f"{name}: exit {p.returncode}\n{p.stderr}"
        return p

    def kit(
        self,
        name: str,
        template: str,
        *,
        stdin: bytes | None = None,
        netns: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kit`` with ``template`` split into words first, then each
        word's {root}, {signer}, ... replaced by the path: no quoting issues."""
        words = [w.format(**self.paths) for w in shlex.split(template)]
        prefix = ["unshare", "-n"] if netns else []
        return self.ok(name, *prefix, KIT, *words, stdin=stdin)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Flow:
    """The whole flow, run once; each test checks one part of it."""
    if not netns_available():
        pytest.skip(
            "'unshare -n true' fails here (needs root or user namespaces): "
            "cannot run the host side in a network namespace"
        )
    root = tmp_path_factory.mktemp("e2e")
    passfile = root / "passphrase"
    passfile.write_text(secrets.token_urlsafe(24) + "\n")
    passfile.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env["KIT_PASSPHRASE_FILE"] = str(passfile)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    token = secrets.token_urlsafe(32).encode()
    f = Flow(root, token, env)
    signer, host, usb, api = root / "signer", root / "host", root / "usb", root / "api"
    f.paths = {"root": root, "signer": signer, "host": host, "usb": usb}
    api.mkdir()
    (api / "token.sha256").write_text(hashlib.sha256(token).hexdigest() + "\n")

    # operator
    f.kit(
        "signer_init", "signer init --home {signer} --name acme-ops --kdf interactive"
    )
    f.kit(
        "host_init",
        "host init --home {host} --name build-01 --env prod "
        "--trust {signer}/trust-root.kit --out {root}/enroll.kit",
        netns=True,
    )
    f.kit("enroll", "enroll {root}/enroll.kit --home {signer}")
    issued = f.kit(
        "issue",
        "issue --home {signer} --host build-01 --env prod --task nightly-export "
        "--ttl 1h --command 'python3 job.py' --secret-stdin --max-uses 1 --json",
        stdin=token,
    )
    f.bundle_id = json.loads(issued.stdout)["bundle_id"]
    f.kit("export", "export --home {signer} --to {usb}")

    # host, offline
    cfg = {
        "kit": str(KIT),
        "host": str(host),
        "usb": str(usb),
        "api": str(api),
        "api_server": str(DEMO / "api_server.py"),
        "demo": str(DEMO),
        "task": TASK,
        "bundle_id": f.bundle_id,
        "out": str(root / "host-side.json"),
    }
    script, config = root / "host-side.py", root / "host-side.cfg"
    script.write_text(HOST_SIDE)
    config.write_text(json.dumps(cfg))
    f.ok("host_side", "unshare", "-n", sys.executable, script, config)
    f.host_side = json.loads((root / "host-side.json").read_text())
    f.argvs.extend(f.host_side["argv"])

    # auditor
    f.run("reconcile", KIT, "reconcile", usb, "--home", signer, "--json")
    return f


def step(f: Flow, name: str) -> dict[str, Any]:
    r: dict[str, Any] = f.host_side[name]
    return r


def test_host_side_has_no_route_out(e2e: Flow) -> None:
    assert step(e2e, "lo_up")["rc"] == 0
    links = step(e2e, "links")["out"].split()
    assert links[0] == "lo" and len(step(e2e, "links")["out"].splitlines()) == 1
    assert step(e2e, "routes")["out"].strip() == ""
    assert e2e.host_side["egress"] == errno.errorcode[errno.ENETUNREACH]


def test_import_and_verify(e2e: Flow) -> None:
    assert step(e2e, "import")["rc"] == 0, step(e2e, "import")["err"]
    assert f"staged {e2e.bundle_id}" in step(e2e, "import")["err"]
    v = step(e2e, "verify")
    assert v["rc"] == 0, v["err"]
    assert "1 of 1 use(s) left" in v["err"]


def test_run_releases_token_and_live_api_call_succeeds(e2e: Flow) -> None:
    r = step(e2e, "run")
    assert r["rc"] == 0, r["out"] + r["err"]
    assert f"released bundle {e2e.bundle_id} (use 1 of 1)" in r["err"]
    assert "HTTP 200" in r["out"]
    # The server exits 0 only after it answered a request whose bearer token
    # hashes to the issued token's SHA-256.
    assert e2e.host_side["server_rc"] == 0, e2e.host_side["server_log"]
    assert "GET /v1/export -> 200" in e2e.host_side["server_log"]


def test_wrong_task_is_refused(e2e: Flow) -> None:
    r = step(e2e, "wrong_task")
    assert r["rc"] == 120, r["err"]
    assert "denied [wrong-task]" in r["err"]
    assert r["out"] == ""  # the job never ran


def test_run_past_max_uses_is_refused(e2e: Flow) -> None:
    r = step(e2e, "exhausted")
    assert r["rc"] == 120, r["err"]
    assert "denied [uses-exhausted]" in r["err"]
    assert r["out"] == ""


def test_receipts_export(e2e: Flow) -> None:
    r = step(e2e, "receipts_export")
    assert r["rc"] == 0, r["err"]
    assert list((e2e.root / "usb").glob("receipts-build-01-*.kit"))


def test_reconcile_shows_one_use_the_denials_and_no_anomaly(e2e: Flow) -> None:
    r = e2e.results["reconcile"]
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["clean"] is True
    assert report["anomalies"] == []
    assert report["hosts"] == {"build-01": report["receipts"]}
    (b,) = report["bundles"]
    assert b["bundle_id"] == e2e.bundle_id
    assert (b["status"], b["uses"], b["max_uses"]) == ("used", 1, 1)
    reasons = sorted(d.split()[0] for d in b["denials"])
    assert reasons == ["uses-exhausted", "wrong-task"]


# -- the token leaves no trace -------------------------------------------------


def files_containing(root: Path, needles: Sequence[bytes]) -> list[Path]:
    """Files under ``root`` whose raw bytes, or (for SQLite databases) any
    value of any row, contain one of ``needles``."""
    hits = []
    for p in sorted(root.rglob("*")):
        if p.is_symlink() or not p.is_file():
            continue
        data = p.read_bytes()
        if any(n in data for n in needles):
            hits.append(p)
        elif data.startswith(b"SQLite format 3\x00") and any(
            n in dump_sqlite(p) for n in needles
        ):
            hits.append(p)
    return hits


def dump_sqlite(path: Path) -> bytes:
    """Every value in every table (WAL included), from a private copy."""
    tmp = path.parent / f".copy-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        for suffix in ("", "-wal"):
            src = Path(f"{path}{suffix}")
            if src.exists():
                shutil.copyfile(src, tmp / f"db{suffix}")
        db = sqlite3.connect(tmp / "db")
        try:
            out = []
            tables = db.execute("SELECT name FROM sqlite_master WHERE type='table'")
            for (name,) in tables.fetchall():
                for row in db.execute(f'SELECT * FROM "{name}"'):  # noqa: S608
                    for v in row:
                        out.append(v if isinstance(v, bytes) else str(v).encode())
            return b"\n".join(out)
        finally:
            db.close()
    finally:
        shutil.rmtree(tmp)


def test_scanner_finds_a_token_in_sqlite(tmp_path: Path) -> None:
    """The scan below would notice a token stored in a database."""
    token = secrets.token_urlsafe(32).encode()
    db = sqlite3.connect(tmp_path / "x.db")
    db.execute("CREATE TABLE t (v BLOB)")
    db.execute("INSERT INTO t VALUES (?)", (token,))
    db.commit()
    db.close()
    assert files_containing(tmp_path, [token]) == [tmp_path / "x.db"]


def test_token_is_in_no_file_and_no_database(e2e: Flow) -> None:
    root = e2e.root
    dbs = [p for p in root.rglob("*.db") if p.is_file()]
    assert {p.name for p in dbs} >= {"ledger.db", "state.db"}, dbs
    for home in ("signer", "host", "usb"):
        assert any((root / home).iterdir()), home
    needles = [e2e.token, e2e.token.hex().encode()]
    assert files_containing(root, needles) == []


def test_token_is_in_no_argv_and_no_output(e2e: Flow) -> None:
    text = e2e.token.decode()
    assert len(e2e.argvs) >= 12
    for argv in e2e.argvs:
        assert not any(text in a for a in argv), argv
    outputs = [p.stdout + p.stderr for p in e2e.results.values()]
    outputs += [
        v["out"] + v["err"] for v in e2e.host_side.values() if isinstance(v, dict)
    ]
    outputs.append(e2e.host_side["server_log"])
    assert not any(text in o for o in outputs)


# -- the demo ------------------------------------------------------------------


def test_demo_script_passes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["TMPDIR"] = str(tmp_path)
    env.pop("KEEP", None)
    p = subprocess.run(
        ["bash", str(DEMO / "demo.sh")],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "Demo complete" in p.stdout
    assert "Traceback" not in p.stdout + p.stderr
    assert list(tmp_path.iterdir()) == []  # the work folder was removed
