"""SHA256SUMS manifest for a media folder (FORMAT.md 10): one line per file,
``<64 lowercase hex>  <name>\\n``, names from a fixed safe alphabet, sorted."""

from __future__ import annotations

import re

from kit.errors import FormatError

NAME = "SHA256SUMS"
CAP = 1 << 20
FILE_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
_LINE_RE = re.compile(r"([0-9a-f]{64})  ([a-z0-9][a-z0-9._-]{0,99})")


def render(entries: dict[str, str]) -> bytes:
    return "".join(f"{entries[n]}  {n}\n" for n in sorted(entries)).encode("ascii")


def parse(data: bytes) -> dict[str, str]:
    if len(data) > CAP:
        raise FormatError(f"{NAME} is {len(data)} bytes, over the {CAP}-byte cap")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise FormatError(f"{NAME} is not ASCII") from None
    if text and not text.endswith("\n"):
        raise FormatError(f"{NAME} does not end with a newline (truncated?)")
    entries: dict[str, str] = {}
    previous = ""
    for n, line in enumerate(text.split("\n")[:-1], 1):
        m = _LINE_RE.fullmatch(line)
        if not m:
            raise FormatError(f"{NAME} line {n} is not '<sha256>  <name>' (LF ends)")
        digest, name = m.groups()
        if name <= previous:
            raise FormatError(f"{NAME} line {n}: {name} is duplicated or not sorted")
        previous = name
        entries[name] = digest
    return entries
