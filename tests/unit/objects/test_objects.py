"""Fingerprints of every versioned object, pinned as Nova pins its own.

A failure here means a field or remotable method changed: bump the object's
VERSION, add a history line and an ``obj_make_compatible`` branch, then
update the hash below.
"""

from oslo_versionedobjects import fixture

import pci_vgpu.objects
from pci_vgpu.objects import base

OBJECT_DATA = {
    "InstancePCIRequest": "1.4-b27808ae189699df27f8f5b908b6393e",
    "InstancePCIRequests": "1.1-3928680ff73c1b9e8a1d15042f6c8287",
    "PciDevice": "1.8-97f2abebf356bea187200d2ef814586a",
    "PciDeviceList": "1.4-15ecf022a68ddbb8c2a6739cfc9f8f5e",
    "PciDevicePool": "1.1-3f5ddc3ff7bfa14da7f6c7e9904cc000",
    "PciDevicePoolList": "1.1-15ecf022a68ddbb8c2a6739cfc9f8f5e",
}

#: Objects unchanged from Nova 34.0.0 must keep Nova's exact fingerprint
#: (nova/tests/unit/objects/test_objects.py object_data).
NOVA_34_DATA = {
    "InstancePCIRequest": "1.4-b27808ae189699df27f8f5b908b6393e",
    "PciDevicePool": "1.1-3f5ddc3ff7bfa14da7f6c7e9904cc000",
    "PciDevicePoolList": "1.1-15ecf022a68ddbb8c2a6739cfc9f8f5e",
}


def _checker():
    return fixture.ObjectVersionChecker(
        base.PciVgpuObjectRegistry.obj_classes())


def test_versions_are_pinned():
    expected, actual = _checker().test_hashes(OBJECT_DATA)
    assert expected == actual, (
        "Object fingerprints changed; bump VERSION and update OBJECT_DATA")


def test_unchanged_objects_hash_as_in_nova():
    hashes = _checker().get_hashes()
    assert {name: hashes[name] for name in NOVA_34_DATA} == NOVA_34_DATA


def test_import_registers_every_object_on_the_package():
    for name in OBJECT_DATA:
        cls = getattr(pci_vgpu.objects, name)
        assert cls.obj_name() == name
        assert cls.VERSION == OBJECT_DATA[name].split("-")[0]


def test_list_relationships_end_at_current_child_version():
    for cls in (pci_vgpu.objects.PciDeviceList,
                pci_vgpu.objects.PciDevicePoolList):
        last_parent, last_child = cls.obj_relationships["objects"][-1]
        child_name = cls.fields["objects"]._type._element_type._type._obj_name
        child = getattr(pci_vgpu.objects, child_name)
        assert (last_parent, last_child) == (cls.VERSION, child.VERSION)
