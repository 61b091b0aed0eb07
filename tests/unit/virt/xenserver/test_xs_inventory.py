"""XAPI inventory -> pci_passthrough_devices dicts (contract shape, goldens)."""

from __future__ import annotations

import json
import uuid as uuidlib

import pytest

from pci_vgpu import devspec
from pci_vgpu.objects.pci_device import PciDevice
from pci_vgpu.virt.driver import GuestSpec
from pci_vgpu.virt.xenserver import driver as xs_driver
from pci_vgpu.virt.xenserver import inventory
from pci_vgpu.virt.xenserver.driver import XenServerDriver
from pci_vgpu.virt.xenserver.simulator import Simulator
from tests.fixtures import xapi
from tests.fixtures.xapi import grid_k2  # noqa: F401  (pytest fixture)
from tests.fixtures.xapi import mixed_host  # noqa: F401  (pytest fixture)
from tests.fixtures.xapi import xs_driver as driver  # noqa: F401  (pytest fixture)

CONTRACT_KEYS = {"dev_id", "address", "vendor_id", "product_id", "numa_node", "label",
                 "dev_type", "parent_addr"}
GUEST = "5f0c6a4e-5d4c-4a44-9d0e-0a1b2c3d4e5f"
MDEV = "0b1c8f4e-7a52-4a37-9c53-3f0b2f6f6d11"


def test_grid_k2_inventory_golden(grid_k2: Simulator) -> None:
    drv = XenServerDriver(conf=xapi.make_conf(grid_k2.url, numa=["0000:08=0", "0000:09=0",
                                                                 "0000:8=1"]))
    try:
        devices = drv.get_pci_passthrough_devices()
    finally:
        drv.close()
    assert [d["address"] for d in devices] == [
        "0000:08:00.0", "0000:09:00.0", "0000:85:00.0", "0000:86:00.0"]
    assert [d["numa_node"] for d in devices] == [0, 0, 1, 1]
    xapi.compare_to_golden("inventory_grid_k2", devices)


def test_mixed_host_inventory_golden(mixed_host: Simulator) -> None:
    drv = XenServerDriver(conf=xapi.make_conf(mixed_host.url))
    try:
        devices = drv.get_pci_passthrough_devices()
    finally:
        drv.close()
    assert {d["product_id"] for d in devices} == {"13f2", "1eb8"}
    t4 = [d for d in devices if d["product_id"] == "1eb8"][0]
    assert t4["vgpu_types"]["GRID T4-1Q"]["max"] == 16
    assert "passthrough" not in t4["vgpu_types"]
    xapi.compare_to_golden("inventory_m60_t4", devices)


def test_every_device_dict_has_the_contract_keys_and_is_json(driver: XenServerDriver) -> None:
    driver.spawn(GuestSpec(uuid=GUEST, name="g"), [xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV)])
    devices = driver.get_pci_passthrough_devices()
    json.dumps(devices)
    for dev in devices:
        assert CONTRACT_KEYS <= set(dev), dev
    assert [d["dev_type"] for d in devices] == ["type-PCI"] * 4 + ["mdev"]


def test_existing_vgpu_reported_as_mdev_and_capacity_drops(driver: XenServerDriver) -> None:
    driver.spawn(GuestSpec(uuid=GUEST, name="g"), [xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV)])
    devices = {d["address"] or d["mdev_uuid"]: d for d in driver.get_pci_passthrough_devices()}
    vgpu = devices[MDEV]
    assert (vgpu["parent_addr"], vgpu["mdev_type"], vgpu["instance_uuid"]) == (
        "0000:08:00.0", "GRID K240Q", GUEST)
    assert (vgpu["vendor_id"], vgpu["product_id"], vgpu["address"]) == ("10de", "11bf", None)
    gpu = devices["0000:08:00.0"]["vgpu_types"]
    assert (gpu["GRID K240Q"]["available"], gpu["GRID K240Q"]["max"]) == (3, 4)
    assert gpu["GRID K260Q"]["available"] == 0, "the pGPU is locked to K240Q"
    assert devices["0000:09:00.0"]["vgpu_types"]["GRID K260Q"]["available"] == 2


