"""The device tracker against a real database (SQLite; MariaDB and
PostgreSQL where reachable), a real ``PciDeviceStats`` and real objects.
Only the hypervisor is absent: its report is the JSON a driver returns.
"""

from __future__ import annotations

import json
import typing as ty

import pytest
import sqlalchemy as sa

from pci_vgpu.db import api as db_api
from pci_vgpu.db import exception as db_exc
from pci_vgpu import manager
from pci_vgpu import pool_errors
from tests.fixtures.db import database  # noqa: F401  (pytest fixture)
from tests.fixtures.db import db_url  # noqa: F401  (pytest fixture)
from tests.fixtures.db import sqlite_db  # noqa: F401  (pytest fixture)
from tests.unit.db import inventory as inv

INSTANCE_A = "11111111-1111-4111-8111-111111111111"
INSTANCE_B = "22222222-2222-4222-8222-222222222222"


def _tracker(db: db_api.Database, host: str = "cn1") -> manager.PciDevTracker:
    tracker = manager.PciDevTracker(db, host)
    return tracker


def _loaded(db: db_api.Database, **kw: ty.Any) -> manager.PciDevTracker:
    tracker = _tracker(db)
    tracker.update_devices_from_hypervisor_resources(
        inv.report(inv.default_host(**kw)))
    return tracker


def _rows(db: db_api.Database, where: str = "1=1") -> list[sa.Row[ty.Any]]:
    with db.engine.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT device_key, address, mdev_uuid, dev_type, status, "
            "instance_uuid, deleted, pending_removal FROM pci_devices "
            "WHERE %s ORDER BY id" % where)).all())


