"""Server names are unique per compute node by a database constraint.

Two trackers (two processes, as far as the database can tell) each read
the node before either writes, so the service's name check cannot see
the other claim; ``uniq_instances0compute_node_id0server_name`` refuses
the second claim in its own transaction, and nothing of it remains.
Runs on SQLite, MariaDB and PostgreSQL.
"""

from __future__ import annotations

import typing as ty
import uuid

import pytest
import sqlalchemy as sa

from pci_vgpu.db import api as db_api
from pci_vgpu.db import exception as db_exc
from pci_vgpu.db import migration
from pci_vgpu import manager
from tests.fixtures.db import database  # noqa: F401  (pytest fixture)
from tests.fixtures.db import db_url  # noqa: F401  (pytest fixture)
from tests.unit.db import inventory as inv

HOST = "cn1"


def _two_trackers(db: db_api.Database) -> tuple[manager.PciDevTracker,
                                                manager.PciDevTracker]:
    first = manager.PciDevTracker(db, HOST)
    first.update_devices_from_hypervisor_resources(
        inv.report(inv.default_host()))
    second = manager.PciDevTracker(db, HOST)
    second.refresh()
    first.refresh()
    return first, second


def _instances(db: db_api.Database) -> list[sa.Row[ty.Any]]:
    with db.engine.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT uuid, name, server_name FROM instances ORDER BY id")))


def _claimed(db: db_api.Database) -> list[tuple[str, str]]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT status, instance_uuid FROM pci_devices "
            "WHERE deleted = 0 AND instance_uuid IS NOT NULL"))]


def test_second_claim_of_a_name_is_refused_and_leaves_nothing(
        database: db_api.Database) -> None:
    first, second = _two_trackers(database)
    winner, loser = str(uuid.uuid4()), str(uuid.uuid4())
    first.claim_instance(winner, [inv.vgpu_request()], instance_name="same1")
    with pytest.raises(db_exc.InstanceNameInUse) as caught:
        # ``second`` still believes the node holds no server.
        second.claim_instance(loser, [inv.vgpu_request()],
                              instance_name="same1")
    message = str(caught.value)
    assert "same1" in message and winner in message and HOST in message
    assert "\n" not in message
    assert [(r.uuid, r.server_name) for r in _instances(database)] == [
        (winner, "same1")]
    assert [owner for _, owner in _claimed(database)] == [winner]
    # The loser's cache was dropped with its transaction: it still works.
    second.claim_instance(loser, [inv.vgpu_request()], instance_name="same2")
    assert sorted(o for _, o in _claimed(database)) == sorted([winner, loser])


def test_a_freed_name_is_free_again(database: db_api.Database) -> None:
    first, second = _two_trackers(database)
    gone = str(uuid.uuid4())
    first.claim_instance(gone, [inv.vgpu_request()], instance_name="vm")
    first.free_instance(gone)
    again = str(uuid.uuid4())
    second.claim_instance(again, [inv.vgpu_request()], instance_name="vm")
    assert [(r.uuid, r.server_name) for r in _instances(database)] == [
        (again, "vm")]


def test_names_shared_on_purpose_and_unnamed_claims_never_collide(
        database: db_api.Database) -> None:
    first, _ = _two_trackers(database)
    server = str(uuid.uuid4())
    first.claim_instance(server, [inv.vgpu_request()], instance_name="vm")
    for _ in range(2):  # two hot-plug attachments of "vm"
        first.claim_instance(str(uuid.uuid4()), [inv.vgpu_request()],
                             instance_name="vm", unique_name=False)
    for _ in range(2):  # Nova-style claims carry no name
        first.claim_instance(str(uuid.uuid4()), [inv.gpu_request()]
                             if _ == 0 else [inv.vgpu_request()])
    rows = _instances(database)
    assert [r.server_name for r in rows] == ["vm", None, None, None, None]


def test_the_same_name_on_two_compute_nodes(database: db_api.Database) -> None:
    for host in ("cn1", "cn2"):
        tracker = manager.PciDevTracker(database, host)
        tracker.update_devices_from_hypervisor_resources(
            inv.report(inv.default_host()))
        tracker.claim_instance(str(uuid.uuid4()), [inv.vgpu_request()],
                               instance_name="vm")
    assert [r.server_name for r in _instances(database)] == ["vm", "vm"]


def test_an_instance_tracked_on_another_node_is_refused(
        database: db_api.Database) -> None:
    shared = str(uuid.uuid4())
    trackers = [manager.PciDevTracker(database, h) for h in ("cn1", "cn2")]
    for tracker in trackers:
        tracker.update_devices_from_hypervisor_resources(
            inv.report(inv.default_host()))
    trackers[0].claim_instance(shared, [inv.vgpu_request()])
    with pytest.raises(db_exc.InstanceAlreadyTracked, match=shared):
        trackers[1].claim_instance(shared, [inv.vgpu_request()])


# --- revision 0004 on rows written before it ----------------------------------

def _insert_instance(conn: sa.Connection, uuid_: str, name: str | None,
                     request_id: str) -> None:
    conn.execute(sa.text(
        "INSERT INTO instances (uuid, compute_node_id, name, status, "
        "pci_requests) VALUES (:u, 1, :n, 'allocated', :r)"),
        {"u": uuid_, "n": name,
         "r": '[{"count": 1, "spec": [], "request_id": "%s"}]' % request_id})


def test_0004_names_existing_servers_and_renames_older_duplicates(
        db_url: str) -> None:  # noqa: F811
    from pci_vgpu import service_tracker
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    migration.upgrade(engine, "0003")
    first, dup = str(uuid.uuid4()), str(uuid.uuid4())
    req = str(uuid.uuid4())
    attach_of_dup = service_tracker.attachment_uuid(dup, req)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO compute_nodes (id, deleted, "
                             "generation) VALUES (1, 0, 0)"))
        _insert_instance(conn, first, "same1", str(uuid.uuid4()))
        _insert_instance(conn, dup, "same1", str(uuid.uuid4()))
        _insert_instance(conn, attach_of_dup, "same1", req)
        _insert_instance(conn, str(uuid.uuid4()), None, str(uuid.uuid4()))
    migration.upgrade(engine)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text(
            "SELECT uuid, name, server_name FROM instances ORDER BY id"))]
    engine.dispose()
    renamed = "same1-%s" % dup
    assert rows[:3] == [(first, "same1", "same1"), (dup, renamed, renamed),
                        (attach_of_dup, renamed, None)]
    assert rows[3][1:] == (None, None)
