"""Workflow identity declarations (bundles/): every refusal names file and line,
the shipped examples pass, and `kit policy` maps outcomes to exit codes."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kit.cli.policy_cmds import policy_app
from kit.signer.identity import (
    DeclarationError,
    Identity,
    PolicyCheck,
    load_identities,
    load_identity,
    locate_keys,
    parse_identity,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "bundles"
NOW = int(datetime(2026, 1, 15, 12, 0, tzinfo=UTC).timestamp())

# A valid declaration, one key per line after a comment on line 1, so the key
# at index k of this dict sits on line k + 2.
BASE: dict[str, str] = {
    "name": '"nightly-job-dev"',
    "owner": '"data-platform@example.com"',
    "purpose": '"Exercise the loader."',
    "environment": '"dev"',
    "task": '"nightly-job"',
    "commands": '[["python3", "job.py"]]',
    "datasets": '["orders"]',
    "risk": '"low"',
    "max_lifetime": '"8h"',
    "max_uses": "5",
    "approvals": "0",
    "rotation_period": '"90d"',
}


def text_of(**over: str | None) -> str:
    fields = {**BASE, **over}
    body = [f"{k} = {v}" for k, v in fields.items() if v is not None]
    return "# a declaration for the tests\n" + "\n".join(body) + "\n"


def line_of(text: str, key: str) -> int:
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith(f"{key} ="):
            return n
    raise AssertionError(f"{key} not in text")


def write(folder: Path, text: str, file: str = "nightly-job-dev.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file
    path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path) -> list[str]:
    """The problems of one declaration, as FILE:LINE: message strings."""
    with pytest.raises(DeclarationError) as info:
        load_identity(path)
    return [str(p) for p in info.value.problems]


def expect_one(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = write(tmp_path, text)
    problems = refused(path)
    assert problems == [f"{path}:{line}: " + problems[0].split(": ", 1)[1]]
    assert fragment in problems[0], problems


def check(folder: Path, now: int = NOW) -> PolicyCheck:
    return load_identities(folder, now=now)


# -- a valid declaration --------------------------------------------------------


def test_valid_declaration_loads(tmp_path: Path) -> None:
    path = write(tmp_path, text_of(retire_on="2027-06-30"))
    identity = load_identity(path)
    assert identity == Identity(
        name="nightly-job-dev",
        owner="data-platform@example.com",
        purpose="Exercise the loader.",
        environment="dev",
        task="nightly-job",
        commands=(("python3", "job.py"),),
        datasets=("orders",),
        risk="low",
        max_lifetime=8 * 3600,
        max_uses=5,
        approvals=0,
        rotation_period=90 * 86400,
        retire_on=date(2027, 6, 30),
        delivery=("env", "fd", "file", "stdin"),
        path=path,
        digest=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def test_digest_is_sha256_of_the_exact_bytes(tmp_path: Path) -> None:
    first = load_identity(write(tmp_path, text_of()))
    second = load_identity(write(tmp_path, text_of() + "# reviewed\n"))
    assert first.digest != second.digest
    assert second.digest == hashlib.sha256(second.path.read_bytes()).hexdigest()


def test_lifetime_accepts_integer_seconds(tmp_path: Path) -> None:
    identity = load_identity(write(tmp_path, text_of(max_lifetime="3600")))
    assert identity.max_lifetime == 3600


def test_empty_datasets_is_allowed_and_allows_none(tmp_path: Path) -> None:
    identity = load_identity(write(tmp_path, text_of(datasets="[]")))
    assert identity.datasets == ()


def test_declares_command_is_exact_prefix_matching(tmp_path: Path) -> None:
    identity = load_identity(write(tmp_path, text_of()))
    assert identity.declares_command(("python3", "job.py"))
    assert identity.declares_command(("python3", "job.py", "--dry-run"))
    assert not identity.declares_command(("python3",))
    assert not identity.declares_command(("python3", "job.py.bak"))
    assert not identity.declares_command(("/usr/bin/python3", "job.py"))


def test_retirement_starts_at_midnight_utc(tmp_path: Path) -> None:
    identity = load_identity(write(tmp_path, text_of(retire_on="2026-03-01")))
    start = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())
    assert identity.retired_at == start
    assert not identity.is_retired(start - 1)
    assert identity.is_retired(start)


# -- one refusal per rule, each with its file and line -------------------------


def test_unknown_key(tmp_path: Path) -> None:
    text = text_of(expires="2026-01-01")
    expect_one(tmp_path, text, line_of(text, "expires"), "unknown key 'expires'")


def test_table_is_an_unknown_key(tmp_path: Path) -> None:
    text = text_of() + "[scope]\nhost = 'build-01'\n"
    expect_one(tmp_path, text, len(text.splitlines()) - 1, "unknown key 'scope'")


def test_missing_key_is_reported_on_line_1(tmp_path: Path) -> None:
    expect_one(tmp_path, text_of(task=None), 1, "missing key 'task'")


def test_missing_owner(tmp_path: Path) -> None:
    expect_one(tmp_path, text_of(owner=None), 1, "no owner")


def test_empty_owner(tmp_path: Path) -> None:
    text = text_of(owner='"  "')
    expect_one(tmp_path, text, line_of(text, "owner"), "no owner")


def test_owner_must_be_a_team_address(tmp_path: Path) -> None:
    text = text_of(owner='"Data Platform"')
    expect_one(tmp_path, text, line_of(text, "owner"), "team address")


def test_wrong_type(tmp_path: Path) -> None:
    text = text_of(max_uses='"5"')
    expect_one(tmp_path, text, line_of(text, "max_uses"), "must be an integer")


def test_boolean_is_not_an_integer(tmp_path: Path) -> None:
    text = text_of(approvals="true")
    expect_one(tmp_path, text, line_of(text, "approvals"), "must be an integer")


def test_name_outside_name_re(tmp_path: Path) -> None:
    text = text_of(name='"Nightly_Job"')
    path = write(tmp_path, text, "Nightly_Job.toml")
    assert refused(path) == [
        f"{path}:{line_of(text, 'name')}: name must be a name matching "
        "[a-z0-9][a-z0-9._-]{0,62}, got 'Nightly_Job'"
    ]


def test_file_name_must_match_name(tmp_path: Path) -> None:
    text = text_of()
    path = write(tmp_path, text, "nightly-job.toml")
    (problem,) = refused(path)
    assert problem.startswith(f"{path}:{line_of(text, 'name')}: ")
    assert "the file must be nightly-job-dev.toml" in problem


def test_task_outside_name_re(tmp_path: Path) -> None:
    text = text_of(task='"nightly job"')
    expect_one(tmp_path, text, line_of(text, "task"), "task must be a name")


def test_environment_must_be_exactly_one(tmp_path: Path) -> None:
    text = text_of(environment='["dev", "prod"]')
    expect_one(tmp_path, text, line_of(text, "environment"), "exactly one name")


def test_lifetime_over_the_global_cap(tmp_path: Path) -> None:
    text = text_of(max_lifetime='"91d"')
    expect_one(tmp_path, text, line_of(text, "max_lifetime"), "global lifetime cap")


def test_lifetime_in_seconds_over_the_global_cap(tmp_path: Path) -> None:
    text = text_of(max_lifetime=str(91 * 86400))
    expect_one(tmp_path, text, line_of(text, "max_lifetime"), "global lifetime cap")


def test_lifetime_under_a_minute(tmp_path: Path) -> None:
    text = text_of(max_lifetime='"30s"')
    expect_one(tmp_path, text, line_of(text, "max_lifetime"), "under the minimum")


def test_invalid_duration(tmp_path: Path) -> None:
    text = text_of(max_lifetime='"8 hours"')
    expect_one(tmp_path, text, line_of(text, "max_lifetime"), "is not a duration")


def test_invalid_rotation_period(tmp_path: Path) -> None:
    text = text_of(rotation_period='"quarterly"')
    expect_one(tmp_path, text, line_of(text, "rotation_period"), "not a duration")


def test_duration_of_wrong_type(tmp_path: Path) -> None:
    text = text_of(rotation_period="1.5")
    expect_one(tmp_path, text, line_of(text, "rotation_period"), "integer seconds")


def test_uses_over_the_global_cap(tmp_path: Path) -> None:
    text = text_of(max_uses="1001")
    expect_one(tmp_path, text, line_of(text, "max_uses"), "from 1 to 1000")


def test_zero_uses(tmp_path: Path) -> None:
    text = text_of(max_uses="0")
    expect_one(tmp_path, text, line_of(text, "max_uses"), "from 1 to 1000")


def test_unknown_risk(tmp_path: Path) -> None:
    text = text_of(risk='"critical"')
    expect_one(tmp_path, text, line_of(text, "risk"), "low, medium, high")


def test_high_risk_needs_an_approval(tmp_path: Path) -> None:
    text = text_of(risk='"high"', approvals="0")
    expect_one(tmp_path, text, line_of(text, "approvals"), "at least 1 approval")


def test_too_many_approvals(tmp_path: Path) -> None:
    # With the issuer's, a bundle carries at most 8 signatures: 7 approvals.
    text = text_of(approvals="8")
    expect_one(tmp_path, text, line_of(text, "approvals"), "from 0 to 7")


def test_empty_purpose(tmp_path: Path) -> None:
    text = text_of(purpose='""')
    expect_one(tmp_path, text, line_of(text, "purpose"), "non-empty string")


def test_empty_commands_is_an_error(tmp_path: Path) -> None:
    text = text_of(commands="[]")
    expect_one(tmp_path, text, line_of(text, "commands"), "commands is empty")


def test_command_must_be_a_list_of_strings(tmp_path: Path) -> None:
    text = text_of(commands='["python3 job.py"]')
    expect_one(tmp_path, text, line_of(text, "commands"), "commands[0] must be a list")


def test_empty_argv_prefix(tmp_path: Path) -> None:
    text = text_of(commands="[[]]")
    expect_one(tmp_path, text, line_of(text, "commands"), "commands[0] must be a list")


def test_executable_with_white_space(tmp_path: Path) -> None:
    text = text_of(commands='[["python3 job.py"]]')
    expect_one(tmp_path, text, line_of(text, "commands"), "own string")


def test_argument_with_nul(tmp_path: Path) -> None:
    text = text_of(commands='[["python3", "job\\u0000.py"]]')
    expect_one(tmp_path, text, line_of(text, "commands"), "without NUL")


def test_bad_command_in_a_multi_line_array_points_at_its_line(
    tmp_path: Path,
) -> None:
    commands = '[\n    ["python3", "job.py"],\n    # the cleanup step\n    [""],\n]'
    text = text_of(commands=commands)
    bad = line_of(text, "commands") + 3
    assert text.splitlines()[bad - 1].strip() == '[""],'
    expect_one(tmp_path, text, bad, "commands[1]: each argument")


def test_repeated_command(tmp_path: Path) -> None:
    commands = '[\n  ["python3", "job.py"],\n  ["python3", "job.py"],\n]'
    text = text_of(commands=commands)
    expect_one(tmp_path, text, line_of(text, "commands") + 2, "commands[1] repeats")


def test_dataset_outside_name_re(tmp_path: Path) -> None:
    text = text_of(datasets='[\n  "orders",\n  "../customers",\n]')
    expect_one(tmp_path, text, line_of(text, "datasets") + 2, "datasets[1]")


def test_repeated_dataset(tmp_path: Path) -> None:
    text = text_of(datasets='["orders", "orders"]')
    expect_one(tmp_path, text, line_of(text, "datasets"), "repeats 'orders'")


def test_datasets_must_be_a_list(tmp_path: Path) -> None:
    text = text_of(datasets='"orders"')
    expect_one(tmp_path, text, line_of(text, "datasets"), "must be a list")


def test_retire_on_must_be_a_date(tmp_path: Path) -> None:
    text = text_of(retire_on='"2027-06-30"')
    expect_one(tmp_path, text, line_of(text, "retire_on"), "TOML date")


def test_retire_on_must_not_carry_a_time(tmp_path: Path) -> None:
    text = text_of(retire_on="2027-06-30T00:00:00Z")
    expect_one(tmp_path, text, line_of(text, "retire_on"), "TOML date")


def test_toml_syntax_error(tmp_path: Path) -> None:
    text = text_of(datasets='["orders"')
    expect_one(tmp_path, text, line_of(text, "datasets") + 1, "TOML syntax")


def test_key_declared_twice(tmp_path: Path) -> None:
    text = text_of() + 'risk = "high"\n'
    expect_one(tmp_path, text, len(text.splitlines()), "'risk' is declared twice")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "nightly-job-dev.toml"
    path.write_bytes(text_of().encode() + b"# caf\xe9\n")
    assert refused(path) == [f"{path}:14: not valid UTF-8"]


def test_every_problem_in_a_file_is_reported_in_line_order(tmp_path: Path) -> None:
    text = text_of(owner='"nobody"', max_uses="0", colour='"blue"')
    path = write(tmp_path, text)
    problems = refused(path)
    assert [p.split(":")[1] for p in problems] == [
        str(line_of(text, "owner")),
        str(line_of(text, "max_uses")),
        str(line_of(text, "colour")),
    ]


def test_parse_identity_needs_no_file(tmp_path: Path) -> None:
    identity = parse_identity(text_of().encode(), Path("x/nightly-job-dev.toml"))
    assert identity.name == "nightly-job-dev"


# -- key positions ---------------------------------------------------------------


def test_locate_keys_ignores_strings_comments_and_arrays() -> None:
    text = (
        'purpose = """\nrisk = "not a key"\n"""\n'
        "# owner = 'commented out'\n"
        'commands = [ # first\n  ["sh", "-c", "a = [1"],\n\n  ["ls"]]\n'
        "'task' = 'x' # quoted key\n"
        'name = "a # b"\n'
    )
    found, repeats = locate_keys(text)
    assert {k: v.line for k, v in found.items()} == {
        "purpose": 1,
        "commands": 5,
        "task": 9,
        "name": 10,
    }
    assert found["commands"].items == [6, 8]
    assert repeats == []


# -- the set ---------------------------------------------------------------------


def test_shared_environment_and_task(tmp_path: Path) -> None:
    write(tmp_path, text_of())
    other = text_of(name='"zz-nightly-job"')
    path = write(tmp_path, other, "zz-nightly-job.toml")
    result = check(tmp_path)
    assert not result.ok
    (problem,) = result.problems
    assert str(problem).startswith(f"{path}:{line_of(other, 'task')}: ")
    assert "already claimed by identity nightly-job-dev" in problem.message


def test_duplicate_names_across_subfolders(tmp_path: Path) -> None:
    first = write(tmp_path / "a", text_of())
    text = text_of(task='"other-job"')
    second = write(tmp_path / "b", text)
    result = check(tmp_path)
    (problem,) = result.problems
    assert problem.path == second and problem.line == line_of(text, "name")
    assert f"already declared at {first}:{line_of(text, 'name')}" in problem.message


def test_set_collects_file_problems(tmp_path: Path) -> None:
    write(tmp_path, text_of())
    bad = write(tmp_path, text_of(name='"b"', task='"b"', risk='"odd"'), "b.toml")
    result = check(tmp_path)
    assert [i.name for i in result.identities] == ["nightly-job-dev"]
    assert [(p.path, p.line) for p in result.problems] == [(bad, 9)]


def test_empty_folder_fails(tmp_path: Path) -> None:
    result = check(tmp_path)
    assert not result.ok
    assert str(result.problems[0]) == f"{tmp_path}: no *.toml declarations found"


def test_missing_folder_is_a_media_error(tmp_path: Path) -> None:
    from kit.errors import MediaError

    with pytest.raises(MediaError):
        check(tmp_path / "absent")


def test_symlinked_declaration_is_refused(tmp_path: Path) -> None:
    real = write(tmp_path / "elsewhere", text_of())
    folder = tmp_path / "bundles"
    folder.mkdir()
    os.symlink(real, folder / "nightly-job-dev.toml")
    (problem,) = check(folder).problems
    assert problem.line == 1 and "symbolic link" in problem.message


def test_oversized_declaration_is_refused(tmp_path: Path) -> None:
    write(tmp_path, text_of() + "#" * 70_000 + "\n")
    (problem,) = check(tmp_path).problems
    assert problem.line == 1 and "cap" in problem.message


def test_retired_identity_is_a_note_not_a_failure(tmp_path: Path) -> None:
    text = text_of(retire_on="2026-01-15")
    path = write(tmp_path, text)
    before = check(tmp_path, now=NOW - 13 * 3600)
    assert before.ok and before.retired == ()
    after = check(tmp_path, now=NOW)
    assert after.ok
    (note,) = after.retired
    assert (note.path, note.line) == (path, line_of(text, "retire_on"))
    assert "retired on 2026-01-15" in note.message


# -- the shipped examples ----------------------------------------------------------


def test_shipped_examples_pass() -> None:
    result = check(SHIPPED)
    assert result.ok, [str(p) for p in result.problems]
    names = {i.name: i for i in result.identities}
    assert set(names) == {
        "release-publish-ci",
        "release-publish-prod",
        "nightly-migration-dev",
        "nightly-migration-prod",
        "nightly-export-prod",
        "test-harness-dev",
    }
    prod = names["release-publish-prod"]
    assert (prod.environment, prod.risk, prod.approvals) == ("prod", "high", 2)
    assert all(i.owner.endswith("@example.com") for i in result.identities)


# -- the CLI -------------------------------------------------------------------------


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(policy_app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_check_clean_exits_0() -> None:
    code, out, err = cli("check", str(SHIPPED))
    assert code == 0, err
    # retirement dates pass with time; a retired identity is only a note
    assert all(line.endswith("(note)") for line in out.splitlines())
    assert "6 declaration(s), 6 valid, 0 problem(s)" in err


def test_cli_check_problems_exit_1_with_file_and_line(tmp_path: Path) -> None:
    text = text_of(max_uses="5000")
    path = write(tmp_path, text)
    code, out, err = cli("check", str(tmp_path))
    assert code == 1
    assert out.startswith(f"{path}:{line_of(text, 'max_uses')}: max_uses must be")
    assert "1 problem(s) in 1 file(s)" in err


def test_cli_check_json(tmp_path: Path) -> None:
    write(tmp_path, text_of(environment='["dev"]'))
    code, out, _ = cli("check", str(tmp_path), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert report["problems"][0]["line"] == 5
    code, out, _ = cli("check", str(SHIPPED), "--json")
    assert code == 0 and len(json.loads(out)["identities"]) == 6


def test_cli_check_unreadable_folder_exits_4(tmp_path: Path) -> None:
    code, _, err = cli("check", str(tmp_path / "absent"))
    assert code == 4
    assert "not a folder" in err


def test_cli_show(tmp_path: Path) -> None:
    code, out, _ = cli("show", "release-publish-prod", "--dir", str(SHIPPED))
    assert code == 0
    assert "risk:         high, 2 approval(s) required" in out.splitlines()
    assert out.splitlines()[0] == "name:         release-publish-prod"
    assert "\\x0a" not in out  # one row per line, not escaped newlines
    code, out, _ = cli("show", "test-harness-dev", "--dir", str(SHIPPED), "--json")
    assert code == 0
    assert json.loads(out)["commands"] == [
        ["python3", "-m", "pytest", "tests/integration"]
    ]


def test_cli_show_refusals(tmp_path: Path) -> None:
    assert cli("show", "absent", "--dir", str(SHIPPED))[0] == 2
    assert cli("show", "../etc/passwd", "--dir", str(SHIPPED))[0] == 2
    write(tmp_path, text_of(max_uses="0"))
    code, _, err = cli("show", "nightly-job-dev", "--dir", str(tmp_path))
    assert code == 3
    assert "max_uses" in err
