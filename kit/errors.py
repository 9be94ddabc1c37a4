"""The error hierarchy. The library raises these; only ``kit.cli`` maps them to
exit codes and prints them.

Before a signature is verified, failures carry one uniform message
(:class:`UnauthenticatedError`) so that a forger learns nothing about which
byte was wrong. After it, :class:`DeniedError` says exactly what failed and by
how much.
"""

from __future__ import annotations


class KitError(Exception):
    """Root of every error kit raises on purpose.

    ``evidence`` is the refused input, when there is one, so that a host can
    record its digest in a denial receipt.
    """

    evidence: bytes = b""


def restated(exc: KitError, where: object, evidence: bytes = b"") -> KitError:
    """The same kind of error (so the same exit code and reason code), its
    message prefixed with where it happened and suffixed "nothing imported"."""
    new = exc.__class__.__new__(exc.__class__)
    new.__dict__.update(exc.__dict__)
    new.args = (f"{where}: {exc}; nothing imported",)
    new.evidence = evidence or exc.evidence
    return new


class UsageError(KitError):
    """The caller asked for something that makes no sense (bad flag value)."""


class FormatError(KitError):
    """Input bytes are not a well-formed, canonical object of the expected type."""


class UnauthenticatedError(KitError):
    """The object is not signed by a key the pinned trust root trusts for it.

    Deliberately uniform: the message never says which check failed.
    """

    def __init__(self, what: str = "object") -> None:
        super().__init__(f"{what} is not validly signed by a trusted key")
        self.what = what


class DeniedError(KitError):
    """A verified bundle does not allow this use. ``code`` is a stable reason code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class MediaError(KitError):
    """Reading or writing a file or folder failed, or media content is inconsistent
    with its manifest. ``reason`` is the reason code a host records for it:
    ``unreadable``, or ``media-mismatch`` for media that disagrees with its
    own manifest (FORMAT.md 5.5)."""

    reason: str = "unreadable"


def media_mismatch(message: str, evidence: bytes = b"") -> MediaError:
    """Media that disagrees with its manifest: a file whose digest differs
    (``evidence``, its bytes), or one the manifest does not list."""
    exc = MediaError(message)
    exc.reason = "media-mismatch"
    exc.evidence = evidence
    return exc


class HomeError(KitError):
    """A kit home is missing, uninitialised, of the wrong kind, has unsafe
    permissions, or the passphrase does not open its key."""


class JournalError(KitError):
    """A receipt could not be written durably; nothing may be released."""
