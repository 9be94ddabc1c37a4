"""Reconciliation of receipts against the issuance ledger."""
