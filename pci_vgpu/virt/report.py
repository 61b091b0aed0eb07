"""The last check of a driver's device report, before the tracker stores it.

A hypervisor can report what pci_vgpu must never store: a vGPU type id that
would climb a sysfs path (``../../../etc/passwd``) or break XML
(``nvidia-2<22&'``), a NUMA node no kernel has, the same PCI address or
mdev UUID twice, an mdev whose GPU is not there.  Failing the whole
inventory for one bad entry would take every good GPU of the host away, so
each bad entry is left out and a WARNING says which one and why -- nothing
is dropped without a word:

* a vGPU type whose id the config validator refuses
  (:func:`pci_vgpu.vgpu_types.validate_vgpu_type_name`), or whose ``max`` is
  not an integer >= 1, is left out of its GPU's ``vgpu_types``;
* a device with a NUMA node outside ``0..MAX_NUMA_NODE`` is left out with
  its vGPUs;
* a second device with an address or mdev UUID already reported is left out;
* a vGPU whose type id is refused, or whose GPU is not in the report, is
  left out -- and so is the GPU of such a vGPU, since the vGPU occupies it.
"""

from __future__ import annotations

import typing as ty

from oslo_log import log as logging

from pci_vgpu import exception
from pci_vgpu import vgpu_types

LOG = logging.getLogger(__name__)

#: Linux allows at most 1 << CONFIG_NODES_SHIFT (10) NUMA nodes.
MAX_NUMA_NODE = 1023

Device = dict[str, ty.Any]


def _label(dev: Device) -> str:
    return str(dev.get("address") or dev.get("mdev_uuid") or dev.get("dev_id"))


def _type_problem(type_id: ty.Any) -> str | None:
    try:
        vgpu_types.validate_vgpu_type_name(type_id)
    except exception.InvalidVgpuTypeName as exc:
        return exc.format_message()
    return None


def _numa_ok(value: ty.Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool)
                             and 0 <= value <= MAX_NUMA_NODE)


def _clean_types(driver: str, dev: Device) -> None:
    types = dev.get("vgpu_types")
    if not isinstance(types, dict):
        return
    for type_id, entry in list(types.items()):
        problem = _type_problem(type_id)
        limit = entry.get("max") if isinstance(entry, dict) else None
        if problem is None and (isinstance(limit, bool) or not isinstance(limit, int)
                                or limit < 1):
            problem = "its max %r is not an integer >= 1" % (limit,)
        if problem is not None:
            LOG.warning("%(driver)s reports vGPU type %(type)r on GPU %(gpu)s; not "
                        "offering it: %(why)s", {"driver": driver, "type": type_id,
                                                 "gpu": _label(dev), "why": problem})
            del types[type_id]


def _refuse(driver: str, dev: Device, why: str) -> None:
    LOG.warning("%(driver)s reports device %(dev)s (%(dev_id)s); not using it: %(why)s",
                {"driver": driver, "dev": _label(dev), "dev_id": dev.get("dev_id"),
                 "why": why})


def _first_problem(dev: Device, seen: dict[str, Device]) -> str | None:
    if not _numa_ok(dev.get("numa_node")):
        return "NUMA node %r is not an integer in 0..%d" % (dev.get("numa_node"), MAX_NUMA_NODE)
    key = dev.get("mdev_uuid") or dev.get("address")
    if key and key in seen:
        return "%s is already reported as %s" % (key, seen[key].get("dev_id"))
    if dev.get("mdev_uuid"):
        problem = _type_problem(dev.get("mdev_type") or dev.get("vgpu_type"))
        if problem is not None:
            return "its vGPU type: %s" % problem
    return None


def checked(driver: str, devices: ty.Sequence[Device]) -> list[Device]:
    """``devices`` without the entries the tracker must not store (logged).

    ``driver`` names the reporting driver in the log lines.
    """
    seen: dict[str, Device] = {}
    refused_parents: set[str] = set()
    kept: list[Device] = []
    for dev in devices:
        problem = _first_problem(dev, seen)
        if problem is not None:
            _refuse(driver, dev, problem)
            if dev.get("mdev_uuid") and dev.get("parent_addr") and \
                    _type_problem(dev.get("mdev_type") or dev.get("vgpu_type")):
                refused_parents.add(str(dev["parent_addr"]))
            continue
        seen[str(dev.get("mdev_uuid") or dev.get("address"))] = dev
        _clean_types(driver, dev)
        kept.append(dev)
    return _without_orphans(driver, kept, refused_parents)


def _without_orphans(driver: str, devices: list[Device], refused: set[str]) -> list[Device]:
    """Drop refused GPUs and the vGPUs of GPUs that are not reported."""
    gpus = {d["address"] for d in devices if d.get("address") and not d.get("mdev_uuid")}
    result = []
    for dev in devices:
        if dev.get("address") in refused and not dev.get("mdev_uuid"):
            _refuse(driver, dev, "it holds a vGPU whose type pci-vgpu refuses (see above)")
            continue
        parent = dev.get("parent_addr")
        if dev.get("mdev_uuid") and parent and (parent in refused or parent not in gpus):
            _refuse(driver, dev, "its GPU %s is not reported" % parent)
            continue
        result.append(dev)
    return result
