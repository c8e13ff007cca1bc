"""The ledger database of the operator's commands (``serve``, ``migrate``, ``keys create``,
``tenant delete``): connected and migrated, or a one-line error that names it and says why."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["ledger", "redact_url"]


def redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{location}"


def ledger(url: str | None = None) -> Engine:
    """The ledger at ``url`` (default: ``P402_DATABASE_URL``), connected and migrated; a
    database that cannot be one raises :class:`click.ClickException` naming it and the cause
    (an unreadable URL, a driver that is not installed, a server that does not answer, a file
    that cannot be opened, a schema newer than this P402)."""
    from alembic.util.exc import CommandError
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from p402.ledger.database import connect, database_url, in_memory, migrate

    url = url or database_url()
    where = f"the ledger database {redact_url(url)} (P402_DATABASE_URL)"
    try:
        if in_memory(make_url(url)):
            raise click.ClickException(
                f"{where} is in memory: each connection would see an empty ledger of its own; "
                "name a file, e.g. sqlite:///p402.db"
            )
        engine = connect(url)
        migrate(engine)
    except (SQLAlchemyError, CommandError, ImportError) as error:
        cause = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise click.ClickException(f"{where} cannot be used: {cause}") from None
    return engine
