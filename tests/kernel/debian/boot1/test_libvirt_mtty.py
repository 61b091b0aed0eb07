"""The libvirt driver on a real libvirtd + mdevctl, with the mtty parent.

Inventory through ``qemu:///system`` against the kernel's own counts, and
persistent mdevs through nodedev define/start/autostart (mdevctl writes
the definition), removed with destroy/undefine.
"""

from __future__ import annotations

import os
import uuid

import libvirt
import pytest

from pci_vgpu.virt import exception
from pci_vgpu.virt.libvirt import inventory
from tests.kernel.debian import lab

pytestmark = pytest.mark.kernel


@pytest.fixture
def drv(tmp_path):
    driver = lab.make_driver(str(tmp_path))
    yield driver
    for found in driver.mdevs.list():  # nothing of one test leaks into the next
        if found.parent_addr == lab.MTTY:
            driver.mdevs.remove(found.mdev_uuid, found.parent_addr)
    driver.close()


def _mtty_entry(drv):
    [entry] = [d for d in drv.get_pci_passthrough_devices() if d["address"] == lab.MTTY]
    return entry


def _types(entry):
    return {t: (e["name"], e["available"]) for t, e in entry["vgpu_types"].items()}


def test_inventory_reports_mttys_types_and_counts_as_sysfs(drv):
    entry = _mtty_entry(drv)
    assert entry["dev_id"] == lab.MTTY_NODE
    # A virtual parent: named, with no PCI identity (the never-assigned
    # placeholder id) and no NUMA node; its ports are one budget, as its
    # sysfs subsystem (mtty) says.
    assert (entry["vendor_id"], entry["product_id"], entry["numa_node"]) == (
        inventory.NO_PCI_ID, inventory.NO_PCI_ID, None)
    assert (entry["virtual_parent"], entry["vgpu_sharing"]) == (True, "budget")
    assert _types(entry) == lab.sysfs_types(lab.MTTY) == {
        "mtty-1": ("Single port serial", 24), "mtty-2": ("Dual port serial", 12)}
    assert {e["max"] for e in entry["vgpu_types"].values()} == {24, 12}


def test_inventory_follows_the_kernel_after_a_create(drv):
    mdev_uuid = str(uuid.uuid4())
    drv.prepare_vgpu(lab.AllocatedMdev(mdev_uuid, "mtty-2"))
    devices = drv.get_pci_passthrough_devices()
    [entry] = [d for d in devices if d["address"] == lab.MTTY]
    assert _types(entry) == lab.sysfs_types(lab.MTTY) == {
        "mtty-1": ("Single port serial", 22), "mtty-2": ("Dual port serial", 11)}
    [mdev] = [d for d in devices if d.get("mdev_uuid") == mdev_uuid]
    assert (mdev["dev_type"], mdev["parent_addr"], mdev["mdev_type"]) == (
        "mdev", lab.MTTY, "mtty-2")
    assert mdev["dev_id"] == lab.mdev_node_name(mdev_uuid)
    assert mdev["iommu_group"] == int(os.path.basename(os.readlink(
        "/sys/bus/mdev/devices/%s/iommu_group" % mdev_uuid)))


def test_persistent_mdev_through_define_start_autostart(drv):
    mdev_uuid = str(uuid.uuid4())
    drv.prepare_vgpu(lab.AllocatedMdev(mdev_uuid, "mtty-1"))

    dev = drv.conn.nodeDeviceLookupByName(lab.mdev_node_name(mdev_uuid))
    assert (dev.isActive(), dev.isPersistent(), dev.autostart()) == (1, 1, 1)
    assert lab.sysfs_mdev_type(mdev_uuid) == "mtty-1"
    assert mdev_uuid in lab.defined_uuids()
    assert "auto" in lab.mdevctl("list", "--defined", "--uuid", mdev_uuid)
    assert [(m.mdev_uuid, m.mdev_type, m.parent_addr, m.active) for m in drv.mdevs.list()] == [
        (mdev_uuid, "mtty-1", lab.MTTY, True)]

    drv.release_vgpu(lab.AllocatedMdev(mdev_uuid, "mtty-1"))

    def gone():
        try:
            drv.conn.nodeDeviceLookupByName(lab.mdev_node_name(mdev_uuid))
        except libvirt.libvirtError as exc:
            return exc.get_error_code() == libvirt.VIR_ERR_NO_NODE_DEVICE
        return False
    # libvirtd forgets the node device when udev reports the removal.
    lab.wait_for(gone, 30, "libvirt forgets mdev %s" % mdev_uuid)
    assert lab.sysfs_mdev_type(mdev_uuid) is None
    assert mdev_uuid not in lab.defined_uuids()
    assert drv.mdevs.list() == []


def test_a_create_the_kernel_refuses_leaves_nothing_defined(drv):
    # 11 two-port mdevs made behind libvirt's back take 22 of 24 ports.
    base = "/sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2/create"
    hand_made = [str(uuid.uuid4()) for _ in range(11)]
    try:
        for mdev_uuid in hand_made:
            with open(base, "w") as create:
                create.write(mdev_uuid)
        last = str(uuid.uuid4())
        drv.prepare_vgpu(lab.AllocatedMdev(last, "mtty-2"))
        assert lab.sysfs_types(lab.MTTY)["mtty-2"][1] == 0
        refused = str(uuid.uuid4())
        with pytest.raises(exception.VgpuCreateFailed) as failed:
            drv.prepare_vgpu(lab.AllocatedMdev(refused, "mtty-2"))
        message = failed.value.format_message()
        assert refused in message and "mtty-2" in message and "GPU mtty" in message
        assert "No available instances" in message
        assert refused not in lab.defined_uuids()
        assert refused not in {m.mdev_uuid for m in drv.mdevs.list()}
    finally:
        for mdev_uuid in hand_made:
            with open("/sys/bus/mdev/devices/%s/remove" % mdev_uuid, "w") as remove:
                remove.write("1")
        # Until udev tells libvirtd, it still lists them (and fails to
        # destroy them: "failed to access .../iommu_group").
        lab.wait_for(lambda: not set(hand_made) & {m.mdev_uuid for m in drv.mdevs.list()},
                     60, "libvirt forgets the hand-made mdevs")


def test_an_unknown_type_is_refused_naming_it(drv):
    refused = str(uuid.uuid4())
    with pytest.raises(exception.VgpuCreateFailed, match="nope") as failed:
        drv.prepare_vgpu(lab.AllocatedMdev(refused, "nope"))
    assert refused in failed.value.format_message()
    assert refused not in lab.defined_uuids()
