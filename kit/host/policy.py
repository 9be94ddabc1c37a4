"""Host policy: caps the host applies whatever a bundle says (docs/host.md).

``policy.toml`` in the host home, for example::

    environments = ["prod"]   # environments this host serves
    max_lifetime = "7d"       # longest not-before..expiry span accepted
    max_uses = 10             # most uses a bundle may carry
    leeway = 30               # seconds of clock skew allowed, 0 to 300
    risk_levels = ["low", "medium"]  # risk levels accepted; "high" opt-in

``kit host init`` writes one with the defaults below. A missing or invalid
file stops the host with an error naming the key, never a fallback to
permissive defaults.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

from kit import encoding
from kit.duration import parse_duration
from kit.errors import FormatError, HomeError, KitError
from kit.formats.bundle import MAX_LIFETIME, MAX_USES, RISKS
from kit.fsutil import check_not_writable_by_others, read_regular

FILE = "policy.toml"
MAX_LEEWAY = 300
DEFAULT_LEEWAY = 30
DEFAULT_MAX_LIFETIME = 7 * 86400
DEFAULT_MAX_USES = 100
# High-risk bundles need the host's explicit consent in its policy.
DEFAULT_RISKS = ("low", "medium")


class HostPolicy(NamedTuple):
    environments: tuple[str, ...]
    max_lifetime: int = DEFAULT_MAX_LIFETIME
    max_uses: int = DEFAULT_MAX_USES
    leeway: int = DEFAULT_LEEWAY
    risk_levels: tuple[str, ...] = DEFAULT_RISKS

    def to_toml(self) -> str:
        envs = ", ".join(f'"{e}"' for e in self.environments)
        risks = ", ".join(f'"{r}"' for r in self.risk_levels)
        return (
            "# kit host policy: caps applied whatever a bundle says.\n"
            f"environments = [{envs}]\n"
            f'max_lifetime = {self.max_lifetime}  # seconds, or a string like "7d"\n'
            f"max_uses = {self.max_uses}\n"
            f"leeway = {self.leeway}  # seconds, 0 to {MAX_LEEWAY}\n"
            f'risk_levels = [{risks}]  # add "high" to accept high-risk bundles\n'
        )


_KEYS = ("environments", "max_lifetime", "max_uses", "leeway", "risk_levels")


def _int(doc: dict[str, Any], key: str, lo: int, hi: int, default: int) -> int:
    value = doc.get(key, default)
    if isinstance(value, str) and key == "max_lifetime":
        try:
            value = parse_duration(value, key)
        except KitError as exc:
            raise HomeError(f"{FILE}: {exc}") from None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise HomeError(
            f"{FILE}: {key} must be an integer from {lo} to {hi}, got {value!r}"
        )
    return value


def parse_policy(text: str) -> HostPolicy:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HomeError(f"{FILE}: {exc}") from None
    unknown = sorted(set(doc) - {*_KEYS})
    if unknown:
        raise HomeError(f"{FILE}: unknown key(s) {', '.join(unknown)}")
    envs = doc.get("environments")
    if not isinstance(envs, list) or not envs:
        raise HomeError(f"{FILE}: environments must be a non-empty list of names")
    try:
        checked = tuple(
            encoding.check_text(e, "environment", encoding.NAME_RE) for e in envs
        )
    except FormatError as exc:
        raise HomeError(f"{FILE}: {exc}") from None
    risks = doc.get("risk_levels", list(DEFAULT_RISKS))
    if (
        not isinstance(risks, list)
        or any(r not in RISKS for r in risks)
        or len(set(risks)) != len(risks)
    ):
        raise HomeError(
            f"{FILE}: risk_levels must be a list of distinct levels from "
            + ", ".join(RISKS)
        )
    return HostPolicy(
        risk_levels=tuple(risks),
        environments=checked,
        max_lifetime=_int(doc, "max_lifetime", 60, MAX_LIFETIME, DEFAULT_MAX_LIFETIME),
        max_uses=_int(doc, "max_uses", 1, MAX_USES, DEFAULT_MAX_USES),
        leeway=_int(doc, "leeway", 0, MAX_LEEWAY, DEFAULT_LEEWAY),
    )


def load_policy(home: Path) -> HostPolicy:
    """The policy in ``home``. A missing or invalid file stops the host."""
    path = home / FILE
    if os.path.lexists(path):
        check_not_writable_by_others(path)  # a loosened policy must not load
    try:
        text = read_regular(path, 64 * 1024, "host policy").decode("utf-8")
    except (KitError, UnicodeDecodeError) as exc:
        raise HomeError(
            f"{path}: cannot be read ({exc}); restore it (kit host init writes one)"
        ) from None
    return parse_policy(text)
