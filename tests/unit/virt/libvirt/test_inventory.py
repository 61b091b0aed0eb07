"""Inventory read from the real libvirt test driver (tier 1) plus fake sysfs."""

from __future__ import annotations

import json
import logging

import libvirt
import pytest

from pci_vgpu import devspec
from pci_vgpu.virt import exception
from pci_vgpu.virt.libvirt import driver as libvirt_driver
from pci_vgpu.virt.libvirt import testseam
from tests.unit.virt.libvirt.conftest import T4, UUID1, V100, golden, mdev_device


def _by_address(devs):
    return {d["address"] or d["mdev_uuid"]: d for d in devs}


def test_two_socket_host_matches_golden(make_driver):
    devs = make_driver().get_pci_passthrough_devices()
    golden("inventory-two-socket-t4-v100.json", json.dumps(devs, indent=2, sort_keys=True) + "\n")


def test_gpus_carry_numa_iommu_and_types(make_driver):
    devs = _by_address(make_driver().get_pci_passthrough_devices())
    t4, v100 = devs[T4], devs[V100]
    assert (t4["numa_node"], v100["numa_node"]) == (1, 0)
    assert (t4["iommu_group"], t4["label"], t4["dev_type"]) == (40, "label_10de_1eb8", "type-PCI")
    assert t4["vgpu_types"]["nvidia-223"] == {
        "name": "GRID T4-2B", "description": "", "device_api": "vfio-pci",
        "available": 8, "max": 8, "identifier": None}
    assert (t4["vgpu_sharing"], t4["vgpu_backend"]) == ("one-type", "mdev")


def test_existing_mdev_and_its_owner_from_the_guest_xml(make_driver):
    devs = make_driver(host="intel-gvtg").get_pci_passthrough_devices()
    igpu, mdev = devs
    assert igpu["numa_node"] is None  # no <numa> in the node device
    assert igpu["vgpu_sharing"] == "budget"
    assert {t: (v["available"], v["max"]) for t, v in igpu["vgpu_types"].items()} == {
        "i915-GVTg_V5_4": (3, 4), "i915-GVTg_V5_8": (6, 8)}
    assert igpu["vgpu_types"]["i915-GVTg_V5_4"]["name"] == "i915-GVTg_V5_4"  # GVT-g has no name
    assert mdev == {
        "dev_id": "mdev_7d3c5ae2_4f11_4b8e_9d55_2a1f0e6b7c90_0000_00_02_0",
        "address": None, "vendor_id": "8086", "product_id": "3e92", "numa_node": None,
        "label": "label_8086_3e92", "dev_type": "mdev", "parent_addr": "0000:00:02.0",
        "iommu_group": 12, "mdev_uuid": "7d3c5ae2-4f11-4b8e-9d55-2a1f0e6b7c90",
        "mdev_type": "i915-GVTg_V5_4",
        "instance_uuid": "0b6f1c1e-2d3a-4c5b-8e7f-9a0b1c2d3e4f"}


def test_amd_mxgpu_pf_and_vfs(make_driver):
    devs = _by_address(make_driver(host="amd-mxgpu").get_pci_passthrough_devices())
    assert devs["0000:03:00.0"]["dev_type"] == "type-PF"
    vfs = [d for d in devs.values() if d["dev_type"] == "type-VF"]
    assert [v["address"] for v in vfs] == ["0000:03:02.%d" % i for i in range(4)]
    assert {v["parent_addr"] for v in vfs} == {"0000:03:00.0"}
    assert all("vgpu_types" not in v for v in vfs)


def test_sysfs_adds_description_and_max_instance(make_driver, sysfs):
    sysfs.populate_parent(T4, "nvidia-222", 16, name="GRID T4-1B",
                          description="num_heads=4, frl_config=45, framebuffer=1024M, "
                                      "max_resolution=5120x2880, max_instance=16")
    drv = make_driver()
    drv.prepare_vgpu(mdev_device(vgpu_type="nvidia-223"))
    t4 = _by_address(drv.get_pci_passthrough_devices())[T4]
    # nvidia-222 reports 0 available while a T4-2B exists (one type at a time),
    # but its max comes from the NVIDIA description.
    assert t4["vgpu_types"]["nvidia-222"]["available"] == 0
    assert t4["vgpu_types"]["nvidia-222"]["max"] == 16
    assert "max_instance=16" in t4["vgpu_types"]["nvidia-222"]["description"]
    assert (t4["vgpu_types"]["nvidia-223"]["available"],
            t4["vgpu_types"]["nvidia-223"]["max"]) == (7, 8)


def test_only_devices_matched_by_device_spec(make_driver):
    drv = make_driver()
    drv.dev_filter = devspec.Whitelist([
        '{"vendor_id": "10de", "product_id": "1eb8", "vgpu_types": ["nvidia-222"]}'])
    drv.prepare_vgpu(mdev_device())
    devs = drv.get_pci_passthrough_devices()
    assert [(d["address"], d.get("mdev_uuid")) for d in devs] == [(T4, None), (None, UUID1)]
    assert list(devs[0]["vgpu_types"]) == ["nvidia-222"]  # the spec narrows the types


