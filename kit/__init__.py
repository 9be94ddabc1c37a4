"""kit: narrow, short-lived, host-bound credentials for offline hosts."""

__version__ = "0.1.0"
