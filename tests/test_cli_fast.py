"""The typer-free hot path for ``kit verify`` and ``kit run`` (kit/cli/fast.py).

Its option table must be the one typer builds (derived here from the click
commands, so the two cannot drift), it must leave everything it does not
fully understand to typer, it must behave exactly as the typer path does,
and it must not load typer, pydantic, rich or the signer and auditor code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from conftest import CHILD, KIT, TASK, World, child_argv, quote

from kit.cli import fast
from kit.cli.main import app

TYPER_PATH = "import sys; sys.argv[0] = 'kit'; from kit.cli.main import app; app()"


def click_table(name: str) -> fast.CommandSpec:
    """The grammar of ``kit NAME`` as typer defines it, in fast.py's terms."""
    group = typer.main.get_command(app)
    cmd = group.commands[name]  # type: ignore[attr-defined]
    options: dict[str, tuple[str, str]] = {}
    required: list[str] = []
    envvars: list[tuple[str, str]] = []
    defaults: list[tuple[str, Any]] = []
    arguments: list[str] = []
    rest = None
    for p in cmd.params:
        if p.param_type_name == "argument":
            assert p.nargs in (1, -1), p.name
            if p.nargs == 1:
                arguments.append(p.name)
            else:
                assert p.required, "the fast path refuses an empty command"
                rest = p.name
            continue
        assert not p.secondary_opts, f"{p.name}: --no-... flags are not handled"
        kind = fast.FLAG if p.is_flag else fast.MULTIPLE if p.multiple else fast.VALUE
        for opt in p.opts:
            assert opt.startswith("--"), f"{opt}: short options are not handled"
            options[opt] = (p.name, kind)
        if p.required:
            required.append(p.name)
        if p.envvar:
            envvars.append((p.name, p.envvar))
        if p.default not in (None, False, ()):
            defaults.append((p.name, p.default))
    assert len(arguments) == 1
    return fast.CommandSpec(
        argument=arguments[0],
        options=options,
        required=tuple(required),
        rest=rest,
        envvars=tuple(envvars),
        defaults=tuple(defaults),
    )


@pytest.mark.parametrize("name", sorted(fast.COMMANDS))
def test_fast_table_is_typers(name: str) -> None:
    assert fast.COMMANDS[name] == click_table(name)


def test_fast_path_covers_the_host_hot_path_only() -> None:
    assert set(fast.COMMANDS) == {"verify", "run"}


# -- the parser: what it takes, and what it leaves to typer ---------------------


def test_parse_accepts_the_plain_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KIT_HOME", raising=False)
    got = fast.parse(
        "verify",
        ["b.kit", "--task", "t", "--dataset=a", "--dataset", "b", "--json"],
    )
    assert got == {
        "bundle": "b.kit",
        "task": "t",
        "command": None,
        "dataset": ["a", "b"],
        "deliver": None,
        "home": None,
        "json_out": True,
    }
    got = fast.parse("run", ["--home", "/h", "b", "--task=t", "--", "sh", "--", "-c"])
    assert got is not None
    assert got["home"] == Path("/h")
    assert got["command"] == ["sh", "--", "-c"]
    assert got["deliver"] == "env"
    assert got["yes"] is False
    assert got["keep_env"] is None


