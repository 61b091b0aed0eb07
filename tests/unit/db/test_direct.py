"""The direct DML path (``pci_vgpu.db.direct``) on real databases.

It bypasses SQLAlchemy's execution machinery, so these tests pin what it
must keep: the same SQL effects as Core, oslo.db's error translation, the
pool's disconnect handling (the tracker has no ping at checkout and
relies on ``retry_on_disconnect``), and refusal of what it cannot run.
"""

from __future__ import annotations

import json
import threading
import typing as ty
import uuid

from oslo_db import exception as oslo_db_exc
import pytest
import sqlalchemy as sa

from pci_vgpu.db import api as db_api
from pci_vgpu.db import direct
from pci_vgpu import manager
from tests.fixtures import db as db_fixture
from tests.fixtures.db import database  # noqa: F401  (pytest fixture)
from tests.fixtures.db import db_url  # noqa: F401  (pytest fixture)
from tests.unit.db import inventory as inv

INSTANCE = "33333333-3333-4333-8333-333333333333"


def _instance_values(uuid_: str) -> dict[str, ty.Any]:
    return {"uuid": uuid_, "name": "vm", "status": "claimed",
            "pci_requests": "[]", "numa_cells": json.dumps([0])}


def _node(db: db_api.Database) -> int:
    with db.writer() as conn:
        return db_api.get_or_create_compute_node(conn, "cn-direct")[0]


def test_writes_what_core_would(database: db_api.Database) -> None:
    node = _node(database)
    with database.writer() as conn:
        db_api.insert_instance(conn, node, _instance_values(INSTANCE))
        db_api.set_instance_status(conn, INSTANCE, "allocated")
        assert db_api.bump_generation(conn, node, 0) == 1
    with database.reader() as conn:
        row = conn.execute(sa.text(
            "SELECT i.status, i.numa_cells, i.created_at, i.updated_at, "
            "n.generation FROM instances i JOIN compute_nodes n "
            "ON n.id = i.compute_node_id")).one()
    assert (row.status, row.numa_cells, row.generation) == (
        "allocated", "[0]", 1)
    assert row.created_at is not None and row.updated_at is not None
    with database.writer() as conn:
        db_api.delete_instance(conn, INSTANCE)
        assert db_api.get_instances(conn, node) == []


def test_stale_generation_matches_no_row(database: db_api.Database) -> None:
    node = _node(database)
    with pytest.raises(Exception) as err:
        with database.writer() as conn:
            db_api.bump_generation(conn, node, 7)
    assert "generation 7 is no longer current" in str(err.value)


def test_duplicate_is_translated_by_oslo_db(database: db_api.Database) -> None:
    node = _node(database)
    with database.writer() as conn:
        db_api.insert_instance(conn, node, _instance_values(INSTANCE))
    with pytest.raises(oslo_db_exc.DBDuplicateEntry):
        with database.writer() as conn:
            db_api.insert_instance(conn, node, _instance_values(INSTANCE))
    with database.reader() as conn:
        assert len(db_api.get_instances(conn, node)) == 1


def test_update_of_missing_device_refuses_commit(
        database: db_api.Database) -> None:
    node = _node(database)
    with pytest.raises(Exception, match="device 0000:99:00.0 of node"):
        with database.writer() as conn:
            db_api.bump_generation(conn, node, 0)
            db_api.update_device(conn, node, "0000:99:00.0",
                                 {"status": "claimed"})
    with database.reader() as conn:
        assert db_api.get_generation(conn, node) == 0


