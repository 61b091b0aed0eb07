"""Reconciliation of the inventory: where the database's view of the host is stale.

Between two inventory syncs the database keeps what the host last reported,
and pci-vgpu commands do not sync on every call (Nova's resource tracker
does it periodically).  A stale row can block capacity or offer a device
twice, and no claim is wrong, so the other reconcile checks see nothing:

* an mdev recorded *unavailable* (held by a guest pci-vgpu does not track)
  after that guest let it go or was deleted: its GPU stays full;
* an mdev recorded that the host no longer has: it still holds its GPU (a
  one-type GPU stays locked to its type);
* an mdev recorded free that a guest outside pci-vgpu now uses: it could be
  given to a second guest;
* a device the host has and the database lacks, or the reverse;
* a GPU whose vGPU types or maxima differ from what the host reports.

Each is a ``stale-inventory`` finding; ``--apply`` fixes them all with one
inventory sync (the same sync ``host inventory`` and ``pool list
--refresh`` do), run after the other fixes.
"""

from __future__ import annotations

import typing as ty

from pci_vgpu.reconcile import Finding
from pci_vgpu.reconcile import fix
from pci_vgpu.pool_devices import attr

if ty.TYPE_CHECKING:
    from pci_vgpu.objects.pci_device import PciDevice
    from pci_vgpu.service import ComputeService

KIND = "stale-inventory"
_FREE = ("available", "unavailable")
_IN_USE = ("claimed", "allocated")


def _key(dev: ty.Any) -> str:
    return str(attr(dev, "mdev_uuid") or attr(dev, "address")).lower()


def _limits(types: ty.Any) -> dict[str, ty.Any]:
    return {t: e.get("max") for t, e in (types or {}).items() if isinstance(e, dict)}


def _mdev_problem(dev: PciDevice, reported: dict[str, ty.Any] | None,
                  rows: dict[str, PciDevice]) -> str | None:
    status = attr(dev, "status")
    where = "vGPU %s (type %s on GPU %s)" % (attr(dev, "mdev_uuid"), dev.vgpu_type,
                                             attr(dev, "parent_addr"))
    if status not in _FREE:
        return None
    if reported is None:
        return ("the database records %s as %s but the host no longer has it; it holds "
                "capacity of that GPU" % (where, status))
    owner = reported.get("instance_uuid")
    parent = rows.get(str(attr(dev, "parent_addr")).lower())
    if status == "unavailable" and not owner and attr(parent, "status") not in _IN_USE:
        return ("the database records %s as unavailable (used by a guest outside "
                "pci-vgpu) but no guest uses it any more; its capacity is blocked" % where)
    if status == "available" and owner:
        return ("guest %s, which pci-vgpu does not track, uses %s but the database offers "
                "it to new servers" % (owner, where))
    return None


def _device_problem(dev: PciDevice, reported: dict[str, ty.Any] | None) -> str | None:
    if reported is None:
        if attr(dev, "status") not in _FREE:
            return None
        return ("the database records device %s (%s) that the host no longer reports"
                % (_key(dev), attr(dev, "status")))
    recorded, now = _limits(getattr(dev, "vgpu_types", None)), _limits(
        reported.get("vgpu_types"))
    # A type the host leaves out while another type locks the GPU is not
    # offered by the database either (its pool is empty): no disagreement.
    differ = {t: m for t, m in now.items() if recorded.get(t) != m}
    if differ:
        return ("the host offers vGPU types %s on GPU %s, the database %s; the "
                "difference is capacity nobody can claim" % (
                    _describe(now), _key(dev), _describe(recorded)))
    return None


def _describe(limits: dict[str, ty.Any]) -> str:
    return ", ".join("%s max %s" % (t, m) for t, m in sorted(limits.items())) or "none"


def stale_rows(service: ComputeService) -> list[Finding]:
    """One finding per stale row or unrecorded device (nothing fixed)."""
    report = {_key(d): d for d in service.driver.get_pci_passthrough_devices()}
    rows = {_key(d): d for d in service.tracker.devices()}
    findings = []
    for key, dev in sorted(rows.items()):
        if attr(dev, "dev_type") == "mdev":
            problem = _mdev_problem(dev, report.get(key), rows)
        else:
            problem = _device_problem(dev, report.get(key))
        if problem is not None:
            findings.append(Finding(kind=KIND, subject=key, detail=problem))
    for key, entry in sorted(report.items()):
        # An unrecorded vGPU nobody uses is an orphan-vgpu finding already.
        if key not in rows and (entry.get("dev_type") != "mdev" or entry.get("instance_uuid")):
            findings.append(Finding(kind=KIND, subject=key, detail=(
                "the host has %s %s that the database does not record" % (
                    "vGPU" if entry.get("dev_type") == "mdev" else "device", key))))
    return findings


def stuck_capacity(service: ComputeService, apply: bool, resync: bool) -> list[Finding]:
    """Stale rows, fixed by one inventory sync when ``apply``.

    ``resync``: the other fixes changed the host, so sync even if the
    inventory looked right before.
    """
    findings = stale_rows(service)
    if not apply or not (findings or resync):
        return findings
    synced = Finding(kind=KIND, subject="inventory",
                     detail="the inventory is read again after the fixes")

    def sync() -> None:
        service.sync_inventory()
    fix(synced, sync)
    for finding in findings:
        finding.fixed = synced.fixed
        finding.detail += synced.detail.removeprefix(
            "the inventory is read again after the fixes")
    return findings if findings or synced.fixed else [synced]
