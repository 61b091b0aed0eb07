"""The tracker with a virtual mdev parent: the kernel's mtty sample.

``[pci] device_spec = {"mdev_parent": "mtty"}`` admits the parent the
libvirt inventory reports (its kernel name where a GPU's address goes, the
placeholder ids ``ffff``, no NUMA node); the tracker stores it as a GPU of
vGPUs, creates mdevs on it that name it in ``parent_addr``, and never
gives it whole::

    virtual (no PCI, no NUMA node)
      mtty   mtty-1 (1 port)  mtty-2 (2 ports), 24 ports shared (budget)
"""

from __future__ import annotations

import json

import pytest
from oslo_utils import uuidutils

from pci_vgpu import devspec
from pci_vgpu import manager
from pci_vgpu import pool_errors
from pci_vgpu import sysfs
from pci_vgpu.db import api as db_api
from pci_vgpu.objects import instance_pci_requests as ipr
from pci_vgpu.virt.libvirt import inventory
from pci_vgpu.virt.libvirt import nodedev
from pci_vgpu.virt.libvirt import sharing
from tests.fixtures import sysfs as sysfs_fixture
from tests.fixtures.db import sqlite_db  # noqa: F401  (pytest fixture)
from tests.unit.virt.libvirt import test_virtual_parent as xml

INSTANCE = "11111111-1111-4111-8111-111111111111"
SPEC = {"mdev_parent": "mtty"}


def _request(spec: dict[str, str]) -> ipr.InstancePCIRequest:
    return ipr.InstancePCIRequest(
        count=1, spec=[spec], alias_name="mtty", is_new=False,
        numa_policy="legacy", request_id=uuidutils.generate_uuid(), requester_id=None)


def _vgpu_request(vgpu_type: str) -> ipr.InstancePCIRequest:
    # What pci_vgpu.request builds from an alias that names only types.
    return _request({"vgpu_types": json.dumps([vgpu_type])})


@pytest.fixture
def tracker(sqlite_db: db_api.Database, tmp_path) -> manager.PciDevTracker:
    """The driver's report of an empty mtty, stored through SPEC."""
    fake = sysfs_fixture.FakeSysfs(str(tmp_path))
    fake.add_virtual_parent("mtty", {"mtty-1": 24, "mtty-2": 12})
    empty = xml.MTTY_XML.replace("22<", "24<").replace("11<", "12<")
    whitelist = devspec.Whitelist([json.dumps(SPEC)])
    report = inventory.build([nodedev.parse(empty)], fake.root, sharing.MaxMemory(),
                             {}, whitelist)
    result = manager.PciDevTracker(sqlite_db, "cn1", dev_filter=whitelist)
    result.update_devices_from_hypervisor_resources(json.dumps(report))
    return result


def test_parent_is_tracked_by_name_without_numa_node(tracker) -> None:
    [parent] = tracker.devices()
    assert (parent.address, parent.vendor_id, parent.product_id, parent.numa_node) == (
        "mtty", "ffff", "ffff", None)
    assert set(parent.vgpu_types) == {"mtty-1", "mtty-2"}


def test_vgpu_on_the_parent_names_it_and_shares_its_ports(tracker) -> None:
    [vgpu] = tracker.claim_instance(INSTANCE, [_vgpu_request("mtty-2")])
    assert (vgpu.dev_type, vgpu.parent_addr, vgpu.address, vgpu.numa_node) == (
        "mdev", "mtty", None, None)
    assert vgpu.vgpu_type == "mtty-2" and uuidutils.is_uuid_like(vgpu.mdev_uuid)
    # Budget sharing: one mtty-2 takes 2 of 24 ports, mtty-1 keeps 22.
    free = {p.tags["vgpu_type"]: p.count for p in tracker.stats.to_device_pools_obj()
            if p.tags.get("vgpu_type")}
    assert free == {"mtty-1": 22, "mtty-2": 11}
    tracker.allocate_instance(INSTANCE)
    freed = tracker.free_instance(INSTANCE)
    assert vgpu.mdev_uuid in {d.mdev_uuid for d in freed}
    assert [d.address for d in tracker.devices()] == ["mtty"]


def test_parent_is_never_given_whole(tracker) -> None:
    # Even to an alias that names the placeholder ids: there is no PCI
    # function to pass through.
    with pytest.raises(pool_errors.PciDeviceRequestFailed):
        tracker.claim_instance(INSTANCE, [_request({"vendor_id": "ffff",
                                                    "product_id": "ffff"})])
    [whole] = [p for p in tracker.stats.to_device_pools_obj()
               if not p.tags.get("vgpu_type")]
    assert whole.count == 0


def test_a_pci_spec_does_not_track_the_parent(sqlite_db, tmp_path) -> None:
    whitelist = devspec.Whitelist([json.dumps({"vendor_id": "ffff"})])
    report = inventory.build([nodedev.parse(xml.MTTY_XML)], sysfs.SysfsRoot(str(tmp_path)),
                             sharing.MaxMemory(), {}, None)
    tracker = manager.PciDevTracker(sqlite_db, "cn1", dev_filter=whitelist)
    tracker.update_devices_from_hypervisor_resources(json.dumps(report))
    assert tracker.devices() == []