def _kill_connections(db: db_api.Database, url: str) -> int:
    """Terminate every server connection of ``db``'s database; count them."""
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            if admin.dialect.name == "postgresql":
                return len(conn.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()")).all())
            ids = conn.execute(sa.text(
                "SELECT id FROM information_schema.processlist "
                "WHERE db = DATABASE() AND id <> CONNECTION_ID()")).scalars()
            killed = 0
            for ident in list(ids):
                conn.execute(sa.text("KILL %d" % int(ident)))
                killed += 1
            return killed
    finally:
        admin.dispose()


@pytest.mark.parametrize("backend", db_fixture.backend_params()[1:])
def test_dropped_connection_is_retried(backend: str) -> None:
    """A server dropped the pooled connection: the next write still works."""
    with db_fixture.Database(backend) as scratch:
        database = db_api.Database(scratch.url)
        database.sync()
        try:
            _claim_after_kill(database, scratch.url)
        finally:
            database.dispose()


def _claim_after_kill(database: db_api.Database, url: str) -> None:
    tracker = manager.PciDevTracker(database, "cn-drop")
    tracker.update_devices_from_hypervisor_resources(
        inv.report(inv.default_host()))
    assert _kill_connections(database, url) >= 1
    claimed = tracker.claim_instance(str(uuid.uuid4()), [inv.vgpu_request()])
    assert len(claimed) == 1


@pytest.mark.parametrize("backend", db_fixture.backend_params()[1:])
def test_dropped_connection_is_retried_on_read(backend: str) -> None:
    """Reads, too, survive a server that dropped the pooled connections."""
    with db_fixture.Database(backend) as scratch:
        database = db_api.Database(scratch.url)
        database.sync()
        try:
            tracker = manager.PciDevTracker(database, "cn-read")
            tracker.update_devices_from_hypervisor_resources(
                inv.report(inv.default_host()))
            expected = len(tracker.devices())
            assert _kill_connections(database, scratch.url) >= 1
            assert len(manager.PciDevTracker(database, "cn-read").devices()) \
                == expected
        finally:
            database.dispose()


def test_insert_returns_id_and_applies_defaults(
        database: db_api.Database) -> None:
    node = _node(database)
    values = {"uuid": str(uuid.uuid4()), "address": None, "vendor_id": "10de",
              "product_id": "1eb8", "dev_type": "mdev", "dev_id": None,
              "label": "label_10de_1eb8", "status": "claimed",
              "extra_info": "{}", "mdev_uuid": INSTANCE,
              "parent_addr": "0000:41:00.0", "device_key": "mdev:" + INSTANCE}
    with database.writer() as conn:
        first = db_api.insert_device(conn, node, values)
        second = db_api.insert_device(
            conn, node, dict(values, uuid=str(uuid.uuid4()),
                             device_key="mdev:x", mdev_uuid=None))
        rows = db_api.get_devices(conn, node)
    assert second > first > 0
    assert [r.id for r in rows] == [first, second]
    assert [(r.deleted, bool(r.pending_removal)) for r in rows] == [
        (0, False), (0, False)]
    assert rows[0].created_at is not None


_ODD = sa.Table("odd", sa.MetaData(), sa.Column("id", sa.Integer,
                                                primary_key=True),
                sa.Column("stamp", sa.String(36), default=lambda: "x",
                          onupdate=lambda: "y"))


def test_refuses_what_it_cannot_run(database: db_api.Database) -> None:
    runner = direct.Runner(database.engine.dialect)
    with database.writer() as conn:
        with pytest.raises(direct.UnsupportedStatement, match="parameter x"):
            runner.execute(conn, db_api._DELETE_INSTANCE,
                           {"b_uuid": INSTANCE, "x": object()})
        with pytest.raises(direct.UnsupportedStatement, match="only INSERT"):
            runner.execute(conn, db_api._SELECT_GENERATION, {"b_id": 1})
        with pytest.raises(direct.UnsupportedStatement,
                           match="stamp has a non-constant default"):
            runner.execute(conn, sa.insert(_ODD), {"id": 1})
        with pytest.raises(direct.UnsupportedStatement, match="onupdate"):
            runner.execute(conn, sa.update(_ODD), {"id": 1})


def test_threads_share_a_database_not_a_transaction(
        database: db_api.Database) -> None:
    """Each thread's writers reuse *their* connection: no crossed commits."""
    trackers = [manager.PciDevTracker(database, "cn-thread") for _ in range(4)]
    trackers[0].update_devices_from_hypervisor_resources(
        inv.report(inv.default_host(t4_types={"nvidia-222": 4})))
    errors: list[BaseException] = []

    def cycle(tracker: manager.PciDevTracker) -> None:
        try:
            for _ in range(8):
                instance = str(uuid.uuid4())
                tracker.claim_instance(instance, [inv.vgpu_request()])
                tracker.allocate_instance(instance)
                assert len(tracker.devices_of(instance)) == 1
                tracker.free_instance(instance)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=cycle, args=(t,)) for t in trackers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with database.reader() as conn:
        node = trackers[0].node_id
        assert db_api.get_instances(conn, node) == []
        assert db_api.get_generation(conn, node) == 1 + 4 * 8 * 3
        assert {r.status for r in db_api.get_devices(conn, node)} == {
            "available"}
