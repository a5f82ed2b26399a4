"""Audit sink: ``llm.audit`` -> append-only, hash-chained objects on S3 (``ledger``, ``chain``)."""
