"""Alembic environment of pci_vgpu.

The caller (``pci_vgpu.db.migration``) passes either an open connection in
``config.attributes["connection"]`` or a URL in ``sqlalchemy.url``; nothing
is read from a file, so no password ever lands in an ini file or a log.
"""

from __future__ import annotations

from alembic import context
import sqlalchemy as sa

from pci_vgpu.db import models

TARGET_METADATA = models.Base.metadata


def _run(connection: sa.Connection) -> None:
    # render_as_batch: SQLite can only ALTER a column by copying the table.
    context.configure(connection=connection,
                      target_metadata=TARGET_METADATA,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"),
                              poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("pci_vgpu migrations run online only")
run_migrations_online()
