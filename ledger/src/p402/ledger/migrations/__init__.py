"""The ledger's Alembic migrations; :func:`p402.ledger.database.migrate` applies them."""
