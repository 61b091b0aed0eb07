"""The no-op reference driver keeps the promises of the VirtDriver interface."""

from __future__ import annotations

import pytest

from pci_vgpu.objects import pci_device
from pci_vgpu.virt import driver
from pci_vgpu.virt import exception as virt_exc
from pci_vgpu.virt import noop

T4 = {
    "dev_id": "pci_0000_41_00_0", "address": "0000:41:00.0", "parent_addr": None,
    "vendor_id": "10de", "product_id": "1eb8", "numa_node": 1,
    "label": "label_10de_1eb8", "dev_type": "type-PCI",
    "vgpu_sharing": "one-type", "vgpu_backend": "mdev",
    "vgpu_types": {
        "nvidia-222": {"name": "GRID T4-1B", "description": "", "device_api": "vfio-pci",
                       "available": 16, "max": 16, "identifier": None},
        "nvidia-230": {"name": "GRID T4-16Q", "description": "", "device_api": "vfio-pci",
                       "available": 1, "max": 1, "identifier": None},
    },
}
UUID1 = "0b7a2f3c-1111-4222-8333-444455556666"
UUID2 = "0b7a2f3c-1111-4222-8333-777788889999"


def mdev(uuid: str, vgpu_type: str = "nvidia-222") -> pci_device.PciDevice:
    dev = pci_device.PciDevice.create(None, {
        "dev_id": "mdev_" + uuid, "address": None, "parent_addr": T4["address"],
        "vendor_id": "10de", "product_id": "1eb8", "numa_node": 1,
        "label": "label_10de_1eb8", "dev_type": "mdev", "mdev_uuid": uuid})
    dev.set_vgpu_type(vgpu_type)
    return dev


@pytest.fixture
def drv() -> noop.NoopDriver:
    return noop.NoopDriver(devices=[T4])


def test_describe_names_the_driver(drv):
    info = drv.describe()
    assert (info.name, info.hot_plug) == ("noop", True)


def test_prepared_vgpu_shows_in_inventory_and_uses_capacity(drv):
    drv.prepare_vgpu(mdev(UUID1))
    devices = {d.get("mdev_uuid") or d["address"]: d for d in drv.get_pci_passthrough_devices()}
    assert devices[UUID1]["dev_type"] == "mdev"
    assert devices[UUID1]["parent_addr"] == "0000:41:00.0"
    types = devices["0000:41:00.0"]["vgpu_types"]
    assert types["nvidia-222"]["available"] == 15
    # one-type GPU: another type cannot be created next to nvidia-222
    assert types["nvidia-230"]["available"] == 0


def test_prepare_is_idempotent_but_refuses_a_type_change(drv):
    drv.prepare_vgpu(mdev(UUID1))
    drv.prepare_vgpu(mdev(UUID1))
    assert len(drv.list_vgpus()) == 1
    with pytest.raises(virt_exc.VgpuCreateFailed, match="nvidia-230"):
        drv.prepare_vgpu(mdev(UUID1, "nvidia-230"))


def test_release_of_missing_vgpu_is_not_an_error(drv):
    drv.release_vgpu(mdev(UUID1))
    assert drv.list_vgpus() == []


def test_spawn_refuses_unprepared_vgpu_and_leaves_nothing(drv):
    guest = driver.GuestSpec(uuid="g1", name="vm1", numa_node=1)
    with pytest.raises(virt_exc.GuestSpawnFailed, match=UUID1):
        drv.spawn(guest, [mdev(UUID1)])
    assert drv.list_guests() == []


def test_spawn_attach_detach_destroy(drv):
    one, two = mdev(UUID1), mdev(UUID2)
    drv.prepare_vgpu(one)
    drv.spawn(driver.GuestSpec(uuid="g1", name="vm1"), [one])
    drv.prepare_vgpu(two)
    drv.attach_devices("g1", [two])
    assert drv.list_guests()[0].mdev_uuids == (UUID1, UUID2)
    assert {v.instance_uuid for v in drv.list_vgpus()} == {"g1"}
    drv.detach_devices("g1", [two])
    assert drv.list_guests()[0].mdev_uuids == (UUID1,)
    drv.destroy("g1")
    drv.destroy("g1")
    assert drv.list_guests() == []
    assert {v.instance_uuid for v in drv.list_vgpus()} == {None}


def test_attach_is_all_or_nothing(drv):
    one, two = mdev(UUID1), mdev(UUID2)
    drv.prepare_vgpu(one)
    drv.spawn(driver.GuestSpec(uuid="g1", name="vm1"), [])
    with pytest.raises(virt_exc.DeviceAttachFailed, match=UUID2):
        drv.attach_devices("g1", [one, two])
    assert drv.list_guests()[0].mdev_uuids == ()


def test_attach_without_hot_plug(drv):
    cold = noop.NoopDriver(devices=[T4], hot_plug=False)
    cold.spawn(driver.GuestSpec(uuid="g1", name="vm1"), [])
    with pytest.raises(virt_exc.HotPlugNotSupported):
        cold.attach_devices("g1", [mdev(UUID1)])


def test_init_host_recreates_allocated_and_reports_orphans(drv):
    drv.prepare_vgpu(mdev(UUID2))
    report = drv.init_host([mdev(UUID1)])
    assert report.recreated == [UUID1]
    assert [o.mdev_uuid for o in report.orphans] == [UUID2]
