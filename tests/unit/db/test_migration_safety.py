"""Half-done schemas are completed, foreign ones refused, migrators serialised.

The half-done states are the ones a ``kill -9`` leaves on MariaDB (each DDL
statement commits on its own): some objects of a revision exist while
``alembic_version`` still names the previous one.  They are built here
statement by statement, on all three databases, and the repaired schema
must equal the schema of a clean run.  (``tests/race`` kills real
migrating processes at random times.)
"""

from __future__ import annotations

import functools
import typing as ty

import pytest
import sqlalchemy as sa

from pci_vgpu.db import api as db_api
from pci_vgpu.db import exception as db_exc
from pci_vgpu.db import migration
from tests.fixtures import db as db_fixtures
from tests.fixtures.db import db_url  # noqa: F401  (pytest fixture)


def schema(engine: sa.Engine) -> dict[str, ty.Any]:
    """Tables, columns, indexes and unique keys, comparable across runs."""
    inspector = sa.inspect(engine)
    result: dict[str, ty.Any] = {}
    for table in sorted(inspector.get_table_names()):
        columns = sorted((c["name"], str(c["type"]), c["nullable"])
                         for c in inspector.get_columns(table))
        indexes = sorted((i["name"], tuple(i["column_names"]),
                          bool(i.get("unique")))
                         for i in inspector.get_indexes(table))
        uniques = sorted((u["name"], tuple(u["column_names"]))
                         for u in inspector.get_unique_constraints(table))
        result[table] = (columns, indexes, uniques)
    return result


@functools.lru_cache(maxsize=None)
def reference_schema(backend: str) -> dict[str, ty.Any]:
    """The schema a clean upgrade to head leaves (computed once per run)."""
    with db_fixtures.Database(backend) as ref:
        engine = sa.create_engine(ref.url, poolclass=sa.pool.NullPool)
        migration.upgrade(engine)
        snapshot = schema(engine)
        engine.dispose()
    return snapshot


def _run(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


# Each case: (revision to upgrade to, statements a kill left behind).
HALF_DONE = {
    "0001-one-table": ("0001", ["DELETE FROM alembic_version",
                                "DROP TABLE pci_devices"]),
    "0002-columns": ("0001", [
        "ALTER TABLE pci_devices ADD COLUMN mdev_uuid VARCHAR(36)",
        "ALTER TABLE pci_devices ADD COLUMN device_key VARCHAR(64)"]),
    "0003-table-no-index": ("0002", [
        "ALTER TABLE compute_nodes ADD COLUMN generation INTEGER "
        "DEFAULT '0' NOT NULL",
        "CREATE TABLE instances (created_at DATETIME, updated_at DATETIME, "
        "id INTEGER NOT NULL, uuid VARCHAR(36) NOT NULL, compute_node_id "
        "INTEGER NOT NULL, name VARCHAR(255), status VARCHAR(16) NOT NULL, "
        "pci_requests TEXT NOT NULL, numa_cells TEXT, PRIMARY KEY (id), "
        "CONSTRAINT uniq_instances0uuid UNIQUE (uuid), CONSTRAINT "
        "instances_compute_node_id_fkey FOREIGN KEY(compute_node_id) "
        "REFERENCES compute_nodes (id))"]),
    "0004-column": ("0003", [
        "ALTER TABLE instances ADD COLUMN server_name VARCHAR(255)"]),
}


@pytest.mark.parametrize("case", sorted(HALF_DONE))
def test_a_half_applied_revision_is_completed(
        case: str, db_url: str, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    recorded, statements = HALF_DONE[case]
    migration.upgrade(engine, recorded)
    if case == "0003-table-no-index" and engine.dialect.name == "postgresql":
        statements = [s.replace("DATETIME", "TIMESTAMP WITHOUT TIME ZONE")
                      for s in statements]
    _run(engine, *statements)
    db = db_api.Database(db_url)
    db.sync()
    db.dispose()
    assert migration.current(engine) == migration.revisions()[-1]
    assert schema(engine) == reference_schema(engine.dialect.name)
    engine.dispose()
    half = case[:4]
    warnings = [r.getMessage() for r in caplog.records
                if "half-applied" in r.getMessage()]
    assert warnings and all("revision %s" % half in w for w in warnings)
    assert all(db.safe_url in w for w in warnings)


def test_tables_without_a_revision_are_refused(db_url: str) -> None:  # noqa: F811
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    _run(engine, "CREATE TABLE pci_devices (id INTEGER PRIMARY KEY)")
    db = db_api.Database(db_url)
    with pytest.raises(db_exc.SchemaNotOurs) as caught:
        db.sync()
    db.dispose()
    assert db.safe_url in str(caught.value)
    assert "stamp it at revision 0001" in str(caught.value)
    assert set(sa.inspect(engine).get_table_names()) == {"pci_devices"}
    engine.dispose()


def test_another_services_revision_is_refused(db_url: str) -> None:  # noqa: F811
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    _run(engine, "CREATE TABLE alembic_version (version_num VARCHAR(32) "
                 "NOT NULL PRIMARY KEY)",
         "INSERT INTO alembic_version VALUES ('ab450ba04102')")
    db = db_api.Database(db_url)
    with pytest.raises(db_exc.SchemaUnknownRevision) as caught:
        db.sync()
    db.dispose()
    message = str(caught.value)
    assert "ab450ba04102" in message and db.safe_url in message
    assert "0001, 0002, 0003, 0004" in message
    engine.dispose()


def _hold_lock(engine: sa.Engine, conn: sa.Connection) -> None:
    """Take the migration lock the way another migrator would."""
    name = engine.dialect.name
    if name == "mysql":
        lock = "pci_vgpu.migrate.%s" % engine.url.database
        assert conn.execute(sa.text("SELECT GET_LOCK(:n, 0)"),
                            {"n": lock}).scalar() == 1
    elif name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"),
                     {"k": migration._PG_LOCK_KEY})
    else:
        raw = ty.cast(ty.Any, conn.connection.dbapi_connection)
        raw.isolation_level = None
        raw.execute("BEGIN IMMEDIATE")


def test_a_second_migrator_waits_at_most_lock_wait_timeout(
        db_url: str) -> None:  # noqa: F811
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    with engine.connect() as holder:
        _hold_lock(engine, holder)
        db = db_api.Database(db_url, db_api.Settings(lock_wait_timeout=1))
        with pytest.raises((db_exc.MigrationLockTimedOut,
                            db_exc.LockWaitTimedOut)) as caught:
            db.sync()
        db.dispose()
    assert db.safe_url in str(caught.value)
    assert "lock_wait_timeout = 1 s" in str(caught.value)
    # Nothing was created while the lock was held elsewhere.
    assert "pci_devices" not in sa.inspect(engine).get_table_names()
    db = db_api.Database(db_url)
    db.sync()
    db.dispose()
    assert migration.current(engine) == migration.revisions()[-1]
    engine.dispose()
