"""The P402 receiver: OTLP spans in, idempotent, privacy-filtered ledger rows out."""