def _generation(db: db_api.Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT generation FROM compute_nodes")).scalar_one())


def test_inventory_adds_updates_and_removes(database: db_api.Database) -> None:
    tracker = _loaded(database)
    assert [(r.device_key, r.status) for r in _rows(database)] == [
        (inv.V100, "available"), (inv.T4, "available")]
    host = inv.default_host()
    host[0]["numa_node"] = 1
    tracker.update_devices_from_hypervisor_resources(inv.report(host[:1]))
    rows = _rows(database)
    assert [(r.device_key, r.deleted != 0) for r in rows] == [
        (inv.V100, False), (inv.T4, True)]
    assert [d.numa_node for d in tracker.devices()] == [1]


def test_unchanged_report_writes_nothing(sqlite_db: db_api.Database) -> None:
    tracker = _loaded(sqlite_db)
    generation = _generation(sqlite_db)
    tracker.update_devices_from_hypervisor_resources(inv.report(inv.default_host()))
    assert _generation(sqlite_db) == generation


def test_vgpu_claim_allocate_free(database: db_api.Database) -> None:
    tracker = _loaded(database)
    claimed = tracker.claim_instance(INSTANCE_A, [inv.vgpu_request()],
                                     instance_name="vm-a")
    assert len(claimed) == 1
    vgpu = claimed[0]
    assert (vgpu.address, vgpu.parent_addr, vgpu.dev_type, vgpu.status) == (
        None, inv.T4, "mdev", "claimed")
    assert vgpu.vgpu_type == "nvidia-222"
    mdev_rows = _rows(database, "dev_type = 'mdev'")
    assert [(r.device_key, r.status, r.instance_uuid) for r in mdev_rows] == [
        ("mdev:" + vgpu.mdev_uuid, "claimed", INSTANCE_A)]
    [record] = tracker.instances()
    assert (record.uuid, record.name, record.status) == (INSTANCE_A, "vm-a", "claimed")
    assert json.loads(record.requests[0].spec[0]["vgpu_types"]) == ["nvidia-222"]

    allocated = tracker.allocate_instance(INSTANCE_A)
    assert [d.status for d in allocated] == ["allocated"]
    assert tracker.instances()[0].status == "allocated"

    tracker.free_instance(INSTANCE_A)
    assert tracker.instances() == []
    [gone] = _rows(database, "dev_type = 'mdev'")
    assert gone.deleted != 0 and gone.status == "deleted"
    assert {r.status for r in _rows(database, "deleted = 0")} == {"available"}


def test_no_capacity_writes_nothing(database: db_api.Database) -> None:
    tracker = _loaded(database, t4_types={"nvidia-223": 2})
    tracker.claim_instance(INSTANCE_A, [inv.vgpu_request("nvidia-223", count=2)])
    generation, rows = _generation(database), _rows(database)
    with pytest.raises(pool_errors.PciDeviceRequestFailed):
        tracker.claim_instance(INSTANCE_B, [inv.vgpu_request("nvidia-223")])
    assert (_generation(database), _rows(database)) == (generation, rows)
    assert [r.uuid for r in tracker.instances()] == [INSTANCE_A]


def test_racing_workers_last_vgpu(database: db_api.Database) -> None:
    """Two trackers (two workers) both see one free vGPU; one wins."""
    first = _loaded(database, t4_types={"nvidia-223": 1})
    second = _tracker(database)
    assert second.support_requests([inv.vgpu_request("nvidia-223")])
    first.claim_instance(INSTANCE_A, [inv.vgpu_request("nvidia-223")])
    # second's cache still shows the vGPU free; its swap fails, it reloads.
    with pytest.raises(pool_errors.PciDeviceRequestFailed):
        second.claim_instance(INSTANCE_B, [inv.vgpu_request("nvidia-223")])
    owners = {r.instance_uuid for r in _rows(database, "deleted = 0")} - {None}
    assert owners == {INSTANCE_A}


def test_whole_gpu_claim_and_restart(sqlite_db: db_api.Database) -> None:
    tracker = _loaded(sqlite_db)
    [dev] = tracker.claim_instance(INSTANCE_A, [inv.gpu_request("1db4")])
    assert dev.address == inv.V100
    tracker.allocate_instance(INSTANCE_A)
    restarted = _tracker(sqlite_db)
    assert [d.address for d in restarted.devices_of(INSTANCE_A)] == [inv.V100]
    assert [r.status for r in restarted.instances()] == ["allocated"]
    with pytest.raises(pool_errors.PciDeviceRequestFailed):
        restarted.claim_instance(INSTANCE_B, [inv.gpu_request("1db4")])


def test_vanished_device_in_use_is_removed_when_freed(
        sqlite_db: db_api.Database) -> None:
    tracker = _loaded(sqlite_db)
    tracker.claim_instance(INSTANCE_A, [inv.gpu_request("1db4")])
    tracker.update_devices_from_hypervisor_resources(
        inv.report(inv.default_host()[1:]))
    [v100] = _rows(sqlite_db, "device_key = '%s'" % inv.V100)
    assert (v100.status, v100.deleted, bool(v100.pending_removal)) == (
        "claimed", 0, True)
    tracker.free_instance(INSTANCE_A)
    [v100] = _rows(sqlite_db, "device_key = '%s'" % inv.V100)
    assert v100.deleted != 0
    assert [d.address for d in tracker.devices()] == [inv.T4]


def test_reported_again_clears_pending_removal(sqlite_db: db_api.Database) -> None:
    tracker = _loaded(sqlite_db)
    tracker.claim_instance(INSTANCE_A, [inv.gpu_request("1db4")])
    tracker.update_devices_from_hypervisor_resources(
        inv.report(inv.default_host()[1:]))
    tracker.update_devices_from_hypervisor_resources(inv.report(inv.default_host()))
    tracker.free_instance(INSTANCE_A)
    [v100] = _rows(sqlite_db, "device_key = '%s'" % inv.V100)
    assert (v100.status, v100.deleted, bool(v100.pending_removal)) == (
        "available", 0, False)


def test_clean_usage_frees_unknown_instances(sqlite_db: db_api.Database) -> None:
    tracker = _loaded(sqlite_db)
    tracker.claim_instance(INSTANCE_A, [inv.vgpu_request()])
    tracker.claim_instance(INSTANCE_B, [inv.vgpu_request()])
    assert tracker.clean_usage([INSTANCE_B]) == [INSTANCE_A]
    assert [r.uuid for r in tracker.instances()] == [INSTANCE_B]
    assert len(_rows(sqlite_db, "dev_type = 'mdev' AND deleted = 0")) == 1


def test_double_claim_and_allocate_without_claim(sqlite_db: db_api.Database) -> None:
    tracker = _loaded(sqlite_db)
    tracker.claim_instance(INSTANCE_A, [inv.vgpu_request()])
    with pytest.raises(db_exc.InstanceAlreadyTracked, match=INSTANCE_A):
        tracker.claim_instance(INSTANCE_A, [inv.vgpu_request()])
    with pytest.raises(db_exc.InstanceNotTracked, match=INSTANCE_B):
        tracker.allocate_instance(INSTANCE_B)
    assert tracker.free_instance(INSTANCE_B) == []


@pytest.mark.parametrize("payload, fragment", [
    ("not json", "not JSON"),
    ('{"a": 1}', "top level is dict"),
    ('[1]', "entry 1 is not a dict"),
    (json.dumps([{"address": "0000:01:00.0", "dev_type": "type-PCI"}]),
     "0000:01:00.0 lacks vendor_id, product_id"),
    (json.dumps([{"vendor_id": "10de", "product_id": "1eb8", "dev_type": "mdev",
                  "dev_id": "mdev_x"}]), r"mdev_x \(dev_type mdev\) has neither"),
])
def test_bad_report_is_refused_whole(sqlite_db: db_api.Database, payload: str,
                                     fragment: str) -> None:
    tracker = _loaded(sqlite_db)
    rows = _rows(sqlite_db)
    with pytest.raises(db_exc.InvalidDeviceReport, match=fragment):
        tracker.update_devices_from_hypervisor_resources(payload)
    assert _rows(sqlite_db) == rows


def test_bad_connection_url_names_it() -> None:
    with pytest.raises(db_exc.InvalidConnectionUrl, match="oracle"):
        db_api.Database("oracle://scott:tiger@db/orcl")


def test_safe_url_hides_password() -> None:
    db = db_api.Database("mysql+pymysql://u:s3cret@127.0.0.1/x")
    assert "s3cret" not in db.safe_url and "***" in db.safe_url


def test_default_connection_is_sqlite_in_state_dir(tmp_path: ty.Any) -> None:
    from oslo_config import cfg

    from pci_vgpu import conf
    from pci_vgpu.conf import database as db_conf
    local = cfg.ConfigOpts()
    conf.register_opts(local)
    local([], project="pci_vgpu", default_config_files=[])
    local.set_override("state_dir", str(tmp_path / "state"), group="host")
    url = db_conf.connection_url(local)
    assert url == "sqlite:///%s" % (tmp_path / "state" / "pci_vgpu.sqlite")
    db = db_api.Database.from_config(local)
    db.sync()
    assert (tmp_path / "state" / "pci_vgpu.sqlite").exists()



def test_claim_accepts_instance_pci_requests(sqlite_db: db_api.Database) -> None:
    from pci_vgpu.objects import instance_pci_requests as ipr
    tracker = _loaded(sqlite_db)
    requests = ipr.InstancePCIRequests(instance_uuid=INSTANCE_A,
                                       requests=[inv.vgpu_request("nvidia-223")])
    [dev] = tracker.claim_instance(INSTANCE_A, requests, numa_cells=[1])
    assert dev.vgpu_type == "nvidia-223"
    assert tracker.instances()[0].numa_cells == [1]


FOREIGN_GUEST = "33333333-3333-4333-8333-333333333333"
FOREIGN_MDEV = "4b20d080-1b54-4048-85b3-a6a62d165c01"


def _host_with_foreign_mdev(owner: str | None) -> list[dict[str, ty.Any]]:
    """The default host plus one existing nvidia-222 mdev on the T4 that a
    guest unknown to the tracker holds (``owner``), or nobody (None)."""
    devices = inv.default_host(t4_types={"nvidia-222": 2})
    t4 = next(d for d in devices if d["address"] == inv.T4)
    devices.append({
        "dev_id": "mdev_" + FOREIGN_MDEV.replace("-", "_"), "address": None,
        "vendor_id": t4["vendor_id"], "product_id": t4["product_id"],
        "numa_node": 1, "label": t4["label"], "dev_type": "mdev",
        "parent_addr": inv.T4, "mdev_uuid": FOREIGN_MDEV,
        "mdev_type": "nvidia-222", "instance_uuid": owner})
    return devices


def test_mdev_held_by_an_untracked_guest_is_never_handed_out(
        sqlite_db: db_api.Database) -> None:
    tracker = _tracker(sqlite_db)
    tracker.update_devices_from_hypervisor_resources(
        inv.report(_host_with_foreign_mdev(FOREIGN_GUEST)))
    [vgpu] = tracker.claim_instance(INSTANCE_A, [inv.vgpu_request()])
    assert vgpu.mdev_uuid != FOREIGN_MDEV
    # The foreign mdev fills the second slot: the T4 is now full.
    with pytest.raises(pool_errors.PciDeviceRequestFailed):
        tracker.claim_instance(INSTANCE_B, [inv.vgpu_request()])
    [foreign] = _rows(sqlite_db, "mdev_uuid = '%s'" % FOREIGN_MDEV)
    assert (foreign.status, foreign.instance_uuid) == ("unavailable", None)


def test_mdev_released_by_its_guest_becomes_a_spare(
        sqlite_db: db_api.Database) -> None:
    tracker = _tracker(sqlite_db)
    tracker.update_devices_from_hypervisor_resources(
        inv.report(_host_with_foreign_mdev(FOREIGN_GUEST)))
    tracker.update_devices_from_hypervisor_resources(
        inv.report(_host_with_foreign_mdev(None)))
    [vgpu] = tracker.claim_instance(INSTANCE_A, [inv.vgpu_request()])
    assert vgpu.mdev_uuid == FOREIGN_MDEV  # reused, not created
