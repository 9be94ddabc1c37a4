"""Storage behind small interfaces of kit's own (``base``), so that a server
database can replace SQLite for teams without touching callers."""