def test_parse_reads_kit_home_as_click_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIT_HOME", "/from/env")
    got = fast.parse("verify", ["b", "--task", "t"])
    assert got is not None and got["home"] == Path("/from/env")
    got = fast.parse("verify", ["b", "--task", "t", "--home", "/flag"])
    assert got is not None and got["home"] == Path("/flag")
    monkeypatch.setenv("KIT_HOME", "")  # empty: as if unset
    got = fast.parse("verify", ["b", "--task", "t"])
    assert got is not None and got["home"] is None


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("verify", ["b", "--task", "t", "--help"]),
        ("verify", ["b"]),  # --task missing
        ("verify", ["--task", "t"]),  # bundle missing
        ("verify", ["a", "b", "--task", "t"]),  # two positionals
        ("verify", ["b", "--task", "--json"]),  # value looks like an option
        ("verify", ["b", "--task"]),  # value missing
        ("verify", ["b", "--task", "t", "--bogus"]),
        ("verify", ["b", "--tas", "t"]),  # no abbreviations
        ("verify", ["b", "--task", "t", "--json=1"]),
        ("verify", ["b", "--task", "t", "--", "x"]),
        ("verify", ["b", "--task", "t", "--home", ""]),
        ("verify", ["-", "--task", "t"]),
        ("run", ["b", "--task", "t", "true"]),  # no '--'
        ("run", ["b", "--task", "t", "--"]),  # empty command
        ("run", ["b", "x", "--task", "t", "--", "true"]),
        ("run", ["b", "--task", "t", "--yes=no", "--", "true"]),
        ("run", ["b", "--task", "t", "-h", "--", "true"]),
    ],
)
def test_parse_leaves_the_rest_to_typer(name: str, args: list[str]) -> None:
    assert fast.parse(name, args) is None


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["run", "b", "--task", "t", "true"], "after '--'"),
        (["run", "b", "--task", "t", "python3", "job.py", "--yes"], "after '--'"),
        (["--debug", "run", "b", "--task", "t", "job", "--deliver", "fd"], "'--'"),
        (["run", "b", "--task", "t", "python3", "--", "job.py"], "before '--'"),
        (["run", "b", "x", "--home", "h", "--task=t", "--", "true"], "before '--'"),
        (["run", "b", "--task", "t", "--", "x", "--yes"], None),
        # '--' as an option's value is that value, as click reads it.
        (
            ["run", "b", "--home", "--", "true", "--deliver", "stdin", "--", "x"],
            "before '--'",
        ),
        (["run", "b", "--task", "--", "x"], "after '--'"),
        (["run", "b", "--task", "--help", "--", "x"], None),
        (["run", "--yes", "b", "--dataset", "d", "--task", "t", "--", "x"], None),
        (["run", "--help"], None),
        (["run", "b", "--bogus", "v", "--", "x"], None),  # typer names --bogus
        (["verify", "b", "--task", "t"], None),
        (["issue", "--task", "t"], None),
    ],
)
def test_run_takes_its_command_after_dashes_only(
    argv: list[str], why: str | None
) -> None:
    got = fast.misplaced_command(argv)
    assert (got is None) == (why is None), got
    if why is not None:
        assert got is not None and why in got


def test_a_job_option_never_reaches_kit(world: World, tmp_path: Path) -> None:
    """A line without '--' is refused before anything is opened: a job's
    own --yes / --deliver are not taken as kit's, nothing is released, no
    use is spent, and the child never runs."""
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(world.issue(max_uses=2).data)
    home = world.host_home("build-01")
    out = tmp_path / "out"
    before = world.uses()
    for line in (
        ["run", bundle, "--task", TASK, "--home", home, *child_argv(out), "--yes"],
        ["run", bundle, "--task", TASK, "--home", home, CHILD[0], "--", *CHILD[1:],
         str(out), "0"],
    ):  # fmt: skip
        proc = world.kit(*line)
        err = proc.stderr.decode()
        assert proc.returncode == 2, err
        assert "kit: error:" in err and "'--'" in err and "Traceback" not in err
        assert not out.exists()
    assert world.uses() == before
    good = world.kit("run", bundle, "--task", TASK, "--home", home, "--",
                     *child_argv(out, 0), "--yes")  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert out.exists()


def test_dispatch_ignores_other_commands() -> None:
    assert fast.dispatch([]) is None
    assert fast.dispatch(["--debug", "verify", "b", "--task", "t"]) is None
    assert fast.dispatch(["issue", "--task", "t"]) is None


# -- behaviour: the same through either path ------------------------------------


