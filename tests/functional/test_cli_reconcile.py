"""``host reconcile`` finds and fixes drift between database and hypervisor."""

from __future__ import annotations

import typing as ty
import uuid

import pytest

from pci_vgpu.objects import pci_device
from tests.functional.cli_runner import Cli
from tests.functional.cli_runner import pools_by_type

LIBVIRT = ["--connection", "libvirt"]
XEN = ["--connection", "xenserver"]


@pytest.fixture
def cli(tmp_path: ty.Any) -> ty.Iterator[Cli]:
    runner = Cli(tmp_path)
    yield runner
    runner.close()


def stray_mdev(mdev_uuid: str) -> pci_device.PciDevice:
    """An mdev an operator made by hand (mdevctl), unknown to pci-vgpu."""
    dev = pci_device.PciDevice.create(None, {
        "dev_id": "mdev_x", "address": None, "parent_addr": "0000:06:00.0",
        "vendor_id": "10de", "product_id": "1db4", "numa_node": 0,
        "label": "label_10de_1db4", "dev_type": "mdev", "mdev_uuid": mdev_uuid})
    dev.set_vgpu_type("nvidia-181")
    return dev


def test_libvirt_orphan_mdev_and_leaked_claim(cli):
    cli("host", "inventory", *LIBVIRT)
    start = cli.json("pool", "list", *LIBVIRT)
    leaky = cli.json("server", "create", "leaky", "--flavor", "t4-small", *LIBVIRT)
    cli("server", "create", "healthy", "--flavor", "v100-medium", *LIBVIRT)
    drv = cli.driver("libvirt")
    orphan = str(uuid.uuid4())
    drv.prepare_vgpu(stray_mdev(orphan))
    drv.destroy(leaky["uuid"])

    report = cli.json("host", "reconcile", *LIBVIRT, expect=1)
    assert {(f["kind"], f["subject"], f["fixed"]) for f in report} == {
        ("leaked-claim", leaky["uuid"], False), ("orphan-vgpu", orphan, False)}
    fixed = cli.json("host", "reconcile", "--apply", *LIBVIRT)
    assert all(f["fixed"] for f in fixed) and len(fixed) == 2
    assert cli.json("host", "reconcile", *LIBVIRT) == []

    assert orphan not in {v.mdev_uuid for v in drv.list_vgpus()}
    assert [s["name"] for s in cli.json("server", "list", *LIBVIRT)] == ["healthy"]
    cli("server", "delete", "healthy", *LIBVIRT)
    assert cli.json("pool", "list", "--refresh", *LIBVIRT) == start


def test_libvirt_missing_mdev_is_recreated(cli):
    cli("host", "inventory", *LIBVIRT)
    server = cli.json("server", "create", "vm1", "--flavor", "t4-small", *LIBVIRT)
    mdev = server["devices"][0]["mdev_uuid"]
    drv = cli.driver("libvirt")
    [dev] = [d for d in drv.list_vgpus() if d.mdev_uuid == mdev]
    lost = stray_mdev(mdev)
    lost.parent_addr = dev.parent_addr
    drv.release_vgpu(lost)           # the host rebooted; transient mdev gone

    [finding] = cli.json("host", "reconcile", *LIBVIRT, expect=1)
    assert (finding["kind"], finding["subject"]) == ("missing-vgpu", mdev)
    cli("host", "reconcile", "--apply", *LIBVIRT)
    assert mdev in {v.mdev_uuid for v in drv.list_vgpus()}


def test_xenserver_leaked_claim(cli):
    cli("host", "inventory", *XEN)
    start = cli.json("pool", "list", *XEN)
    server = cli.json("server", "create", "vm1", "--flavor", "k2-medium", *XEN)
    cli.driver("xenserver").destroy(server["uuid"])
    [finding] = cli.json("host", "reconcile", *XEN, expect=1)
    assert (finding["kind"], finding["subject"]) == ("leaked-claim", server["uuid"])
    cli("host", "reconcile", "--apply", *XEN)
    assert cli.json("server", "list", *XEN) == []
    assert cli.json("pool", "list", *XEN) == start


def test_host_init_recreates_the_mdevs_a_reboot_lost(cli):
    server = cli.json("server", "create", "vm1", "--flavor", "t4-small", *LIBVIRT)
    mdev = server["devices"][0]["mdev_uuid"]
    drv = cli.driver("libvirt")
    lost = stray_mdev(mdev)
    lost.parent_addr = "0000:41:00.0"
    drv.release_vgpu(lost)
    assert mdev not in {v.mdev_uuid for v in drv.list_vgpus()}
    rows = cli.json("host", "init", *LIBVIRT)
    assert ("recreated", mdev) in {(r["action"], r["subject"]) for r in rows}
    assert mdev in {v.mdev_uuid for v in drv.list_vgpus()}
    assert cli.json("host", "reconcile", *LIBVIRT) == []


def _outside_guest(drv: ty.Any, name: str) -> tuple[str, str]:
    """A guest with a T4-1B mdev, made behind pci-vgpu's back; (guest, mdev)."""
    from pci_vgpu.virt import driver as virt_driver

    guest, mdev = str(uuid.uuid4()), str(uuid.uuid4())
    dev = stray_mdev(mdev)
    dev.parent_addr = "0000:41:00.0"
    dev.set_vgpu_type("nvidia-222")
    drv.prepare_vgpu(dev)
    drv.spawn(virt_driver.GuestSpec(uuid=guest, name=name), [dev])
    return guest, mdev