def test_foreign_vgpu_uses_its_own_uuid_and_halted_has_no_parent(grid_k2: Simulator,
                                                                 driver: XenServerDriver) -> None:
    db = grid_k2.db
    vm = db.insert("VM", {"name_label": "by-hand", "power_state": "Halted",
                          "other_config": {}, "resident_on": "OpaqueRef:NULL"})
    group = db.get("PGPU", xapi.pgpu_ref(grid_k2, "0000:85:00.0"))["GPU_group"]
    vgpu = db.insert("VGPU", {"VM": vm, "GPU_group": group, "device": "0",
                              "type": xapi.type_ref(grid_k2, "GRID K200"), "other_config": {},
                              "currently_attached": False, "resident_on": "OpaqueRef:NULL"})
    [dev] = [d for d in driver.get_pci_passthrough_devices() if d["dev_type"] == "mdev"]
    assert dev["mdev_uuid"] == db.get("VGPU", vgpu)["uuid"]
    assert (dev["parent_addr"], dev["instance_uuid"], dev["numa_node"]) == (None, None, None)
    assert dev["product_id"] == "11bf", "vendor/product from the group's GPUs"


def test_whole_gpu_vgpu_is_not_an_mdev(driver: XenServerDriver) -> None:
    driver.spawn(GuestSpec(uuid=GUEST, name="g"), [xapi.make_gpu("0000:85:00.0")])
    devices = driver.get_pci_passthrough_devices()
    assert all(d["dev_type"] == "type-PCI" for d in devices)
    gpu = [d for d in devices if d["address"] == "0000:85:00.0"][0]
    assert {t["available"] for t in gpu["vgpu_types"].values()} == {0}
    assert driver.list_guests()[0].pci_addresses == ("0000:85:00.0",)
    assert driver.list_vgpus() == []


def test_device_dicts_load_into_pci_device_objects(driver: XenServerDriver) -> None:
    driver.spawn(GuestSpec(uuid=GUEST, name="g"), [xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV)])
    objs = [PciDevice.create(None, d) for d in driver.get_pci_passthrough_devices()]
    gpu, vgpu = objs[0], objs[-1]
    assert gpu.vgpu_backend == "xenapi" and gpu.vgpu_sharing == "one-type"
    assert gpu.vgpu_types["GRID K240Q"]["identifier"].startswith("0001:nvidia,0x11bf")
    assert (vgpu.mdev_uuid, vgpu.vgpu_type, vgpu.parent_addr) == (MDEV, "GRID K240Q", "0000:08:00.0")


def test_dev_filter_keeps_gpus_and_their_groups_vgpus(grid_k2: Simulator) -> None:
    whitelist = devspec.Whitelist(['{"address": "0000:85:00.0", "vgpu_types": ["GRID K200"]}'])
    drv = XenServerDriver(conf=xapi.make_conf(grid_k2.url), dev_filter=whitelist)
    try:
        drv.spawn(GuestSpec(uuid=GUEST, name="g"), [xapi.make_vgpu("0000:85:00.0", "GRID K200", MDEV)])
        other = str(uuidlib.uuid4())
        drv.spawn(GuestSpec(uuid=other, name="h"), [xapi.make_vgpu("0000:08:00.0", "GRID K200")])
        devices = drv.get_pci_passthrough_devices()
    finally:
        drv.close()
    assert [(d["address"], d.get("mdev_uuid")) for d in devices] == [
        ("0000:85:00.0", None), (None, MDEV)]
    assert list(devices[0]["vgpu_types"]) == ["GRID K200"], "the spec narrows the types"


@pytest.mark.parametrize("item", ["0000:08", "0000:08=x", "=1", "0000:08=-1"])
def test_bad_numa_map_item_is_named(item: str) -> None:
    with pytest.raises(xs_driver.InvalidNumaMap, match=item):
        XenServerDriver(conf=xapi.make_conf("http://127.0.0.1:1/", numa=[item]))


def test_numa_longest_prefix_wins() -> None:
    table = {"0000:0": "0", "0000:08": "1"}
    assert inventory.numa_node("0000:08:00.0", table) == 1
    assert inventory.numa_node("0000:09:00.0", table) == 0
    assert inventory.numa_node("0000:85:00.0", table) is None
    assert inventory.numa_node(None, table) is None
