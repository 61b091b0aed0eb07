"""The seam keeps the test driver's inventory consistent with its mdevs."""

from __future__ import annotations

import libvirt
import pytest

from pci_vgpu.virt.libvirt import mdev
from pci_vgpu.virt.libvirt import nodedev
from tests.unit.virt.libvirt.conftest import T4, UUID1, UUID2, open_host

IGPU = "0000:00:02.0"
HOST_MDEV = "mdev_7d3c5ae2_4f11_4b8e_9d55_2a1f0e6b7c90_0000_00_02_0"


def _available(conn, dev_id):
    node = nodedev.parse(conn.nodeDeviceLookupByName(dev_id).XMLDesc(0))
    return {t.type_id: t.available for t in node.mdev_types}


def test_one_type_gpu_locks_other_types_while_in_use():
    conn = open_host("two-socket-t4-v100")
    backend = mdev.NodedevBackend(conn)
    backend.create(T4, "nvidia-223", UUID1)
    assert _available(conn, "pci_0000_41_00_0") == {
        "nvidia-222": 0, "nvidia-223": 7, "nvidia-230": 0}
    backend.remove(UUID1, T4)
    assert _available(conn, "pci_0000_41_00_0") == {
        "nvidia-222": 16, "nvidia-223": 8, "nvidia-230": 1}


def test_budget_gpu_shares_between_types():
    conn = open_host("intel-gvtg")
    backend = mdev.NodedevBackend(conn)
    backend.create(IGPU, "i915-GVTg_V5_8", UUID1)  # 1/8 of the aperture
    assert _available(conn, "pci_0000_00_02_0") == {"i915-GVTg_V5_4": 2, "i915-GVTg_V5_8": 5}
    backend.create(IGPU, "i915-GVTg_V5_4", UUID2)
    assert _available(conn, "pci_0000_00_02_0") == {"i915-GVTg_V5_4": 1, "i915-GVTg_V5_8": 3}


def test_removing_a_host_file_mdev_gives_capacity_back():
    conn = open_host("intel-gvtg")
    conn.remove_host_mdev(HOST_MDEV)
    assert _available(conn, "pci_0000_00_02_0") == {"i915-GVTg_V5_4": 4, "i915-GVTg_V5_8": 8}
    with pytest.raises(libvirt.libvirtError) as err:
        conn.nodeDeviceLookupByName(HOST_MDEV)
    assert err.value.get_error_code() == libvirt.VIR_ERR_NO_NODE_DEVICE


def test_transient_mdev_vanishes_on_reboot():
    conn = open_host("two-socket-t4-v100")
    xml = mdev.mdev_device_xml("pci_0000_41_00_0", "nvidia-222", UUID1)
    conn.nodeDeviceCreateXML(xml, 0)
    assert [d.name() for d in conn.listAllDevices(
        libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV)] == [
        "mdev_4b20d080_1b54_4048_85b3_a6a62d165c01_0000_41_00_0"]
    conn.reboot()
    assert conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV) == []