def test_capacity_held_for_a_gone_outside_guest_is_reported_and_freed(cli):
    start = cli.json("pool", "list", *LIBVIRT)
    drv = cli.driver("libvirt")
    guest, mdev = _outside_guest(drv, "by-hand")
    cli("pool", "list", "--refresh", *LIBVIRT)  # the mdev is recorded unavailable
    drv.destroy(guest)                         # ... and its guest goes away
    stuck = pools_by_type(cli.json("pool", "list", *LIBVIRT))
    assert stuck[("0000:41:00.0", "nvidia-222")] == 15
    report = cli.json("host", "reconcile", *LIBVIRT, expect=1)
    assert {(f["kind"], f["subject"]) for f in report} == {
        ("orphan-vgpu", mdev), ("stale-inventory", mdev)}
    stale = [f for f in report if f["kind"] == "stale-inventory"][0]
    assert "unavailable" in stale["detail"] and "blocked" in stale["detail"]
    assert all(f["fixed"] for f in cli.json("host", "reconcile", "--apply", *LIBVIRT))
    assert cli.json("host", "reconcile", *LIBVIRT) == []
    assert cli.json("pool", "list", *LIBVIRT) == start


def test_a_normal_inventory_sync_releases_it_too(cli):
    drv = cli.driver("libvirt")
    guest, mdev = _outside_guest(drv, "by-hand")
    cli("host", "inventory", *LIBVIRT)
    drv.destroy(guest)
    [row] = [d for d in cli.json("host", "inventory", *LIBVIRT) if d["mdev_uuid"] == mdev]
    assert row["status"] == "available"


def test_a_create_killed_after_the_guest_started_is_finished(cli):
    """What ``kill -9`` between spawn and allocation leaves, made by hand."""
    from pci_vgpu.cli import wiring
    from pci_vgpu.virt import driver as virt_driver

    service = wiring.service(cli.driver("libvirt"))
    server = str(uuid.uuid4())
    flavor = service.tracker.claim(server, "half", _requests("t4-small"), None)
    service.driver.prepare_vgpu(flavor[0])
    service.driver.spawn(virt_driver.GuestSpec(uuid=server, name="half"), flavor)
    report = cli.json("host", "reconcile", *LIBVIRT, expect=1)
    assert [(f["kind"], f["subject"]) for f in report] == [("unfinished-create", server)]
    assert "never recorded" in report[0]["detail"]
    cli("host", "reconcile", "--apply", *LIBVIRT)
    [listed] = cli.json("server", "list", *LIBVIRT)
    assert (listed["name"], listed["running"], listed["devices"][0]["status"]) == (
        "half", True, "allocated")
    assert cli.json("host", "reconcile", *LIBVIRT) == []


def test_a_create_killed_before_the_guest_ran_is_undone(cli):
    from pci_vgpu.cli import wiring
    from pci_vgpu.virt import driver as virt_driver

    start = cli.json("pool", "list", *LIBVIRT)
    service = wiring.service(cli.driver("libvirt"))
    server = str(uuid.uuid4())
    flavor = service.tracker.claim(server, "half", _requests("t4-small"), None)
    service.driver.prepare_vgpu(flavor[0])
    service.driver.spawn(virt_driver.GuestSpec(uuid=server, name="half"), flavor)
    service.driver.conn.lookupByUUIDString(server).destroy()  # defined, never running
    [finding] = cli.json("host", "reconcile", "--apply", *LIBVIRT)
    assert (finding["kind"], finding["fixed"]) == ("unfinished-create", True)
    assert cli.json("server", "list", *LIBVIRT) == []
    assert cli.driver("libvirt").list_guests() == []
    assert cli.json("pool", "list", *LIBVIRT) == start


def test_an_attach_or_detach_killed_half_way_is_settled(cli):
    from pci_vgpu.cli import wiring

    cli("server", "create", "vm1", "--flavor", "t4-small", *LIBVIRT)
    service = wiring.service(cli.driver("libvirt"))
    [server] = service.list_servers()
    added = service.tracker.claim_more(server.uuid, _requests("t4-small"), 1)
    service.driver.prepare_vgpu(added[0])  # killed before the hot-plug
    [finding] = cli.json("host", "reconcile", "--apply", *LIBVIRT)
    assert (finding["kind"], finding["fixed"]) == ("unfinished-attach", True)
    assert len(cli.json("server", "list", *LIBVIRT)[0]["devices"]) == 1

    hot = cli.json("server", "attach", "vm1", "--flavor", "t4-small", *LIBVIRT)[0]
    dev = [d for d in service.tracker.devices_of(server.uuid)
           if d.mdev_uuid == hot["mdev_uuid"]]
    service.driver.detach_devices(server.uuid, dev)  # killed before freeing it
    [finding] = cli.json("host", "reconcile", "--apply", *LIBVIRT)
    assert (finding["kind"], finding["subject"], finding["fixed"]) == (
        "unplugged-device", hot["mdev_uuid"], True)
    assert len(cli.json("server", "list", *LIBVIRT)[0]["devices"]) == 1
    assert cli.json("host", "reconcile", *LIBVIRT) == []


def _requests(flavor: str) -> ty.Any:
    from pci_vgpu.cli import server as server_cli

    return server_cli.requests_of(flavor)