def run_kit(
    args: list[str], *, typer_path: bool, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    prog = [sys.executable, "-c", TYPER_PATH] if typer_path else [str(KIT)]
    return subprocess.run(
        [*prog, *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def same_both_ways(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    a = run_kit(args, typer_path=False, env=env)
    b = run_kit(args, typer_path=True, env=env)
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)
    return a


def test_verify_is_the_same_both_ways(world: World, tmp_path: Path) -> None:
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(world.issue(max_uses=3).data)
    home = str(world.host_home("build-01"))
    common = [str(bundle), "--home", home]
    ok = same_both_ways(["verify", *common, "--task", TASK])
    assert ok.returncode == 0 and "would be released" in ok.stderr
    done = same_both_ways(["verify", *common, "--task", TASK, "--json"])
    assert '"ok": true' in done.stdout
    done = same_both_ways(["verify", *common, "--task", "other", "--json"])
    assert done.returncode == 1 and "wrong-task" in done.stdout
    done = same_both_ways(["verify", *common, "--task", TASK, "--command", "rm -rf"])
    assert done.returncode == 1 and "command-not-allowed" in done.stderr
    allowed = quote(CHILD)
    done = same_both_ways(["verify", *common, "--task", TASK, "--command", allowed])
    assert done.returncode == 0
    done = same_both_ways(["verify", *common, "--task", TASK, "--command", "'x"])
    assert done.returncode == 2
    done = same_both_ways(["verify", *common, "--task", TASK, "--deliver", "mail"])
    assert done.returncode == 2
    done = same_both_ways(["verify", *common, "--task", TASK, "--dataset", "pii"])
    assert done.returncode == 1
    gone = ["verify", str(tmp_path / "missing.kit"), "--home", home, "--task", TASK]
    assert same_both_ways(gone).returncode != 0
    by_env = same_both_ways(
        ["verify", str(bundle), "--task", TASK], env={"KIT_HOME": home}
    )
    assert by_env.returncode == 0
    nohome = ["verify", str(bundle), "--task", TASK, "--home", str(tmp_path / "no")]
    assert same_both_ways(nohome).returncode == 5


def test_run_is_the_same_both_ways(world: World, tmp_path: Path) -> None:
    home = str(world.host_home("build-01"))
    outputs = []
    for typer_path in (False, True):
        issued = world.issue(max_uses=1)
        bundle = tmp_path / f"b-{typer_path}.kit"
        bundle.write_bytes(issued.data)
        out = tmp_path / f"out-{typer_path}"
        args = ["run", str(bundle), "--task", TASK, "--home", home, "--"]
        first = run_kit([*args, *child_argv(out, 7)], typer_path=typer_path)
        assert out.read_bytes() == issued.secret
        again = run_kit([*args, *child_argv(out, 0)], typer_path=typer_path)
        refused = run_kit(
            ["run", str(bundle), "--task", "x", "--home", home, "--", "true"],
            typer_path=typer_path,
        )
        outputs.append(
            [
                (p.returncode, p.stdout, norm(p.stderr, issued.claims.bundle_id, out))
                for p in (first, again, refused)
            ]
        )
    assert outputs[0] == outputs[1]
    (first_rc, _, _), (again_rc, _, _), (refused_rc, _, _) = outputs[0]
    assert (first_rc, again_rc, refused_rc) == (7, 120, 120)


def norm(text: str, bundle_id: str, out: Path) -> str:
    return (
        re.sub(r"[0-9]{4}-[0-9-]+[T ][0-9:]+Z", "T", text)
        .replace(bundle_id, "B")
        .replace(str(out), "OUT")
    )


def test_fallbacks_reach_typer(world: World, tmp_path: Path) -> None:
    helped = run_kit(["verify", "--help"], typer_path=False)
    assert helped.returncode == 0 and "--task" in helped.stdout
    bogus = run_kit(["verify", "b", "--task", "t", "--bogus"], typer_path=False)
    assert bogus.returncode == 2 and "No such option" in bogus.stderr


# -- the hot path loads only what it uses ---------------------------------------

PROBE = """
import sys
from kit.cli.fast import dispatch
code = dispatch(sys.argv[1:])
heavy = sorted(
    m for m in sys.modules
    if m.split(".")[0] in ("typer", "click", "pydantic", "rich")
    or m.startswith(("kit.cli.common", "kit.cli.main", "kit.cli.signer_cmds",
                     "kit.audit", "kit.signer"))
)
print(code, heavy)
"""


def test_hot_path_loads_no_cli_framework(world: World, tmp_path: Path) -> None:
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(world.issue(max_uses=2).data)
    home = str(world.host_home("build-01"))
    verify = ["verify", str(bundle), "--task", TASK, "--home", home]
    run = ["run", str(bundle), "--task", TASK, "--home", home]
    for args, code in (
        (verify, 0),
        ([*verify, "--command", quote(CHILD)], 0),
        # Refusals and usage errors are reported without typer too.
        ([*verify, "--command", "rm -rf /"], 1),
        ([*verify, "--command", "'unclosed"], 2),
        (["verify", str(tmp_path / "missing.kit"), "--task", TASK, "--home", home], 4),
        (["verify", str(bundle), "--task", "other", "--home", home, "--json"], 1),
        ([*run, "--", *CHILD, "/dev/null"], 0),
        ([*run, "--", "rm", "-rf", "/"], 120),
    ):
        done = subprocess.run(
            [sys.executable, "-c", PROBE, *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
        assert done.stdout.splitlines()[-1] == f"{code} []", (args, done.stderr)


def test_hot_path_skips_what_verify_does_not_use(world: World, tmp_path: Path) -> None:
    """A good `kit verify` writes no receipt and starts no child, so it loads
    neither the receipt format, the runner, the media code nor platformdirs."""
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(world.issue().data)
    home = str(world.host_home("build-01"))
    probe = (
        "import sys\n"
        "from kit.cli.fast import dispatch\n"
        "code = dispatch(sys.argv[1:])\n"
        "print(code, sorted(m for m in sys.modules if m in (\n"
        "    'kit.formats.receipt', 'kit.host.runner', 'kit.media', 'kit.qr',\n"
        "    'kit.formats.enrollment', 'kit.formats.manifest', 'platformdirs',\n"
        "    'subprocess', 'json', 'shlex')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "verify", str(bundle), "--task", TASK],
        env={**os.environ, "KIT_HOME": home},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert done.stdout.strip() == "0 []", done.stderr


def test_verify_path_imports_neither_logging_nor_the_cli_framework(
    world: World, tmp_path: Path
) -> None:
    """Start-up is paid on every job (docs/BENCHMARKS.md): a successful
    ``kit verify`` loads neither logging (it logs refusals only) nor typer
    or rich."""
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(world.issue().data)
    probe = (
        "import sys, atexit\n"
        "atexit.register(lambda: print(sorted(m for m in sys.modules if m in "
        "('logging', 'typer', 'rich')), "
        "file=sys.stdout))\n"
        "sys.argv[0] = 'kit'\n"
        "from kit.cli.fast import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "verify", str(bundle), "--task", TASK],
        env={**os.environ, "KIT_HOME": str(world.host_home("build-01"))},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "would be released" in done.stderr
    assert done.stdout.strip() == "[]"


def test_verify_and_run_import_no_dataclasses(world: World, tmp_path: Path) -> None:
    """The records ``kit verify`` and ``kit run`` read are typing.NamedTuple
    classes, cheap to create: like the plain-script baseline
    (bench/baseline_verify.py), a successful verify or run loads neither
    dataclasses nor inspect (which dataclasses imports, with ast and dis)."""
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(world.issue(max_uses=2).data)
    probe = (
        "import sys, atexit\n"
        "atexit.register(lambda: print(sorted(m for m in sys.modules if m in "
        "('dataclasses', 'inspect', 'ast', 'dis')), "
        "file=sys.stdout))\n"
        "sys.argv[0] = 'kit'\n"
        "from kit.cli.fast import main\n"
        "main()\n"
    )
    for args, said in (
        (["verify", str(bundle), "--task", TASK], "would be released"),
        (["run", str(bundle), "--task", TASK, "--", *CHILD, "/dev/null"], "released"),
    ):
        done = subprocess.run(
            [sys.executable, "-c", probe, *args],
            env={**os.environ, "KIT_HOME": str(world.host_home("build-01"))},
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert said in done.stderr
        assert done.stdout.strip() == "[]", args


def test_closed_standard_streams_are_not_internal_errors(
    world: World, tmp_path: Path
) -> None:
    """kit verify with stdout closed (>&-) and kit run with stdin closed
    (<&-) run as with the null device there."""
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(world.issue(max_uses=2).data)
    home = str(world.host_home("build-01"))
    closed_out = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", str(KIT), "verify", str(bundle),
         "--task", TASK, "--home", home],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert closed_out.returncode == 0, closed_out.stderr
    assert "internal error" not in closed_out.stderr
    out = tmp_path / "out"
    closed_in = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", str(KIT), "run", str(bundle),
         "--task", TASK, "--home", home, "--", *child_argv(out, 0)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert closed_in.returncode == 0, closed_in.stderr
    assert "internal error" not in closed_in.stderr and out.exists()


def test_a_failed_exit_receipt_after_the_run_passes_the_status_on(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The command ran: its status is kit run's answer (a caller retrying on
    124 would spend another use), and the missing exit receipt is said."""
    from kit.errors import JournalError
    from kit.host.host import Host

    def full(*_: Any, **__: Any) -> None:
        raise JournalError("a receipt could not be written (database or disk is full)")

    monkeypatch.setattr(Host, "record_exit", full)
    bundle = tmp_path / "b.kit"
    issued = world.issue(max_uses=2)
    bundle.write_bytes(issued.data)
    out = tmp_path / "out"
    status = fast.run_bundle(
        bundle=str(bundle), task=TASK, command=list(child_argv(out, 3)),
        home=world.host_home("build-01"), deliver="env", keep_env=None,
        dataset=None, yes=True,
    )  # fmt: skip
    assert status == 3 and out.read_bytes() == issued.secret
    err = capsys.readouterr().err
    assert "ran and ended with status 3, but its exit receipt could not be " in err
    assert "disk is full); the release receipt (use 1) stands" in err
    assert [r.event for r in world.receipts()] == ["release"]
