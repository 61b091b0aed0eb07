"""Conversions between database rows and the tracker's objects.

One place knows how a ``pci_devices`` row maps to a ``PciDevice`` 1.8 (and
back), and how an ``instances`` row maps to an :class:`InstanceRecord`.
"""

from __future__ import annotations

import dataclasses
import json
import typing as ty

from oslo_utils import uuidutils
import sqlalchemy as sa

from pci_vgpu.objects import fields
from pci_vgpu.objects import instance_pci_requests
from pci_vgpu.objects import pci_device

#: PciDevice fields stored in same-named pci_devices columns.
_COLUMNS = ("uuid", "compute_node_id", "address", "vendor_id", "product_id",
            "dev_type", "status", "dev_id", "label", "instance_uuid",
            "request_id", "numa_node", "parent_addr", "mdev_uuid")

#: Every PciDevice field with a column (``extra_info`` as JSON text).
STORED_FIELDS = frozenset(_COLUMNS) | {"extra_info"}
_STORED_ORDER = _COLUMNS + ("extra_info",)
#: Fields the device key is derived from.
_KEY_FIELDS = frozenset({"address", "mdev_uuid", "dev_type"})

CLAIMED = "claimed"
ALLOCATED = "allocated"


@dataclasses.dataclass
class InstanceRecord:
    """An instance holding devices on the node, as stored in ``instances``."""

    uuid: str
    name: str | None
    #: "claimed" or "allocated".
    status: str
    requests: list[instance_pci_requests.InstancePCIRequest]
    #: Guest NUMA cell ids the claim was made for, or None.
    numa_cells: list[int] | None


def device_key(dev: pci_device.PciDevice) -> str:
    """The row identity: the PCI address, or ``mdev:<uuid>`` for a vGPU."""
    if dev.dev_type == fields.PciDeviceType.MDEV or not dev.address:
        return "mdev:%s" % dev.mdev_uuid
    return str(dev.address)


def dict_key(dev_dict: dict[str, ty.Any]) -> str | None:
    """:func:`device_key` of a driver's device dict (None if it has neither)."""
    if dev_dict.get("dev_type") == fields.PciDeviceType.MDEV or \
            not dev_dict.get("address"):
        mdev = dev_dict.get("mdev_uuid")
        return "mdev:%s" % str(mdev).lower() if mdev else None
    return str(dev_dict["address"])


def device_from_row(row: sa.Row[ty.Any]) -> pci_device.PciDevice:
    """Build a ``PciDevice`` with no pending changes from its row.

    A Nova row without a record UUID gets one, left marked as changed so
    the next write stores it (Nova's ``populate_dev_uuids``, done lazily).
    """
    values = {name: getattr(row, name) for name in _COLUMNS}
    values["extra_info"] = json.loads(row.extra_info) if row.extra_info else {}
    missing_uuid = values["uuid"] is None
    if missing_uuid:
        values["uuid"] = uuidutils.generate_uuid()
    dev = pci_device.PciDevice(id=row.id, **values)
    dev.obj_reset_changes()
    if missing_uuid:
        dev.uuid = values["uuid"]
    return dev


def row_values(dev: pci_device.PciDevice,
               names: ty.Collection[str] | None = None) -> dict[str, ty.Any]:
    """Column values of ``dev`` (only ``names`` if given) for INSERT/UPDATE."""
    wanted = _STORED_ORDER if names is None else \
        [n for n in _STORED_ORDER if n in names]
    values: dict[str, ty.Any] = {}
    for name in wanted:
        if not _is_set(dev, name):
            continue
        value = getattr(dev, name)
        values[name] = json.dumps(dict(value), sort_keys=True) \
            if name == "extra_info" else value
    if names is None or not _KEY_FIELDS.isdisjoint(names):
        values["device_key"] = device_key(dev)
    return values


def refresh_from_row(dev: pci_device.PciDevice, row: sa.Row[ty.Any]) -> bool:
    """Set ``dev``'s stored fields to ``row``'s; True if any differed.

    A lazily generated record UUID (row without one) is kept, as
    :func:`device_from_row` would generate one anyway.
    """
    changed: list[str] = []
    for name in _COLUMNS:
        value = getattr(row, name)
        if name == "uuid" and value is None:
            continue
        if not _is_set(dev, name) or getattr(dev, name) != value:
            setattr(dev, name, value)
            changed.append(name)
    extra = json.loads(row.extra_info) if row.extra_info else {}
    if not _is_set(dev, "extra_info") or dict(dev.extra_info) != extra:
        dev.extra_info = extra
        changed.append("extra_info")
    if changed:
        dev.obj_reset_changes(fields=changed)
    return bool(changed)


def _is_set(dev: pci_device.PciDevice, name: str) -> bool:
    """``dev.obj_attr_is_set(name)`` for a known field, without its cost.

    oslo.versionedobjects keeps a set field's value in ``_obj_<name>``;
    ``obj_attr_is_set`` first rebuilds the list of every field name to
    validate ``name``, which the write path paid for each column.
    """
    return hasattr(dev, "_obj_" + name)


def changed_fields(dev: pci_device.PciDevice) -> set[str]:
    """The stored fields of ``dev`` set since its last ``obj_reset_changes``.

    Reads the object's own change set: ``obj_what_changed()`` would give
    the same answer for these fields (none holds a nested object) but
    walks every field, nested objects included, and was the single largest
    cost of the tracker's write path.
    """
    changed: set[str] = dev._changed_fields
    return changed & STORED_FIELDS


def instance_from_row(row: sa.Row[ty.Any]) -> InstanceRecord:
    requests = instance_pci_requests.InstancePCIRequests.obj_from_db(
        None, row.uuid, row.pci_requests).requests
    cells = json.loads(row.numa_cells) if row.numa_cells else None
    return InstanceRecord(uuid=row.uuid, name=row.name, status=row.status,
                          requests=list(requests), numa_cells=cells)


def instance_values(record: InstanceRecord,
                    unique_name: bool = True) -> dict[str, ty.Any]:
    """Column values of a new ``instances`` row.

    ``unique_name``: the record takes its name as its compute node's
    unique server name (``server_name``); False for a row that shares its
    server's name (a hot-plug attachment).
    """
    blob = instance_pci_requests.InstancePCIRequests(
        instance_uuid=record.uuid, requests=list(record.requests)).to_json()
    return {"uuid": record.uuid, "name": record.name, "status": record.status,
            "server_name": record.name if unique_name else None,
            "pci_requests": blob,
            "numa_cells": (json.dumps(record.numa_cells)
                           if record.numa_cells is not None else None)}
