"""Run the alembic migrations of ``migrations/``: safe to kill, safe to race.

Every process upgrades the schema on first use, so several may start on a
fresh database at once, and any of them may be killed half-way.  Three
mechanisms, each covering what the others cannot:

1. **Version check first.**  A database already at the target revision is
   only read (no lock, no write): the common case costs one query, and a
   read-only SQLite file still opens.  A revision this code does not know,
   or pci_vgpu's tables without any revision, are refused with the fix
   (:class:`SchemaUnknownRevision`, :class:`SchemaNotOurs`).
2. **One migrator at a time per database**: MariaDB ``GET_LOCK`` (named
   after the database; released by the server if the process dies),
   PostgreSQL ``pg_try_advisory_xact_lock`` in the upgrade's transaction,
   SQLite ``BEGIN IMMEDIATE`` (the database's write lock).  Waits are
   bounded by ``lock_wait_timeout`` (:class:`MigrationLockTimedOut`).  The
   waiter then finds the schema current and has nothing to do.
3. **Repeatable steps** (``pci_vgpu.db.schema_ops``): MariaDB commits each
   DDL statement, so a kill leaves a revision half-applied; the next run
   completes it (a warning names the database and the revision).  SQLite
   and PostgreSQL run the upgrade in one transaction: a kill leaves
   nothing.  On Galera ``GET_LOCK`` holds on one node only; migrators on
   other nodes may collide on a step or on ``alembic_version`` (``1050``,
   ``1060``, a certification deadlock): such a lost race is retried from
   the version check, a bounded number of times.

The scripts live in ``migrations/`` at the repository root (next to the
``pci_vgpu`` package directory), not inside the package:
:func:`script_location` computes that path from ``pci_vgpu.__file__``
(``<root>/pci_vgpu/__init__.py`` -> ``<root>/migrations``), so an editable
install and a source checkout both find them; ``PCI_VGPU_MIGRATIONS``
overrides it for other layouts.  The alembic ``Config`` is built in memory:
no ini file, no URL with a password written anywhere.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import random
import time
import typing as ty
import zlib

from alembic import command
from alembic import config as alembic_config
from alembic import migration as alembic_migration
from alembic import script as alembic_script
from alembic.util import exc as alembic_exc
from oslo_db import exception as oslo_db_exc
from oslo_log import log as logging
import sqlalchemy as sa

import pci_vgpu
from pci_vgpu import redact
from pci_vgpu.db import exception as db_exc
from pci_vgpu.db import schema_ops

LOG = logging.getLogger(__name__)

HEAD = "head"
#: Tables only pci_vgpu's revisions create (with alembic_version).
OWN_TABLES = frozenset({"compute_nodes", "pci_devices", "instances"})
_LOCK_NAME = "pci_vgpu.migrate"
#: PostgreSQL advisory locks are per database: one constant key suffices.
_PG_LOCK_KEY = zlib.crc32(_LOCK_NAME.encode())
#: Upgrades of one call: a lost race is retried from the version check.
ATTEMPTS = 8
# Errors a concurrent migrator causes (it created or changed it first; on
# Galera also 1412/1684, a table whose definition another node's DDL is
# changing at that moment, and 1317, a query that DDL aborted).
_MYSQL_RACE = {1022, 1050, 1060, 1061, 1062, 1091, 1213, 1317, 1412, 1684,
               1826}
_PG_RACE = {"23505", "40001", "40P01", "42701", "42710", "42P07"}


def script_location() -> str:
    """Return the directory holding ``env.py`` and ``versions/``."""
    override = os.environ.get("PCI_VGPU_MIGRATIONS")
    if override:
        return override
    return str(pathlib.Path(pci_vgpu.__file__).resolve().parent.parent / "migrations")


def _config(connection: sa.Connection, safe_url: str) -> alembic_config.Config:
    cfg = alembic_config.Config()
    cfg.set_main_option("script_location", script_location())
    cfg.attributes["connection"] = connection
    cfg.attributes[schema_ops.SAFE_URL] = safe_url
    return cfg


def _safe(engine: sa.Engine) -> str:
    return redact.mask_url(engine.url.render_as_string(hide_password=True))


def upgrade(engine: sa.Engine, revision: str = HEAD,
            safe_url: str | None = None, lock_wait_timeout: int = 30) -> None:
    """Upgrade the schema of ``engine``'s database to ``revision``.

    :raises: SchemaUnknownRevision, SchemaNotOurs, MigrationLockTimedOut,
        SchemaUpgradeFailed (naming the masked URL and the revisions);
        the :mod:`pci_vgpu.db.exception` errors of an unusable database.
    """
    url = safe_url or _safe(engine)
    target = revisions()[-1] if revision == HEAD else revision
    current: str | None = None
    for attempt in range(1, ATTEMPTS + 1):
        try:
            current = _check_schema(engine, url)
            if current == target:
                return
            _locked_upgrade(engine, revision, url, lock_wait_timeout)
            return
        except db_exc.DatabaseError:
            raise
        except Exception as exc:
            if not lost_race(exc) or attempt == ATTEMPTS:
                raise db_exc.SchemaUpgradeFailed(
                    url=url, current=current or "none", target=target,
                    detail=_detail(exc)) from exc
            LOG.info("Schema upgrade of %(url)s collided with another "
                     "process (%(err)s); trying again",
                     {"url": url, "err": _detail(exc)})
            time.sleep(random.uniform(0.05, 0.25) * attempt)


def _check_schema(engine: sa.Engine, url: str) -> str | None:
    """The recorded revision, after refusing a schema that is not ours.

    :raises: SchemaNotOurs, SchemaUnknownRevision.
    """
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        if "alembic_version" not in tables:
            if tables & OWN_TABLES:
                raise db_exc.SchemaNotOurs(
                    url=url, tables=", ".join(sorted(tables & OWN_TABLES)))
            return None
        current = alembic_migration.MigrationContext.configure(
            conn).get_current_revision()
    known = revisions()
    if current is not None and current not in known:
        raise db_exc.SchemaUnknownRevision(url=url, revision=current,
                                           known=", ".join(known))
    return current


def _locked_upgrade(engine: sa.Engine, revision: str, url: str,
                    lock_wait_timeout: int) -> None:
    with engine.connect() as conn:
        with conn.begin():
            with migration_lock(conn, url, lock_wait_timeout):
                command.upgrade(_config(conn, url), revision)


@contextlib.contextmanager
def migration_lock(conn: sa.Connection, url: str,
                   timeout: int) -> ty.Iterator[None]:
    """Hold the database's migration lock (see the module docstring).

    ``conn`` must be in a transaction: the PostgreSQL and SQLite locks end
    with it.

    :raises: MigrationLockTimedOut after ``timeout`` seconds.
    """
    dialect = conn.dialect.name
    if dialect == "mysql":
        with _mysql_lock(conn, url, timeout):
            yield
        return
    if dialect == "postgresql":
        _pg_lock(conn, url, timeout)
    else:
        _sqlite_lock(conn, url, timeout)
    yield


@contextlib.contextmanager
def _mysql_lock(conn: sa.Connection, url: str,
                timeout: int) -> ty.Iterator[None]:
    # GET_LOCK names are server-wide: qualify with the database (<= 64).
    name = ("%s.%s" % (_LOCK_NAME, conn.engine.url.database))[:64]
    got = conn.execute(sa.text("SELECT GET_LOCK(:name, :timeout)"),
                       {"name": name, "timeout": timeout}).scalar()
    if got != 1:
        raise db_exc.MigrationLockTimedOut(url=url, timeout=timeout, lock=name)
    try:
        yield
    finally:
        with contextlib.suppress(sa.exc.SQLAlchemyError,
                                 oslo_db_exc.DBError):
            conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"),
                         {"name": name})


def _pg_lock(conn: sa.Connection, url: str, timeout: int) -> None:
    """Poll the transaction-scoped advisory lock until ``timeout``."""
    deadline = time.monotonic() + timeout
    query = sa.text("SELECT pg_try_advisory_xact_lock(:key)")
    while not conn.execute(query, {"key": _PG_LOCK_KEY}).scalar():
        if time.monotonic() >= deadline:
            raise db_exc.MigrationLockTimedOut(
                url=url, timeout=timeout,
                lock="advisory lock %d" % _PG_LOCK_KEY)
        time.sleep(0.05)


def _sqlite_lock(conn: sa.Connection, url: str, timeout: int) -> None:
    """Make the transaction ``BEGIN IMMEDIATE``: DDL included, one writer.

    pci_vgpu's own engines begin every write that way already; a plain
    pysqlite connection would run DDL outside any transaction.
    """
    raw = ty.cast(ty.Any, conn.connection.dbapi_connection)
    if raw.in_transaction:
        return
    raw.isolation_level = None
    raw.execute("PRAGMA busy_timeout = %d" % (timeout * 1000))
    try:
        raw.execute("BEGIN IMMEDIATE")
    except Exception as exc:
        if "locked" in str(exc):
            raise db_exc.MigrationLockTimedOut(
                url=url, timeout=timeout, lock="the database write lock") from exc
        raise


def lost_race(exc: BaseException) -> bool:
    """Whether ``exc`` says another migrator changed the schema first."""
    if isinstance(exc, alembic_exc.CommandError):
        return "expected to match one row" in str(exc)
    if isinstance(exc, (oslo_db_exc.DBDeadlock, oslo_db_exc.DBDuplicateEntry)):
        return True
    orig = driver_error(exc)
    if orig is None:
        return False
    code = orig.args[0] if orig.args else None
    return code in _MYSQL_RACE or getattr(orig, "pgcode", None) in _PG_RACE


def driver_error(exc: BaseException | None) -> BaseException | None:
    """The DBAPI driver's exception under SQLAlchemy's and oslo.db's."""
    seen: set[int] = set()
    while isinstance(exc, BaseException) and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__module__.split(".")[0] in ("pymysql", "psycopg2",
                                                  "sqlite3"):
            return exc
        exc = (getattr(exc, "orig", None)
               or getattr(exc, "inner_exception", None) or exc.__cause__)
    return None


