"""Row conversions: the shortcuts into oslo.versionedobjects stay honest.

``pci_vgpu.db.records`` reads a PciDevice's change set and set-ness
directly (the write path's cost); these tests pin them to the public
``obj_what_changed`` / ``obj_attr_is_set`` so an oslo.versionedobjects
change that breaks them fails here.
"""

from __future__ import annotations

from pci_vgpu.db import records
from pci_vgpu.objects import pci_device

_MDEV = {"dev_id": "mdev_1", "address": None, "vendor_id": "10de",
         "product_id": "1eb8", "numa_node": 1, "label": "label_10de_1eb8",
         "dev_type": "mdev", "parent_addr": "0000:41:00.0",
         "mdev_uuid": "44444444-4444-4444-8444-444444444444",
         "mdev_type": "nvidia-222"}


def _device() -> pci_device.PciDevice:
    dev = pci_device.PciDevice.create(None, dict(_MDEV))
    dev.obj_reset_changes()
    return dev


def test_is_set_agrees_with_obj_attr_is_set() -> None:
    dev = pci_device.PciDevice(vendor_id="10de", product_id="1eb8")
    full = _device()
    for name in records.STORED_FIELDS:
        assert records._is_set(dev, name) == dev.obj_attr_is_set(name), name
        assert records._is_set(full, name) == full.obj_attr_is_set(name), name
    assert not records._is_set(dev, "status")
    assert records._is_set(full, "status")


def test_changed_fields_agree_with_obj_what_changed() -> None:
    dev = _device()
    assert records.changed_fields(dev) == set()
    dev.claim("55555555-5555-4555-8555-555555555555")
    assert records.changed_fields(dev) == \
        dev.obj_what_changed() & records.STORED_FIELDS
    assert {"status", "instance_uuid"} <= records.changed_fields(dev)


def test_row_values_full_and_partial() -> None:
    dev = _device()
    full = records.row_values(dev)
    assert full["device_key"] == "mdev:" + _MDEV["mdev_uuid"]
    assert full["extra_info"] == '{"mdev_type": "nvidia-222"}'
    assert full["parent_addr"] == "0000:41:00.0" and full["address"] is None
    assert records.row_values(dev, {"status"}) == {"status": "available"}
    assert records.row_values(dev, {"mdev_uuid"}) == {
        "mdev_uuid": _MDEV["mdev_uuid"],
        "device_key": "mdev:" + _MDEV["mdev_uuid"]}
