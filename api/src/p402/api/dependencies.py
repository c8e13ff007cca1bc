"""The names handlers receive by dependency injection, with their types."""

from __future__ import annotations

from typing import TypeAlias

from litestar.di import NamedDependency
from sqlalchemy import Engine

from p402.ledger.events import EventFilter
from p402.ledger.keys import Identity

__all__ = ["CallerIdentity", "LedgerEngine", "QueryFilter"]

LedgerEngine: TypeAlias = NamedDependency[Engine]
CallerIdentity: TypeAlias = NamedDependency[Identity]
QueryFilter: TypeAlias = NamedDependency[EventFilter]
