"""mdev backends: sysfs on a fake tree (tier 2), nodedev on the seam (tier 3)."""

from __future__ import annotations

import libvirt
import pytest

from pci_vgpu import exception as pci_exception
from pci_vgpu.virt import exception
from pci_vgpu.virt.libvirt import mdev
from pci_vgpu.virt.libvirt import testkernel
from pci_vgpu.virt.libvirt import testseam
from tests.unit.virt.libvirt.conftest import T4, UUID1, UUID2, golden, open_host


@pytest.fixture
def t4_sysfs(sysfs):
    sysfs.populate_parent(T4, "nvidia-222", 2, name="GRID T4-1B")
    sysfs.populate_parent(T4, "nvidia-223", 1, name="GRID T4-2B")
    return sysfs


def test_sysfs_create_list_remove(t4_sysfs):
    backend = mdev.SysfsBackend(t4_sysfs.root)
    backend.create(T4, "nvidia-222", UUID1.upper())
    assert t4_sysfs.writes == [(
        "sys/class/mdev_bus/0000:41:00.0/mdev_supported_types/nvidia-222/create", UUID1)]
    assert backend.list() == [mdev.Mdev(UUID1, "nvidia-222", T4)]
    assert (t4_sysfs.available(T4, "nvidia-222"), t4_sysfs.available(T4, "nvidia-223")) == (1, 0)
    backend.remove(UUID1, T4)
    assert backend.list() == []
    assert t4_sysfs.available(T4, "nvidia-223") == 1


def test_sysfs_unknown_type_names_the_offered_ones(t4_sysfs):
    with pytest.raises(exception.VgpuCreateFailed) as err:
        mdev.SysfsBackend(t4_sysfs.root).create(T4, "nvidia-999", UUID1)
    assert "nvidia-999" in str(err.value) and "nvidia-222, nvidia-223" in str(err.value)
    assert t4_sysfs.writes == []


def test_sysfs_kernel_refusal_is_a_create_failure(t4_sysfs):
    backend = mdev.SysfsBackend(t4_sysfs.root)
    backend.create(T4, "nvidia-223", UUID1)
    with pytest.raises(exception.VgpuCreateFailed, match="the kernel refused: Invalid argument"):
        backend.create(T4, "nvidia-223", UUID2)
    assert [m.mdev_uuid for m in backend.list()] == [UUID1]


@pytest.mark.parametrize("args", [(T4, "../../../etc", UUID1), (T4, "nvidia-222", "x/../y"),
                                  ("../0000:41:00.0", "nvidia-222", UUID1)])
def test_sysfs_bad_names_never_touch_a_path(t4_sysfs, args):
    with pytest.raises((pci_exception.InvalidVgpuTypeName, exception.InvalidVgpuName)):
        mdev.SysfsBackend(t4_sysfs.root).create(*args)
    assert t4_sysfs.writes == []


def test_sysfs_remove_absent_is_fine_and_busy_is_an_error(t4_sysfs):
    backend = mdev.SysfsBackend(t4_sysfs.root)
    backend.remove(UUID2, T4)
    backend.create(T4, "nvidia-222", UUID1)
    t4_sysfs.in_use.add(UUID1)
    with pytest.raises(exception.VgpuRemoveFailed, match="busy"):
        backend.remove(UUID1, T4)
    assert [m.mdev_uuid for m in backend.list()] == [UUID1]


def test_nodedev_xml_matches_golden():
    golden("mdev-nodedev.xml", mdev.mdev_device_xml("pci_0000_41_00_0", "nvidia-222", UUID1))


def test_nodedev_create_is_persistent_and_shows_in_inventory():
    conn = open_host("two-socket-t4-v100")
    backend = mdev.NodedevBackend(conn)
    backend.create(T4, "nvidia-223", UUID1)
    assert backend.list() == [mdev.Mdev(UUID1, "nvidia-223", T4)]
    dev = next(d for d in conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV))
    assert (dev.isActive(), dev.isPersistent(), dev.state.autostart) == (1, 1, True)
    conn.reboot()  # defined + autostart: it comes back
    assert backend.list() == [mdev.Mdev(UUID1, "nvidia-223", T4)]
    backend.remove(UUID1, T4)
    assert backend.list() == []
    conn.reboot()
    assert backend.list() == []


def test_nodedev_failed_define_leaves_nothing():
    conn = open_host("two-socket-t4-v100")
    conn.fail_next("nodeDeviceDefineXML", testseam.libvirt_error(
        libvirt.VIR_ERR_INTERNAL_ERROR, "Cannot find 'mdevctl' in path"))
    backend = mdev.NodedevBackend(conn)
    with pytest.raises(exception.VgpuCreateFailed, match="persistent: Cannot find 'mdevctl'"):
        backend.create(T4, "nvidia-223", UUID1)
    assert backend.list() == []


def test_nodedev_failed_define_and_failed_destroy_names_both():
    conn = open_host("two-socket-t4-v100")
    conn.fail_next("nodeDeviceDefineXML", testseam.libvirt_error(
        libvirt.VIR_ERR_INTERNAL_ERROR, "Cannot find 'mdevctl' in path"))
    conn.fail_next("nodeDeviceDestroy", testseam.libvirt_error(
        libvirt.VIR_ERR_INTERNAL_ERROR, "device busy"))
    backend = mdev.NodedevBackend(conn)
    with pytest.raises(exception.VgpuCreateFailed,
                       match="persistent: Cannot find 'mdevctl'.*still exists.*device busy"):
        backend.create(T4, "nvidia-223", UUID1)
    assert backend.list() == [mdev.Mdev(UUID1, "nvidia-223", T4)]


def test_nodedev_create_without_capacity_fails_with_libvirts_reason():
    backend = mdev.NodedevBackend(open_host("two-socket-t4-v100"))
    backend.create(T4, "nvidia-230", UUID1)  # T4-16Q: one per GPU
    with pytest.raises(exception.VgpuCreateFailed, match="no available instances"):
        backend.create(T4, "nvidia-230", UUID2)


def test_nodedev_unknown_parent():
    backend = mdev.NodedevBackend(open_host("two-socket-t4-v100"))
    with pytest.raises(exception.VgpuCreateFailed, match="no PCI device at that address"):
        backend.create("0000:99:00.0", "nvidia-223", UUID1)


class _Vanished:
    """A node device libvirtd listed and then dropped (udev saw it go)."""

    def XMLDesc(self, flags):
        raise testkernel.libvirt_error(libvirt.VIR_ERR_NO_NODE_DEVICE,
                                       "Node device not found: no node device with "
                                       "matching name 'mdev_x'")


class _ListsAVanishedDevice:
    """The connection, with one vanished device in every listing."""

    def __init__(self, conn):
        self.conn = conn

    def listAllDevices(self, flags):
        return [_Vanished()] + list(self.conn.listAllDevices(flags))

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_nodedev_skips_a_device_that_vanishes_while_listed():
    # Seen on libvirtd 9.0 in the Debian kernel-lab guest right after
    # mdevs were removed through sysfs.
    conn = open_host("two-socket-t4-v100")
    mdev.NodedevBackend(conn).create(T4, "nvidia-223", UUID1)
    backend = mdev.NodedevBackend(_ListsAVanishedDevice(conn))
    assert backend.list() == [mdev.Mdev(UUID1, "nvidia-223", T4)]
    backend.remove(UUID1, T4)
    assert backend.list() == []
