"""A parent that is no PCI device, as libvirtd 9.0 reports the mtty sample.

The XML below is what ``virsh nodedev-dumpxml mtty_mtty`` printed in the
Debian kernel-lab guest (the real-libvirtd run of these checks is
``tests/kernel/debian``); the mdev's is libvirt's, named after the parent's
kernel name.
"""

from __future__ import annotations

import json

import pytest

from pci_vgpu import devspec
from pci_vgpu import sysfs
from pci_vgpu.virt.libvirt import inventory
from pci_vgpu.virt.libvirt import nodedev
from pci_vgpu.virt.libvirt import sharing
from tests.fixtures import sysfs as sysfs_fixture

MTTY_XML = """<device>
  <name>mtty_mtty</name>
  <path>/sys/devices/virtual/mtty/mtty</path>
  <parent>computer</parent>
  <capability type='mdev_types'>
    <capability type='mdev_types'>
      <type id='mtty-1'>
        <name>Single port serial</name>
        <deviceAPI>vfio-pci</deviceAPI>
        <availableInstances>22</availableInstances>
      </type>
      <type id='mtty-2'>
        <name>Dual port serial</name>
        <deviceAPI>vfio-pci</deviceAPI>
        <availableInstances>11</availableInstances>
      </type>
    </capability>
  </capability>
</device>"""

UUID = "5c482120-1b54-4048-85b3-a6a62d165c01"
MDEV_XML = """<device>
  <name>mdev_5c482120_1b54_4048_85b3_a6a62d165c01_mtty</name>
  <path>/sys/devices/virtual/mtty/mtty/%s</path>
  <parent>mtty_mtty</parent>
  <driver><name>vfio_mdev</name></driver>
  <capability type='mdev'>
    <type id='mtty-2'/>
    <uuid>%s</uuid>
    <iommuGroup number='0'/>
  </capability>
</device>""" % (UUID, UUID)


def test_mtty_parses_as_a_named_parent_without_pci_identity():
    node = nodedev.parse(MTTY_XML)
    assert isinstance(node, nodedev.VirtualParentNode)
    assert (node.dev_id, node.name) == ("mtty_mtty", "mtty")
    assert [(t.type_id, t.name, t.available) for t in node.mdev_types] == [
        ("mtty-1", "Single port serial", 22), ("mtty-2", "Dual port serial", 11)]


def test_inventory_reports_the_parent_by_name_and_its_mdev_under_it(tmp_path):
    nodes = [nodedev.parse(MTTY_XML), nodedev.parse(MDEV_XML)]
    devices = inventory.build([n for n in nodes if n is not None],
                              sysfs.SysfsRoot(str(tmp_path)), sharing.MaxMemory(), {}, None)
    [parent] = [d for d in devices if d["address"] == "mtty"]
    assert (parent["dev_id"], parent["vendor_id"], parent["numa_node"]) == (
        "mtty_mtty", inventory.NO_PCI_ID, None)
    assert {t: e["available"] for t, e in parent["vgpu_types"].items()} == {
        "mtty-1": 22, "mtty-2": 11}
    # The type that exists: available + existing.  (mtty-1's 24 on an empty
    # parent is not knowable from this one look: its ports are shared.)
    assert parent["vgpu_types"]["mtty-2"]["max"] == 12
    [mdev] = [d for d in devices if d.get("mdev_uuid")]
    assert (mdev["parent_addr"], mdev["mdev_type"], mdev["dev_type"]) == (
        "mtty", "mtty-2", "mdev")


def _build(nodes_xml, root, specs=None):
    nodes = [nodedev.parse(x) for x in nodes_xml]
    dev_filter = devspec.Whitelist([json.dumps(s) for s in specs]) if specs else None
    return inventory.build([n for n in nodes if n is not None], root,
                           sharing.MaxMemory(), {}, dev_filter)


def test_parent_has_placeholder_ids_that_no_pci_device_has(tmp_path):
    [parent, mdev] = _build([MTTY_XML, MDEV_XML], sysfs.SysfsRoot(str(tmp_path)),
                            [{"mdev_parent": "mtty"}])
    assert (parent["vendor_id"], parent["product_id"], parent["label"]) == (
        "ffff", "ffff", "label_ffff_ffff")
    assert (parent["numa_node"], parent["iommu_group"], parent["virtual_parent"]) == (
        None, None, True)
    assert (mdev["parent_addr"], mdev["vendor_id"], mdev["numa_node"]) == ("mtty", "ffff", None)


@pytest.mark.parametrize("spec", [{"address": "*:*:*.*"}, {"mdev_parent": "mdpy"},
                                  {"vendor_id": "ffff", "product_id": "ffff"}])
def test_only_a_spec_naming_the_parent_reports_it(tmp_path, spec):
    assert _build([MTTY_XML, MDEV_XML], sysfs.SysfsRoot(str(tmp_path)), [spec]) == []


def test_spec_narrows_the_parent_types_and_keeps_its_mdevs(tmp_path):
    [parent, mdev] = _build([MTTY_XML, MDEV_XML], sysfs.SysfsRoot(str(tmp_path)),
                            [{"mdev_parent": "mtty", "vgpu_types": ["mtty-1"]}])
    assert list(parent["vgpu_types"]) == ["mtty-1"]
    assert mdev["mdev_uuid"] == UUID


def test_sharing_comes_from_the_parent_subsystem_in_sysfs(tmp_path):
    # An empty mtty looks one-type to observation; sysfs says it is mtty,
    # whose types share 24 ports (mdev_parents.SUBSYSTEM_SHARING).
    fake = sysfs_fixture.FakeSysfs(str(tmp_path))
    fake.add_virtual_parent("mtty", {"mtty-1": 24, "mtty-2": 12})
    empty = MTTY_XML.replace("22<", "24<").replace("11<", "12<")
    [parent] = _build([empty], fake.root, [{"mdev_parent": "mtty"}])
    assert parent["vgpu_sharing"] == "budget"
    assert {t: e["max"] for t, e in parent["vgpu_types"].items()} == {
        "mtty-1": 24, "mtty-2": 12}
    [observed] = _build([empty], sysfs.SysfsRoot(str(tmp_path / "none")),
                        [{"mdev_parent": "mtty"}])
    assert observed["vgpu_sharing"] == "one-type"
