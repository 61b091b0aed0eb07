"""An embedded test host kept in a store: two seams on one store are two
processes on one host (each call sees what the other saved)."""

from __future__ import annotations

import json
import os
import shutil

import libvirt
import pytest

from pci_vgpu.virt import driver
from pci_vgpu.virt.libvirt import driver as driver_mod
from pci_vgpu.virt.libvirt import guests
from pci_vgpu.virt.libvirt import hostdev
from pci_vgpu.virt.libvirt import mdev
from pci_vgpu.virt.libvirt import nodedev
from pci_vgpu.virt.libvirt import testseam
from pci_vgpu.virt.libvirt import teststore
from tests.unit.virt.libvirt.conftest import GUEST, T4, UUID1, UUID2

IGPU = "0000:00:02.0"
HOST_MDEV_UUID = "7d3c5ae2-4f11-4b8e-9d55-2a1f0e6b7c90"
T4_ID = "pci_0000_41_00_0"


def _store(tmp_path, host="two-socket-t4-v100"):
    source = os.path.join(driver_mod.HOSTS_DIR, host + ".xml")
    return teststore.HostStore(teststore.store_dir(str(tmp_path), source), source)


def _two(tmp_path, host="two-socket-t4-v100"):
    """Two seams on one stored host, as two processes would open it."""
    return (testseam.TestDriverSeam.open_stored(_store(tmp_path, host)),
            testseam.TestDriverSeam.open_stored(_store(tmp_path, host)))


def _available(conn, dev_id):
    node = nodedev.parse(conn.nodeDeviceLookupByName(dev_id).XMLDesc(0))
    return {t.type_id: t.available for t in node.mdev_types}


def test_an_mdev_made_by_one_process_is_seen_by_the_next(tmp_path):
    one, two = _two(tmp_path)
    mdev.NodedevBackend(one).create(T4, "nvidia-223", UUID1)
    assert mdev.NodedevBackend(two).list() == [mdev.Mdev(UUID1, "nvidia-223", T4)]
    assert _available(two, T4_ID) == {"nvidia-222": 0, "nvidia-223": 7, "nvidia-230": 0}
    three = testseam.TestDriverSeam.open_stored(_store(tmp_path))  # a later process
    mdev.NodedevBackend(three).remove(UUID1, T4)
    assert mdev.NodedevBackend(one).list() == []
    assert _available(one, T4_ID) == {"nvidia-222": 16, "nvidia-223": 8, "nvidia-230": 1}


def test_the_kernel_refuses_what_another_process_already_took(tmp_path):
    one, two = _two(tmp_path)
    mdev.NodedevBackend(one).create(T4, "nvidia-230", UUID1)  # T4-16Q: one per GPU
    with pytest.raises(Exception, match="no available instances"):
        mdev.NodedevBackend(two).create(T4, "nvidia-230", UUID2)


def test_guests_and_their_run_state_persist(tmp_path):
    one, two = _two(tmp_path)
    mdev.NodedevBackend(one).create(T4, "nvidia-222", UUID1)
    guests.spawn(one, driver.GuestSpec(uuid=GUEST, name="vm1"), [hostdev.mdev(UUID1)], "test")
    [seen] = guests.list_guests(two)
    assert (seen.uuid, seen.running, seen.mdev_uuids) == (GUEST, True, (UUID1,))
    guests.destroy(two, GUEST)
    assert guests.list_guests(one) == []


def test_a_handle_stays_valid_after_another_process_changed_the_host(tmp_path):
    one, two = _two(tmp_path)
    guests.spawn(one, driver.GuestSpec(uuid=GUEST, name="vm1"), [], "test")
    dom = guests.lookup(one, GUEST)
    mdev.NodedevBackend(two).create(T4, "nvidia-222", UUID1)  # one reloads on next call
    guests.attach(one, GUEST, [hostdev.mdev(UUID1)])
    assert dom.isActive() and [d.mdev_uuid for d in guests.plugged(dom)] == [UUID1]
    [seen] = guests.list_guests(two)
    assert seen.mdev_uuids == (UUID1,)


