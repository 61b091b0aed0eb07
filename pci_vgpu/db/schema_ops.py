"""Schema steps that can be repeated: what makes a killed migration repairable.

MariaDB commits every DDL statement on its own, so a process killed in the
middle of a revision leaves some of its tables, columns and indexes in
place while ``alembic_version`` still names the previous revision; running
the revision again then failed (``1060 Duplicate column name``, ``1050
Table ... already exists``) and the database stayed broken.  (SQLite and
PostgreSQL run a whole upgrade in one transaction: a kill leaves nothing.)

Every step of every revision therefore asks first whether its object
exists (a fresh inspector each time, so it sees the previous step).  Each
single DDL statement is atomic on all three databases, so "exists" means
"done": a repeated revision completes what is missing, logging a warning
that names the database and the revision, and the schema ends exactly as a
clean run leaves it.  ``pci_vgpu.db.migration`` only runs revisions on a
database whose ``alembic_version`` it recognises, so existing objects are
known to be pci_vgpu's own, never another service's.

Usage in a revision::

    steps = schema_ops.Steps(revision)

    def upgrade() -> None:
        if steps.missing_column("instances", "server_name"):
            op.add_column("instances", sa.Column("server_name", ...))
"""

from __future__ import annotations

from alembic import op
from oslo_log import log as logging
import sqlalchemy as sa

LOG = logging.getLogger(__name__)

#: alembic config attribute holding the database URL to name (masked).
SAFE_URL = "pci_vgpu_safe_url"


class Steps:
    """Existence checks for the steps of revision ``revision``."""

    def __init__(self, revision: str) -> None:
        self.revision = revision

    @staticmethod
    def _inspector() -> sa.Inspector:
        return sa.inspect(op.get_bind())

    def _found(self, what: str) -> None:
        config = op.get_context().config
        url = config.attributes.get(SAFE_URL, "?") if config else "?"
        LOG.warning("Database %(url)s: revision %(rev)s is half-applied "
                    "(%(what)s already exists: an upgrade was interrupted, or "
                    "runs on another Galera node); completing it",
                    {"url": url, "rev": self.revision, "what": what})

    def _missing(self, present: bool, what: str) -> bool:
        if present:
            self._found(what)
        return not present

    def tables(self) -> set[str]:
        return set(self._inspector().get_table_names())

    def columns(self, table: str) -> set[str]:
        return {c["name"] for c in self._inspector().get_columns(table)}

    def missing_table(self, table: str) -> bool:
        """True if ``table`` must still be created."""
        return self._missing(table in self.tables(), "table %s" % table)

    def missing_column(self, table: str, column: str) -> bool:
        return self._missing(column in self.columns(table),
                             "column %s.%s" % (table, column))

    def missing_index(self, table: str, name: str) -> bool:
        names = {i["name"] for i in self._inspector().get_indexes(table)}
        return self._missing(name in names, "index %s" % name)

    def _unique_names(self, table: str) -> set[str]:
        """Unique constraints, and unique indexes (MariaDB reports both)."""
        inspector = self._inspector()
        names = {str(u["name"]) for u in inspector.get_unique_constraints(table)}
        return names | {str(i["name"]) for i in inspector.get_indexes(table)
                        if i.get("unique")}

    def missing_unique(self, table: str, name: str) -> bool:
        """True if unique constraint ``name`` must still be created."""
        return self._missing(name in self._unique_names(table),
                             "unique key %s" % name)

    # Downgrades: a step whose object is already gone is skipped silently.

    def has_table(self, table: str) -> bool:
        return table in self.tables()

    def has_column(self, table: str, column: str) -> bool:
        return self.has_table(table) and column in self.columns(table)

    def has_unique(self, table: str, name: str) -> bool:
        return name in self._unique_names(table)

