"""Every refusal of ``kit verify`` / ``kit run``, fed the bad input it exists for.

Each refusal must: raise (library) or exit (CLI) with its reason, keep the
secret from the child and from every output, leave a signed denial receipt
naming the reason, and consume nothing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import (
    CHILD,
    DAY,
    T0,
    TASK,
    Issued,
    World,
    child_argv,
    quote,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kit import encoding
from kit.errors import (
    DeniedError,
    FormatError,
    KitError,
    MediaError,
    UnauthenticatedError,
)
from kit.formats import bundle as bundle_fmt
from kit.formats.envelope import seal_envelope
from kit.host.policy import DEFAULT_LEEWAY


@dataclass
class Bad:
    """One bad input and the refusal it must meet."""

    data: bytes
    exc: type[KitError]
    code: str  # reason code in the denial receipt (and [code] for DeniedError)
    bundle_id: str  # as the denial receipt must name it; "" before authentication
    secret: bytes
    command: tuple[str, ...]
    task: str = TASK
    message: str = ""  # expected in the CLI's stderr, besides [code]
    path: Path | None = None  # a prepared bundle path (FIFO, symlink)
    before: Callable[[], None] = field(default=lambda: None)


def _deny(
    i: Issued, exc: type[KitError], code: str, out: Path, *, authenticated: bool = True
) -> Bad:
    return Bad(
        data=i.data,
        exc=exc,
        code=code,
        bundle_id=i.claims.bundle_id if authenticated else "",
        secret=i.secret,
        command=child_argv(out),
    )


def wrong_host(w: World, out: Path) -> Bad:
    # Sealed to and naming build-02, presented at build-01.
    return _deny(w.issue("build-02"), DeniedError, "wrong-host", out)


def wrong_env(w: World, out: Path) -> Bad:
    # Genuinely signed, names build-01 and its key, but env "dev".
    i = w.forge(w.signer.key, env="dev")
    return _deny(i, DeniedError, "wrong-env", out)


def wrong_task(w: World, out: Path) -> Bad:
    bad = _deny(w.issue(), DeniedError, "wrong-task", out)
    bad.task = "other-task"
    return bad


def command_not_allowed(w: World, out: Path) -> Bad:
    bad = _deny(w.issue(), DeniedError, "command-not-allowed", out)
    # Same interpreter, another script: would still write the secret if run.
    script = 'printf %s "$KIT_SECRET" > "$0"; echo smuggled'
    bad.command = ("sh", "-c", script, str(out))
    return bad


def expired(w: World, out: Path) -> Bad:
    i = w.issue(now=T0 - 10 * DAY, ttl=3600)
    return _deny(i, DeniedError, "expired", out)


def not_yet_valid(w: World, out: Path) -> Bad:
    i = w.issue(not_before=T0 + 10 * DAY, ttl=3600)
    return _deny(i, DeniedError, "not-yet-valid", out)


def uses_exhausted(w: World, out: Path) -> Bad:
    i = w.issue(max_uses=1)
    h = w.host()
    try:
        release = h.authorize(i.data, task=TASK, command=CHILD, now=T0)
        assert release.use == 1
    finally:
        h.close()
    return _deny(i, DeniedError, "uses-exhausted", out)


def untrusted_signer(w: World, out: Path) -> Bad:
    # A well-formed bundle for build-01, signed by a key not in its trust root.
    i = w.issue(by=w.attacker)
    bad = _deny(i, UnauthenticatedError, "unauthenticated", out, authenticated=False)
    bad.message = "not validly signed by a trusted key"
    return bad


def _two_bundles(w: World) -> tuple[Issued, bundle_fmt.Bundle, bundle_fmt.Bundle]:
    a, b = w.issue(), w.issue()
    return a, bundle_fmt.parse_bundle(a.data), bundle_fmt.parse_bundle(b.data)


def splice_unsigned(w: World, out: Path) -> Bad:
    # B's ciphertext under A's claims, A's signature kept as it was.
    a, pa, pb = _two_bundles(w)
    body = bundle_fmt.encode_body(pa.claims_bytes, pb.sealed)
    sigs = [[kid, sig] for kid, sig in pa.envelope.signatures]
    data = encoding.encode([bundle_fmt.LABEL, body, sigs])
    bad = _deny(a, UnauthenticatedError, "unauthenticated", out, authenticated=False)
    bad.data = data
    bad.message = "not validly signed by a trusted key"
    return bad


def splice_resigned(w: World, out: Path) -> Bad:
    # The same splice, re-signed with the genuine issuer key: every signature
    # and scope check passes; only the HPKE info binding to the claims fails.
    a, pa, pb = _two_bundles(w)
    body = bundle_fmt.encode_body(pa.claims_bytes, pb.sealed)
    bad = _deny(a, DeniedError, "seal-mismatch", out)
    bad.data = seal_envelope(bundle_fmt.LABEL, body, [w.signer.key])
    return bad


def sealed_to_other_host(w: World, out: Path) -> Bad:
    # Claims name build-01, but the secret is sealed to build-02's key.
    i = w.forge(w.signer.key, host="build-01", seal_to="build-02")
    return _deny(i, DeniedError, "seal-mismatch", out)


def flipped_byte(w: World, out: Path) -> Bad:
    i = w.issue()
    data = bytearray(i.data)
    data[len(data) // 3] ^= 0x01  # inside the signed claims
    bad = _deny(i, UnauthenticatedError, "unauthenticated", out, authenticated=False)
    bad.data = bytes(data)
    bad.message = "not validly signed by a trusted key"
    return bad


def truncated(w: World, out: Path) -> Bad:
    i = w.issue()
    bad = _deny(i, FormatError, "malformed", out, authenticated=False)
    bad.data = i.data[: len(i.data) - 7]
    bad.message = "malformed"
    return bad


# Cases that reach the library unchanged (bytes in memory).
CASES: dict[str, Callable[[World, Path], Bad]] = {
    f.__name__: f
    for f in (
        wrong_host,
        wrong_env,
        wrong_task,
        command_not_allowed,
        expired,
        not_yet_valid,
        uses_exhausted,
        untrusted_signer,
        splice_unsigned,
        splice_resigned,
        sealed_to_other_host,
        flipped_byte,
        truncated,
    )
}


# Cases about the bundle file itself: refused before a byte is parsed.
def oversized(w: World, out: Path) -> Bad:
    # Too large to be a bundle: malformed input, refused before it is read.
    i = w.issue()
    bad = _deny(i, FormatError, "malformed", out, authenticated=False)
    bad.data = i.data + bytes(bundle_fmt.CAP)
    bad.message = "cap"
    return bad


def fifo(w: World, out: Path) -> Bad:
    # A FIFO holds no valid bundle: malformed input, refused without reading.
    i = w.issue()
    bad = _deny(i, FormatError, "malformed", out, authenticated=False)
    bad.path = out.parent / "bundle.fifo"
    os.mkfifo(bad.path)
    bad.message = "not a regular file"
    return bad


def symlink(w: World, out: Path) -> Bad:
    # The link points at a genuine, valid bundle: the link itself is refused.
    i = w.issue()
    bad = _deny(i, MediaError, "unreadable", out, authenticated=False)
    target = out.parent / "real.kit"
    target.write_bytes(i.data)
    bad.path = out.parent / "link.kit"
    bad.path.symlink_to(target)
    bad.message = "symbolic link"
    return bad


CLI_CASES = {**CASES, "oversized": oversized, "fifo": fifo, "symlink": symlink}

VERIFY_EXIT = {DeniedError: 1, UnauthenticatedError: 1, FormatError: 3, MediaError: 4}
RUN_EXIT = {DeniedError: 120, UnauthenticatedError: 120, FormatError: 121}
RUN_EXIT[MediaError] = 122


def _assert_denied_on_record(
    w: World,
    before: int,
    uses: list[tuple[object, ...]],
    bad: Bad,
    action: str,
) -> None:
    receipts = w.receipts()
    assert len(receipts) == before + 1, "exactly one receipt for one decision"
    last = receipts[-1]
    assert last.event == "deny"
    assert last.action == action
    assert last.reason == bad.code
    assert last.bundle_id == bad.bundle_id
    assert last.task == bad.task
    assert last.command == bad.command
    assert last.use == 0
    assert w.uses() == uses, "a refusal must consume nothing"


# -- library ------------------------------------------------------------------


@pytest.mark.parametrize("action", ["verify", "run"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_library_refusal(world: World, tmp_path: Path, case: str, action: str) -> None:
    bad = CASES[case](world, tmp_path / "out")
    before, uses = len(world.receipts()), world.uses()
    host = world.host()
    try:
        with pytest.raises(KitError) as err:
            if action == "run":
                host.authorize(bad.data, task=bad.task, command=bad.command, now=T0)
            else:
                host.check(bad.data, task=bad.task, command=bad.command, now=T0)
    finally:
        host.close()
    assert type(err.value) is bad.exc, err.value
    if isinstance(err.value, DeniedError):
        assert err.value.code == bad.code
    assert bad.secret not in str(err.value).encode()
    assert bad.secret not in repr(err.value).encode()
    _assert_denied_on_record(world, before, uses, bad, action)


def test_library_release_delivers_secret_and_records_exit(world: World) -> None:
    i = world.issue(max_uses=2)
    host = world.host()
    try:
        release = host.authorize(i.data, task=TASK, command=CHILD, now=T0)
        assert release.secret == i.secret
        assert release.use == 1
        assert i.secret not in repr(release).encode()
        host.record_exit(release, status=7, duration_ms=12, now=T0 + 1)
    finally:
        host.close()
    *_, rel, ex = world.receipts()
    assert (rel.event, rel.use, rel.bundle_id, rel.reason) == (
        "release",
        1,
        i.claims.bundle_id,
        "",
    )
    assert rel.bundle_digest == hashlib.sha256(i.data).digest()
    assert (ex.event, ex.exit_status, ex.duration_ms) == ("exit", 7, 12)
    assert [u[:2] for u in world.uses()] == [(i.claims.bundle_id, 1)]
    for f in world.host_home("build-01").rglob("*"):
        if f.is_file():
            assert i.secret not in f.read_bytes(), f"secret in clear in {f}"


def test_check_consumes_nothing_and_writes_nothing(world: World) -> None:
    i = world.issue(max_uses=1)
    host = world.host()
    try:
        for _ in range(3):
            v = host.check(i.data, task=TASK, command=CHILD, now=T0)
            assert v.claims.bundle_id == i.claims.bundle_id
        assert host.authorize(i.data, task=TASK, command=CHILD, now=T0).use == 1
    finally:
        host.close()
    assert [r.event for r in world.receipts()] == ["release"]


def _check(w: World, i: Issued, now: int) -> None:
    host = w.host()
    try:
        host.check(i.data, task=TASK, command=CHILD, now=now)
    finally:
        host.close()


def test_expiry_boundary_with_leeway(world: World) -> None:
    i = world.issue(now=T0, ttl=600)
    _check(world, i, i.claims.expires_at + DEFAULT_LEEWAY)
    with pytest.raises(DeniedError) as err:
        _check(world, i, i.claims.expires_at + DEFAULT_LEEWAY + 1)
    assert err.value.code == "expired"
    assert "31 s ago" in str(err.value)


def test_not_before_boundary_with_leeway(world: World) -> None:
    i = world.issue(now=T0, not_before=T0 + 3600, ttl=600)
    with pytest.raises(DeniedError) as err:
        _check(world, i, i.claims.not_before - DEFAULT_LEEWAY - 1)
    assert err.value.code == "not-yet-valid"
    _check(world, i, i.claims.not_before - DEFAULT_LEEWAY)


def test_every_flipped_byte_is_refused(world: World) -> None:
    """Flip each byte of a small bundle in turn: no flip is ever released."""
    i = world.issue(secret=b"x", commands=(("true",),))
    before = len(world.receipts())
    host = world.host()
    try:
        for pos in range(len(i.data)):
            data = bytearray(i.data)
            data[pos] ^= 0xFF
            with pytest.raises((FormatError, UnauthenticatedError)):
                host.authorize(bytes(data), task=TASK, command=("true",), now=T0)
        # Control: the untouched bundle was valid all along.
        assert host.authorize(i.data, task=TASK, command=("true",), now=T0).use == 1
    finally:
        host.close()
    receipts = world.receipts()[before:]
    denials, release = receipts[:-1], receipts[-1]
    assert len(denials) == len(i.data)
    assert {r.event for r in denials} == {"deny"}
    assert {r.reason for r in denials} <= {"malformed", "unauthenticated"}
    assert {r.bundle_id for r in denials} == {""}
    assert release.event == "release"
    assert [u[:2] for u in world.uses()] == [(i.claims.bundle_id, 1)]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(pos=st.integers(min_value=0), mask=st.integers(min_value=1, max_value=255))
def test_any_single_byte_change_is_refused(
    world: World, bundle_cache: dict[str, Issued], pos: int, mask: int
) -> None:
    if "i" not in bundle_cache:
        bundle_cache["i"] = world.issue()
    i = bundle_cache["i"]
    data = bytearray(i.data)
    data[pos % len(data)] ^= mask
    host = world.host()
    try:
        with pytest.raises((FormatError, UnauthenticatedError)) as err:
            host.authorize(bytes(data), task=TASK, command=CHILD, now=T0)
    finally:
        host.close()
    assert i.secret not in str(err.value).encode()
    assert world.uses() == []


@pytest.fixture
def bundle_cache() -> dict[str, Issued]:
    return {}


def test_read_bundle_refuses_files_that_are_not_plain_bundles(
    world: World, tmp_path: Path
) -> None:
    i = world.issue()
    real = tmp_path / "real.kit"
    real.write_bytes(i.data)
    link = tmp_path / "link.kit"
    link.symlink_to(real)
    pipe = tmp_path / "pipe.kit"
    os.mkfifo(pipe)
    big = tmp_path / "big.kit"
    big.write_bytes(i.data + bytes(bundle_fmt.CAP))
    host = world.host()
    try:
        assert host.read_bundle(real) == i.data
        for path, why in (
            (link, "symbolic link"),
            (tmp_path / "missing.kit", "no such file"),
        ):
            with pytest.raises(MediaError, match=why):
                host.read_bundle(path)
        with pytest.raises(FormatError, match="not a regular file"):
            host.read_bundle(pipe)
        with pytest.raises(FormatError, match="over the 65536-byte cap"):
            host.read_bundle(big)
        # Oversized bytes that reach the parser anyway are refused too.
        with pytest.raises(FormatError):
            host.authorize(big.read_bytes(), task=TASK, command=CHILD, now=T0)
    finally:
        host.close()
    assert world.uses() == []


# -- CLI ----------------------------------------------------------------------


@pytest.mark.parametrize("action", ["verify", "run"])
@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_refusal(world: World, tmp_path: Path, case: str, action: str) -> None:
    out = tmp_path / "child-saw"
    bad = CLI_CASES[case](world, out)
    path = bad.path
    if path is None:
        path = tmp_path / "bundle.kit"
        path.write_bytes(bad.data)
    home = world.host_home("build-01")
    before, uses = len(world.receipts()), world.uses()
    if action == "verify":
        proc = world.kit(
            "verify", path, "--task", bad.task, "--command", quote(bad.command),
            "--home", home,
        )  # fmt: skip
        assert proc.returncode == VERIFY_EXIT[bad.exc], proc.stderr
    else:
        proc = world.kit(
            "run", path, "--task", bad.task, "--home", home, "--", *bad.command
        )
        assert proc.returncode == RUN_EXIT[bad.exc], proc.stderr
    stderr = proc.stderr.decode()
    if bad.exc is DeniedError:
        assert f"kit: denied [{bad.code}]:" in stderr
    else:
        assert bad.message in stderr
        assert ("kit: denied:" in stderr) == (bad.exc is UnauthenticatedError)
    assert "Traceback" not in stderr
    assert not out.exists(), "the child ran"
    assert bad.secret not in proc.stdout + proc.stderr
    _assert_denied_on_record(world, before, uses, bad, action)


def test_cli_run_delivers_exactly_the_secret_and_passes_status(
    world: World, tmp_path: Path
) -> None:
    i = world.issue(max_uses=2)
    path = tmp_path / "b.kit"
    path.write_bytes(i.data)
    home = world.host_home("build-01")
    out = tmp_path / "child-saw"
    proc = world.kit(
        "run", path, "--task", TASK, "--home", home, "--", *child_argv(out, 7)
    )
    assert proc.returncode == 7, proc.stderr
    assert out.read_bytes() == i.secret
    assert i.secret not in proc.stdout + proc.stderr
    assert f"released bundle {i.claims.bundle_id} (use 1 of 2)" in proc.stderr.decode()
    rel, ex = world.receipts()
    assert (rel.event, rel.action, rel.use) == ("release", "run", 1)
    assert (ex.event, ex.exit_status, ex.bundle_id) == ("exit", 7, i.claims.bundle_id)
    assert ex.command == child_argv(out, 7)

    # Second use, status 0; the staged-id form of the bundle argument.
    out.unlink()
    (home / "inbox" / f"{i.claims.bundle_id}.kit").write_bytes(i.data)
    proc = world.kit(
        "run", i.claims.bundle_id, "--task", TASK, "--home", home, "--",
        *child_argv(out, 0),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == i.secret
    assert [(r.event, r.use, r.exit_status) for r in world.receipts()[2:]] == [
        ("release", 2, 0),
        ("exit", 0, 0),
    ]
    assert len(world.uses()) == 2


def test_cli_verify_ok_releases_nothing(world: World, tmp_path: Path) -> None:
    i = world.issue()
    path = tmp_path / "b.kit"
    path.write_bytes(i.data)
    out = tmp_path / "child-saw"
    proc = world.kit(
        "verify", path, "--task", TASK, "--command", quote(child_argv(out)),
        "--home", world.host_home("build-01"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "would be released" in proc.stderr.decode()
    assert i.secret not in proc.stdout + proc.stderr
    assert not out.exists()
    assert world.receipts() == []
    assert world.uses() == []


def test_cli_run_command_not_found(world: World, tmp_path: Path) -> None:
    cmd = ("kit-test-no-such-command",)
    i = world.issue(commands=(cmd,))
    path = tmp_path / "b.kit"
    path.write_bytes(i.data)
    home = world.host_home("build-01")
    proc = world.kit("run", path, "--task", TASK, "--home", home, "--", *cmd)
    assert proc.returncode == 127, proc.stderr
    assert "[command-not-found]" in proc.stderr.decode()
    assert i.secret not in proc.stdout + proc.stderr
    [r] = world.receipts()
    assert (r.event, r.reason, r.bundle_id) == (
        "deny",
        "command-not-found",
        i.claims.bundle_id,
    )
    assert world.uses() == []


def test_secret_an_env_variable_cannot_carry_is_refused_before_use(
    world: World, tmp_path: Path
) -> None:
    """A NUL byte cannot be put in an environment variable: ``--deliver env``
    is refused with a reason before the use is counted; fd delivery works."""
    secret = b"tok\0en"
    i = world.issue(secret=secret, max_uses=1)
    out = tmp_path / "child-saw"
    home = world.host_home("build-01")
    bundle = tmp_path / "b.kit"
    bundle.write_bytes(i.data)
    proc = world.kit(
        "verify", bundle, "--task", TASK, "--deliver", "env", "--home", home
    )
    assert proc.returncode == 1, proc.stderr
    proc = world.kit(
        "run", bundle, "--task", TASK, "--home", home, "--", *child_argv(out)
    )
    assert proc.returncode == RUN_EXIT[DeniedError], proc.stderr
    assert b"[delivery-not-possible]" in proc.stderr and b"NUL byte" in proc.stderr
    assert not out.exists(), "the child ran"
    assert [(r.action, r.reason) for r in world.receipts()] == [
        ("verify", "delivery-not-possible"),
        ("run", "delivery-not-possible"),
    ]
    assert world.uses() == [], "a refusal must consume nothing"
    host = world.host()
    try:
        release = host.authorize(
            i.data, task=TASK, command=child_argv(out), now=T0, delivery="fd"
        )
    finally:
        host.close()
    assert release.secret == secret
