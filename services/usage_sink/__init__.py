"""Usage sink: ``llm.usage`` -> newline-delimited JSON on S3, effectively once (``ledger``)."""
