"""The ingest policy of a tenant, read from the ledger."""

from __future__ import annotations

from sqlalchemy import Engine

from p402.instrumentation.privacy import Redactor
from p402.ledger.price_overrides import price_overrides
from p402.ledger.redaction import compiled_patterns
from p402.ledger.tenants import ingest_settings
from p402.receiver.conversion import IngestPolicy

__all__ = ["ingest_policy"]


def ingest_policy(engine: Engine, tenant_id: int) -> IngestPolicy:
    settings = ingest_settings(engine, tenant_id)
    return IngestPolicy(
        settings.max_privacy,
        fingerprint_key=settings.fingerprint_key,
        redactor=Redactor(compiled=compiled_patterns(settings.redact_patterns)),
        rates=price_overrides(engine, tenant_id),
        tenant_signing_key=settings.signing_key,
    )