def test_host_file_mdevs_are_absorbed_and_their_removal_persists(tmp_path):
    one, two = _two(tmp_path, "intel-gvtg")
    backend = mdev.NodedevBackend(one)
    assert [m.mdev_uuid for m in backend.list()] == [HOST_MDEV_UUID]
    guests.destroy(one, guests.list_guests(one)[0].uuid)  # the guest using it
    backend.remove(HOST_MDEV_UUID, IGPU)
    assert mdev.NodedevBackend(two).list() == []
    assert _available(two, "pci_0000_00_02_0") == {"i915-GVTg_V5_4": 4, "i915-GVTg_V5_8": 8}


def test_defined_mdevs_are_mdevctl_configs_and_survive_a_reboot(tmp_path):
    one, two = _two(tmp_path)
    mdev.NodedevBackend(one).create(T4, "nvidia-222", UUID1)
    store = _store(tmp_path)
    with open(os.path.join(store.directory, "mdevctl.d", T4, UUID1)) as handle:
        assert json.load(handle) == {"mdev_type": "nvidia-222", "start": "auto", "attrs": []}
    two.reboot()
    assert mdev.NodedevBackend(one).list() == [mdev.Mdev(UUID1, "nvidia-222", T4)]


def test_a_config_write_killed_before_its_rename_is_not_an_mdev(tmp_path):
    """kill -9 between replace_file's write and its rename leaves a complete
    temporary file beside the configs; it was never committed (found by the
    fault suite: reconcile took it for an orphan mdev named <uuid>.<pid>.tmp)."""
    one, _ = _two(tmp_path)
    mdev.NodedevBackend(one).create(T4, "nvidia-222", UUID1)
    store = _store(tmp_path)
    folder = os.path.join(store.directory, "mdevctl.d", T4)
    shutil.copy(os.path.join(folder, UUID1), os.path.join(folder, UUID2 + ".4242.tmp"))
    assert set(store.read_configs()) == {UUID1}
    three = testseam.TestDriverSeam.open_stored(_store(tmp_path))  # a later process
    assert mdev.NodedevBackend(three).list() == [mdev.Mdev(UUID1, "nvidia-222", T4)]
    mdev.NodedevBackend(three).remove(UUID1, T4)  # the next save sweeps the leftover
    assert not os.path.exists(folder)


def test_the_saved_host_is_a_test_driver_host_file(tmp_path):
    one, _ = _two(tmp_path)
    mdev.NodedevBackend(one).create(T4, "nvidia-222", UUID1)
    guests.spawn(one, driver.GuestSpec(uuid=GUEST, name="vm1"), [hostdev.mdev(UUID1)], "test")
    plain = libvirt.open(_store(tmp_path).uri)  # no seam: libvirt reads the file itself
    names = [d.name() for d in plain.listAllDevices(
        libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV)]
    assert names == ["mdev_4b20d080_1b54_4048_85b3_a6a62d165c01_0000_41_00_0"]
    assert _available(plain, T4_ID)["nvidia-222"] == 15
    assert [(d.UUIDString(), d.isActive()) for d in plain.listAllDomains(0)] == [(GUEST, 1)]


def test_a_changed_host_file_is_a_new_host(tmp_path):
    source = tmp_path / "host.xml"
    shutil.copy(os.path.join(driver_mod.HOSTS_DIR, "two-socket-t4-v100.xml"), source)
    before = teststore.store_dir(str(tmp_path / "state"), str(source))
    source.write_text(source.read_text().replace("<mhz>2400</mhz>", "<mhz>2600</mhz>"))
    assert teststore.store_dir(str(tmp_path / "state"), str(source)) != before


def test_an_unusable_state_dir_names_the_option(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    source = os.path.join(driver_mod.HOSTS_DIR, "two-socket-t4-v100.xml")
    store = teststore.HostStore(teststore.store_dir(str(blocker), source), source)
    with pytest.raises(teststore.StateDirUnusable, match=r"\[host\] state_dir .*file"):
        testseam.TestDriverSeam.open_stored(store)


def test_the_driver_keeps_a_test_host_in_state_dir(conf, tmp_path):
    conf.set_override("connection_uri", driver_mod.host_uri("two-socket-t4-v100"),
                      group="libvirt")
    first = driver_mod.LibvirtDriver(conf=conf)
    first.spawn(driver.GuestSpec(uuid=GUEST, name="vm1"), [])
    second = driver_mod.LibvirtDriver(conf=conf)
    assert [(g.uuid, g.running) for g in second.list_guests()] == [(GUEST, True)]
    assert os.listdir(tmp_path / "state" / "libvirt-test")
