"""Tenant data deletion finds every table that holds a tenant's rows by itself."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    select,
)

from p402.ledger.erasure import erase_tenant, tenant_tables


def _schema() -> MetaData:
    """A tenant table, a table with tenant_id, and two levels of children without one."""
    metadata = MetaData()
    Table("tenant", metadata, Column("id", Integer, primary_key=True), Column("name", String))
    Table(
        "receipt",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("tenant_id", ForeignKey("tenant.id"), nullable=False),
    )
    Table(
        "receipt_line",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("receipt_id", ForeignKey("receipt.id"), nullable=False),
    )
    Table(
        "receipt_line_note",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("line_id", ForeignKey("receipt_line.id"), nullable=False),
    )
    Table("price_table", metadata, Column("id", Integer, primary_key=True))  # no tenant's
    return metadata


def test_rows_reached_only_through_foreign_keys_are_deleted_too(tmp_path):
    metadata = _schema()
    engine = create_engine(f"sqlite:///{tmp_path / 'erase.db'}")
    event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA foreign_keys=ON"))
    metadata.create_all(engine)
    t = metadata.tables
    with engine.begin() as connection:
        for tenant in (1, 2):
            connection.execute(t["tenant"].insert().values(id=tenant, name=f"t{tenant}"))
            connection.execute(t["receipt"].insert().values(id=tenant, tenant_id=tenant))
            connection.execute(t["receipt_line"].insert().values(id=tenant, receipt_id=tenant))
            connection.execute(t["receipt_line_note"].insert().values(id=tenant, line_id=tenant))
        connection.execute(t["price_table"].insert().values(id=1))

    assert [table.name for table in tenant_tables(metadata)] == [
        "receipt_line_note",
        "receipt_line",
        "receipt",
        "tenant",
    ]
    deleted = erase_tenant(engine, 1, metadata=metadata)

    assert deleted == {"receipt_line_note": 1, "receipt_line": 1, "receipt": 1, "tenant": 1}
    with engine.connect() as connection:
        for name in ("tenant", "receipt", "receipt_line", "receipt_line_note", "price_table"):
            assert connection.execute(select(func.count()).select_from(t[name])).scalar() == 1
        assert connection.execute(select(t["receipt_line_note"].c.id)).scalar() == 2
