"""The offline side: host keys, the verifier, the receipt journal, the runner."""
