"""init_host: what a reboot lost comes back; what nobody owns is reported."""

from __future__ import annotations

import pytest

from tests.unit.virt.libvirt.conftest import T4, UUID1, UUID2, from_inventory, mdev_device

VF = "0000:c1:00.4"


@pytest.fixture
def t4_sysfs(sysfs):
    sysfs.populate_parent(T4, "nvidia-222", 16, name="GRID T4-1B")
    return sysfs


def test_sysfs_mdevs_lost_by_reboot_are_recreated_with_their_uuid(make_driver, t4_sysfs):
    drv = make_driver(backend="sysfs")
    vgpu = mdev_device()
    drv.prepare_vgpu(vgpu)
    t4_sysfs.reboot()
    assert t4_sysfs.mdevs() == {}
    report = drv.init_host([vgpu])
    assert report.recreated == [UUID1] and report.orphans == []
    assert t4_sysfs.mdevs() == {UUID1: "nvidia-222"}
    assert drv.init_host([vgpu]).recreated == []  # nothing lost the second time


def test_orphans_are_reported_and_kept_by_default(make_driver, t4_sysfs):
    drv = make_driver(backend="sysfs")
    t4_sysfs.add_mdev(T4, "nvidia-222", UUID2)
    report = drv.init_host([])
    assert [(o.mdev_uuid, o.parent_addr, o.vgpu_type) for o in report.orphans] == [
        (UUID2, T4, "nvidia-222")]
    assert report.removed == [] and UUID2 in t4_sysfs.mdevs()


def test_orphans_removed_when_configured_unless_a_guest_uses_them(make_driver, t4_sysfs):
    from pci_vgpu.virt import driver as virt_driver
    drv = make_driver(backend="sysfs", remove_orphan_mdevs=True)
    t4_sysfs.add_mdev(T4, "nvidia-222", UUID2)
    drv.prepare_vgpu(mdev_device())
    guest = virt_driver.GuestSpec(uuid="0b6f1c1e-aaaa-4c5b-8e7f-9a0b1c2d3e4f", name="g")
    drv.spawn(guest, [mdev_device()])
    report = drv.init_host([])  # the tracker lost both records
    assert sorted(o.mdev_uuid for o in report.orphans) == sorted([UUID1, UUID2])
    assert report.removed == [UUID2]
    assert list(t4_sysfs.mdevs()) == [UUID1]


def test_nodedev_mdevs_survive_reboot_so_nothing_to_recreate(make_driver):
    drv = make_driver()
    vgpu = mdev_device()
    drv.prepare_vgpu(vgpu)
    drv.conn.reboot()
    assert drv.init_host([vgpu]).recreated == []
    assert [v.mdev_uuid for v in drv.list_vgpus()] == [UUID1]


def test_nvidia_vf_types_are_reapplied_after_reboot(make_driver, sysfs):
    for fn in range(4, 8):
        sysfs.add_nvidia_vf("0000:c1:00.%d" % fn, {"1155": "NVIDIA L40S-4Q"})
    drv = make_driver(host="nvidia-l40s-sriov")
    inventory = {d["address"]: d for d in drv.get_pci_passthrough_devices()}
    vf = from_inventory(inventory[VF])
    vf.set_vgpu_type("nvidia-1155")
    drv.prepare_vgpu(vf)
    sysfs.reboot()
    assert sysfs.current_type(VF) == "0"
    report = drv.init_host([vf])
    assert report.recreated == [VF] and sysfs.current_type(VF) == "1155"
    assert report.orphans == []
    drv.release_vgpu(vf)
    assert sysfs.current_type(VF) == "0"


def test_defined_mdev_whose_autostart_failed_is_started(make_driver):
    drv = make_driver()
    vgpu = mdev_device()
    drv.prepare_vgpu(vgpu)
    drv.conn._mdevs[UUID1].autostart = False  # mdevctl could not set autostart
    drv.conn.reboot()
    assert [d["dev_type"] for d in drv.get_pci_passthrough_devices()].count("mdev") == 0
    assert drv.init_host([vgpu]).recreated == [UUID1]
    assert [(m.mdev_uuid, m.active) for m in drv.mdevs.list()] == [(UUID1, True)]
    assert [d.get("mdev_uuid") for d in drv.get_pci_passthrough_devices()][-1] == UUID1