def _detail(exc: BaseException) -> str:
    orig = driver_error(exc) or exc
    text = " ".join(str(orig).split()) or type(orig).__name__
    return redact.mask(text)


def downgrade(engine: sa.Engine, revision: str) -> None:
    """Downgrade to ``revision`` ("base" drops every table).

    Checked before anything runs: MariaDB commits each DDL statement, so a
    refusal half-way down would leave a schema that matches no revision.

    :raises: DowngradeBlocked when rows cannot be represented below it.
    """
    url = _safe(engine)
    with engine.begin() as conn:
        with migration_lock(conn, url, 30):
            _check_vgpu_rows_fit(conn, revision)
            command.downgrade(_config(conn, url), revision)


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
        command.stamp(_config(conn, _safe(engine)), revision)


def current(engine: sa.Engine) -> str | None:
    """Return the database's revision, or None if it was never migrated."""
    with engine.connect() as conn:
        return alembic_migration.MigrationContext.configure(conn).get_current_revision()


def revisions() -> list[str]:
    """Every revision, oldest first."""
    return list(_revisions(script_location()))


@functools.lru_cache(maxsize=4)
def _revisions(location: str) -> tuple[str, ...]:
    cfg = alembic_config.Config()
    cfg.set_main_option("script_location", location)
    scripts = alembic_script.ScriptDirectory.from_config(cfg)
    return tuple(s.revision for s in reversed(list(scripts.walk_revisions())))