def test_device_vanishing_between_list_and_lookup_is_skipped(make_driver, caplog):
    drv = make_driver()
    drv.conn.fail_next("nodeDeviceLookupByName", testseam.libvirt_error(
        libvirt.VIR_ERR_NO_NODE_DEVICE, "Node device not found"))
    with caplog.at_level(logging.INFO):
        devs = drv.get_pci_passthrough_devices()
    assert [d["address"] for d in devs] == [V100, T4]  # the first (the NIC) vanished
    assert "pci_0000_05_00_0 disappeared" in caplog.text


def test_other_libvirt_errors_are_driver_errors(make_driver):
    drv = make_driver()
    drv.conn.fail_next("nodeDeviceLookupByName", testseam.libvirt_error(
        libvirt.VIR_ERR_INTERNAL_ERROR, "internal error: boom"))
    with pytest.raises(exception.VirtDriverError, match="boom"):
        drv.get_pci_passthrough_devices()


def test_nvidia_vendor_vfio_vfs_from_sysfs(make_driver, sysfs):
    for fn in range(4, 8):
        sysfs.add_nvidia_vf("0000:c1:00.%d" % fn, {"1155": "NVIDIA L40S-4Q",
                                                    "1156": "NVIDIA L40S-8Q"})
    drv = make_driver(host="nvidia-l40s-sriov")
    drv.prepare_vgpu(_vf(drv, "0000:c1:00.5", "nvidia-1156"))
    devs = _by_address(drv.get_pci_passthrough_devices())
    untyped, typed = devs["0000:c1:00.4"], devs["0000:c1:00.5"]
    assert untyped["vgpu_backend"] == "nvidia-vf" and untyped["vgpu_current_type"] is None
    assert sorted(untyped["vgpu_types"]) == ["nvidia-1155", "nvidia-1156"]
    assert typed["vgpu_current_type"] == "nvidia-1156"
    assert typed["vgpu_types"] == {"nvidia-1156": {
        "name": "NVIDIA L40S-8Q", "description": "", "device_api": "vfio-pci",
        "available": 1, "max": 1, "identifier": None}}
    assert devs["0000:c1:00.0"]["dev_type"] == "type-PF" and "vgpu_types" not in devs["0000:c1:00.0"]


def _vf(drv, address, vgpu_type):
    from tests.unit.virt.libvirt.conftest import from_inventory
    dev = next(d for d in drv.get_pci_passthrough_devices() if d["address"] == address)
    device = from_inventory(dev)
    device.set_vgpu_type(vgpu_type)
    return device



def _full_t4(tmp_path, names):
    """The T4 of the bundled host, already locked to nvidia-222 by one mdev,
    with other type names (``names``: type id -> name)."""
    with open(libvirt_driver.DEFAULT_HOST) as handle:
        xml = handle.read()
    xml = xml.replace("<availableInstances>16</availableInstances></type>\n"
                      "        <type id='nvidia-223'>",
                      "<availableInstances>15</availableInstances></type>\n"
                      "        <type id='nvidia-223'>")
    for type_id in ("nvidia-223", "nvidia-230"):
        start = xml.index("<type id='%s'>" % type_id)
        end = xml.index("</type>", start)
        body = xml[start:end].replace(">8<", ">0<").replace(">1<", ">0<")
        for old_name in ("GRID T4-2B", "GRID T4-16Q"):
            body = body.replace(old_name, names.get(type_id, old_name))
        xml = xml[:start] + body + xml[end:]
    mdev = ("<device><name>mdev_%s_0000_41_00_0</name><parent>pci_0000_41_00_0</parent>"
            "<capability type='mdev'><type id='nvidia-222'/><uuid>%s</uuid></capability>"
            "</device>\n</node>" % (UUID1.replace("-", "_"), UUID1))
    path = tmp_path / "full.xml"
    path.write_text(xml.replace("</node>", mdev))
    return testseam.TestDriverSeam(libvirt.open("test://%s" % path))


def test_a_locked_out_type_gets_its_max_from_the_framebuffer(make_driver, tmp_path):
    drv = make_driver()
    drv.conn = _full_t4(tmp_path, {})
    t4 = _by_address(drv.get_pci_passthrough_devices())[T4]
    assert {t: (e["available"], e["max"]) for t, e in t4["vgpu_types"].items()} == {
        "nvidia-222": (15, 16), "nvidia-223": (0, 8), "nvidia-230": (0, 1)}


def test_a_type_whose_max_cannot_be_known_is_left_out_with_a_reason(make_driver, tmp_path,
                                                                   caplog):
    drv = make_driver()
    drv.conn = _full_t4(tmp_path, {"nvidia-223": "GRID T4 mystery"})
    with caplog.at_level(logging.INFO):
        t4 = _by_address(drv.get_pci_passthrough_devices())[T4]
    assert sorted(t4["vgpu_types"]) == ["nvidia-222", "nvidia-230"]
    assert "not offering vGPU type nvidia-223 while nvidia-222 hold" in caplog.text
