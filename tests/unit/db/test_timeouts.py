"""Every database wait is bounded by a ``[database]`` option.

Made for real on each database: a statement that runs too long, a row or
database lock another connection holds.  Each wait must end after about
the configured time with an error naming the option and its value.
"""

from __future__ import annotations

import time
import typing as ty

import pytest
import sqlalchemy as sa

from pci_vgpu.db import api as db_api
from pci_vgpu.db import exception as db_exc
from pci_vgpu import manager
from tests.fixtures import db as db_fixtures
from tests.fixtures.db import db_url  # noqa: F401  (pytest fixture)
from tests.unit.db import inventory as inv

SLEEP = {"mysql": "SELECT SLEEP(5)", "postgresql": "SELECT pg_sleep(5)"}


@pytest.mark.parametrize("backend", [p for p in db_fixtures.backend_params()
                                     if p.values[0] != "sqlite"])
def test_statement_timeout(backend: str) -> None:
    with db_fixtures.Database(backend) as database:
        db = db_api.Database(database.url, db_api.Settings(statement_timeout=1))
        started = time.monotonic()
        with pytest.raises(db_exc.StatementTimedOut) as caught:
            with db.reader() as conn:
                conn.execute(sa.text(SLEEP[backend])).all()
        elapsed = time.monotonic() - started
        db.dispose()
    assert 0.9 < elapsed < 4, elapsed
    assert "[database] statement_timeout = 1 s" in str(caught.value)
    assert db.safe_url in str(caught.value)


def _hold_node_row(db_url: str, conn: sa.Connection) -> None:  # noqa: F811
    """Lock the compute node row (or, on SQLite, the database) and keep it."""
    if conn.dialect.name == "sqlite":
        raw = ty.cast(ty.Any, conn.connection.dbapi_connection)
        raw.isolation_level = None
        raw.execute("BEGIN IMMEDIATE")
        return
    conn.begin()
    conn.execute(sa.text("SELECT id FROM compute_nodes FOR UPDATE")).all()


def test_lock_wait_timeout(db_url: str) -> None:  # noqa: F811
    setup = db_api.Database(db_url)
    setup.sync()
    manager.PciDevTracker(setup, "cn1").update_devices_from_hypervisor_resources(
        inv.report(inv.default_host()))
    setup.dispose()
    db = db_api.Database(db_url, db_api.Settings(lock_wait_timeout=1))
    tracker = manager.PciDevTracker(db, "cn1")
    tracker.refresh()
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    with engine.connect() as holder:
        _hold_node_row(db_url, holder)
        started = time.monotonic()
        with pytest.raises(db_exc.LockWaitTimedOut) as caught:
            tracker.claim_instance("3f1c4e1a-0000-4000-8000-000000000001",
                                   [inv.vgpu_request()])
        elapsed = time.monotonic() - started
    engine.dispose()
    db.dispose()
    assert 0.9 < elapsed < 5, elapsed
    assert "[database] lock_wait_timeout = 1 s" in str(caught.value)
    assert db.safe_url in str(caught.value)


def test_settings_come_from_the_database_group() -> None:
    from oslo_config import cfg
    from pci_vgpu import conf as pci_conf
    conf = cfg.ConfigOpts()
    pci_conf.register_opts(conf)
    conf([])
    conf.set_override("connection", "sqlite://", group="database")
    for name, value in (("connect_timeout", 3), ("statement_timeout", 0),
                        ("lock_wait_timeout", 7), ("max_pool_size", 2)):
        conf.set_override(name, value, group="database")
    db = db_api.Database.from_config(conf)
    assert db.settings == db_api.Settings(connect_timeout=3, statement_timeout=0,
                                          lock_wait_timeout=7, max_pool_size=2)
    db.sync()  # in memory: on the database the tracker then uses
    with db.reader() as conn:
        busy = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
        tables = set(sa.inspect(conn).get_table_names())
    db.dispose()
    assert busy == 7000
    assert {"compute_nodes", "pci_devices", "instances"} <= tables


def test_a_fresh_sqlite_file_busy_while_switching_to_wal_is_waited_for(
        tmp_path: ty.Any) -> None:
    """Switching to WAL needs the exclusive lock, and SQLite reports a busy
    file at once there: a process opening a fresh file while another writes
    it must wait (up to lock_wait_timeout), not fail."""
    import sqlite3
    import threading

    path = tmp_path / "fresh.sqlite"
    writer = sqlite3.connect(str(path), check_same_thread=False)
    writer.execute("CREATE TABLE other (x INTEGER)")
    writer.commit()
    writer.isolation_level = None
    # Another process writing to the file (still in rollback-journal mode)
    # holds its RESERVED lock: the switch is refused at once, not waited for.
    writer.execute("BEGIN IMMEDIATE")
    releaser = threading.Timer(1.0, writer.rollback)
    releaser.start()
    db = db_api.Database("sqlite:///%s" % path,
                         db_api.Settings(lock_wait_timeout=10))
    try:
        started = time.monotonic()
        db.sync()
        waited = time.monotonic() - started
    finally:
        releaser.join()
        writer.close()
    with db.reader() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    db.dispose()
    assert mode == "wal"
    assert waited >= 0.9
