"""Run the alembic migrations of ``migrations/`` against a database.

The scripts live in ``migrations/`` at the repository root (next to the
``pci_vgpu`` package directory), not inside the package: :func:`script_location`
computes that path from ``pci_vgpu.__file__`` (``<root>/pci_vgpu/__init__.py``
-> ``<root>/migrations``), so an editable install and a source checkout both
find them; ``PCI_VGPU_MIGRATIONS`` overrides it for other layouts.  The
alembic ``Config`` is built in memory: no ini file, no URL with a password
written anywhere.
"""

from __future__ import annotations

import os
import pathlib

from alembic import command
from alembic import config as alembic_config
from alembic import migration as alembic_migration
from alembic import script as alembic_script
import sqlalchemy as sa

import pci_vgpu
from pci_vgpu.db import exception as db_exc

HEAD = "head"


def script_location() -> str:
    """Return the directory holding ``env.py`` and ``versions/``."""
    override = os.environ.get("PCI_VGPU_MIGRATIONS")
    if override:
        return override
    return str(pathlib.Path(pci_vgpu.__file__).resolve().parent.parent / "migrations")


def _config(connection: sa.Connection) -> alembic_config.Config:
    cfg = alembic_config.Config()
    cfg.set_main_option("script_location", script_location())
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: sa.Engine, revision: str = HEAD) -> None:
    """Upgrade the schema of ``engine``'s database to ``revision``."""
    with engine.begin() as conn:
        command.upgrade(_config(conn), revision)


def downgrade(engine: sa.Engine, revision: str) -> None:
    """Downgrade to ``revision`` ("base" drops every table).

    Checked before anything runs: MariaDB commits each DDL statement, so a
    refusal half-way down would leave a schema that matches no revision.

    :raises: DowngradeBlocked when rows cannot be represented below it.
    """
    with engine.begin() as conn:
        _check_vgpu_rows_fit(conn, revision)
        command.downgrade(_config(conn), revision)


def _check_vgpu_rows_fit(conn: sa.Connection, revision: str) -> None:
    """Refuse to go below 0002 while live address-less (vGPU) rows exist."""
    if revision not in ("base", "0001"):
        return
    columns = {c["name"] for c in sa.inspect(conn).get_columns("pci_devices")}
    if "device_key" not in columns:
        return
    live = conn.execute(sa.text(
        "SELECT COUNT(*) FROM pci_devices "
        "WHERE address IS NULL AND deleted = 0")).scalar_one()
    if live:
        raise db_exc.DowngradeBlocked(
            revision="0002",
            reason="%d live pci_devices rows have no PCI address (vGPUs); "
                   "free them first" % live)


def stamp(engine: sa.Engine, revision: str) -> None:
    """Record ``revision`` as current without running anything.

    Used to adopt a table created by Nova (stamp ``0001``, then upgrade).
    """
    with engine.begin() as conn:
        command.stamp(_config(conn), revision)


def current(engine: sa.Engine) -> str | None:
    """Return the database's revision, or None if it was never migrated."""
    with engine.connect() as conn:
        return alembic_migration.MigrationContext.configure(conn).get_current_revision()


def revisions() -> list[str]:
    """Every revision, oldest first."""
    cfg = alembic_config.Config()
    cfg.set_main_option("script_location", script_location())
    scripts = alembic_script.ScriptDirectory.from_config(cfg)
    return [s.revision for s in reversed(list(scripts.walk_revisions()))]
