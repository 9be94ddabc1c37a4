"""The online side: signing keys, enrollment, issuance and the ledger."""
