"""The P402 ledger: economic events and their owners on SQLite or PostgreSQL."""
