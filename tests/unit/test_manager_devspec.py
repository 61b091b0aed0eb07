"""The tracker with a ``[pci] device_spec`` that narrows a GPU's vGPU types.

Narrowing decides what is *offered* for new vGPUs; vGPUs that already exist
on the GPU still occupy it, whatever their type and however the spec names
types (id, name or identifier), so they must stay tracked.
"""

from __future__ import annotations

import json
import typing as ty

import pytest

from pci_vgpu import devspec
from pci_vgpu import manager
from pci_vgpu import pool_errors
from pci_vgpu.db import api as db_api
from tests.fixtures.db import sqlite_db  # noqa: F401  (pytest fixture)
from tests.unit.db import inventory as inv

EXISTING = "4b20d080-1b54-4048-85b3-a6a62d165c01"
INSTANCE = "11111111-1111-4111-8111-111111111111"


def _report(existing_type: str) -> str:
    """The default host; the T4 offers nvidia-222 ("GRID T4-1B", 2 max) and
    nvidia-223 ("GRID T4-2B"), and one free ``existing_type`` mdev exists."""
    devices = inv.default_host(t4_types={"nvidia-222": 2, "nvidia-223": 1})
    t4 = next(d for d in devices if d["address"] == inv.T4)
    t4["vgpu_types"]["nvidia-222"]["name"] = "GRID T4-1B"
    t4["vgpu_types"]["nvidia-223"]["name"] = "GRID T4-2B"
    devices.append({
        "dev_id": "mdev_" + EXISTING.replace("-", "_"), "address": None,
        "vendor_id": t4["vendor_id"], "product_id": t4["product_id"],
        "numa_node": 1, "label": t4["label"], "dev_type": "mdev",
        "parent_addr": inv.T4, "mdev_uuid": EXISTING,
        "mdev_type": existing_type})
    return inv.report(devices)


def _tracker(db: db_api.Database, spec: dict[str, ty.Any]) -> manager.PciDevTracker:
    whitelist = devspec.Whitelist([
        json.dumps(spec), json.dumps({"vendor_id": "10de", "product_id": "1db4"})])
    return manager.PciDevTracker(db, "cn1", dev_filter=whitelist)


def test_spec_naming_a_type_by_name_keeps_its_existing_mdev(
        sqlite_db: db_api.Database) -> None:
    tracker = _tracker(sqlite_db, {"address": inv.T4, "vgpu_types": ["GRID T4-1B"]})
    tracker.update_devices_from_hypervisor_resources(_report("nvidia-222"))
    [vgpu] = tracker.claim_instance(INSTANCE, [inv.vgpu_request("nvidia-222")])
    assert vgpu.mdev_uuid == EXISTING  # the spare is reused, not lost


def test_existing_mdev_of_a_type_not_offered_still_occupies_its_gpu(
        sqlite_db: db_api.Database) -> None:
    # Only nvidia-222 is offered, but an nvidia-223 mdev exists: the T4 is
    # a one-type GPU, so no nvidia-222 can be created next to it.
    tracker = _tracker(sqlite_db, {"address": inv.T4, "vgpu_types": ["nvidia-222"]})
    tracker.update_devices_from_hypervisor_resources(_report("nvidia-223"))
    with pytest.raises(pool_errors.PciDeviceRequestFailed):
        tracker.claim_instance(INSTANCE, [inv.vgpu_request("nvidia-222")])
    assert EXISTING in {d.mdev_uuid for d in tracker.devices()}
