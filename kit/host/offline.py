"""The host side makes no network calls (security property 12): host
commands install an audit hook that refuses the creation of any socket in
the kit process. The child a release starts is a separate program and is
not affected; its network is the host's business (the tests run the host in
a namespace with no interfaces)."""

from __future__ import annotations

import sys
from typing import Any

from kit.errors import KitError

_installed = False


class NetworkForbiddenError(KitError):
    """Something in the kit host process tried to reach the network."""


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event in ("socket.__new__", "socket.connect", "socket.getaddrinfo"):
        raise NetworkForbiddenError(
            f"the offline host tried network access ({event}); refused"
        )


def forbid_network() -> None:
    """Refuse every socket from now on in this process (audit hooks cannot be
    removed, so this is for the host commands' processes only)."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True
