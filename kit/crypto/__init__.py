"""Thin wrappers over standard primitives: Ed25519, X25519 HPKE, Argon2id."""
