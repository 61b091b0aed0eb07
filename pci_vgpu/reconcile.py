"""Reconciliation: the database, the hypervisor's vGPUs and its guests.

Three kinds of drift, each reported as a :class:`Finding` and, with
``apply``, fixed:

* **leaked claim** -- the database holds devices for a server the hypervisor
  has no guest for (a crash between claim and spawn, a guest deleted behind
  pci-vgpu's back): its vGPUs are removed and its devices freed;
* **orphan vGPU** -- a vGPU exists that no claimed/allocated device owns and
  no guest uses (a crash between creating it and recording the claim, an
  mdev made by hand): it is removed, giving its capacity back;
* **missing vGPU** -- a running server's allocated vGPU is gone from the host
  (a reboot lost a transient mdev): it is re-created with its recorded UUID.

* **untracked guest** -- a guest uses devices, but no server of the database
  holds it: its devices may be handed to another server.  Reported only:
  adopting or deleting a guest is the operator's decision.

A fix that fails is written into its finding and the others still run.
"""

from __future__ import annotations

import dataclasses
import functools
import typing as ty

from pci_vgpu.virt import driver as virt_driver
from pci_vgpu.virt.noop import attr

if ty.TYPE_CHECKING:
    from pci_vgpu.objects.pci_device import PciDevice
    from pci_vgpu.service import ComputeService

Guests = dict[str, virt_driver.GuestInfo]


@dataclasses.dataclass
class Finding:
    """One difference between the database and the hypervisor."""

    #: "leaked-claim" | "orphan-vgpu" | "missing-vgpu" | "untracked-guest"
    kind: str
    #: Instance UUID (leaked claim), guest UUID (untracked guest) or vGPU UUID.
    subject: str
    detail: str
    fixed: bool = False


def run(service: ComputeService, apply: bool) -> list[Finding]:
    """Every finding on ``service``'s host, fixed when ``apply``."""
    guests = {g.uuid: g for g in service.driver.list_guests()}
    findings = leaked_claims(service, guests, apply)
    findings += orphan_vgpus(service, guests, apply)
    findings += missing_vgpus(service, guests, apply)
    findings += untracked_guests(service, guests)
    return findings


def untracked_guests(service: ComputeService, guests: Guests) -> list[Finding]:
    known = {r.uuid for r in service.tracker.instances()}
    findings = []
    for guest in guests.values():
        devices = list(guest.mdev_uuids) + list(guest.pci_addresses)
        if guest.uuid in known or not devices:
            continue
        findings.append(Finding(
            kind="untracked-guest", subject=guest.uuid,
            detail="guest %s uses %s but no server holds it; delete the guest or free "
                   "those devices by hand (not fixed automatically)"
                   % (guest.name, ", ".join(devices))))
    return findings


def leaked_claims(service: ComputeService, guests: Guests, apply: bool) -> list[Finding]:
    findings = []
    for record in service.tracker.instances():
        if record.uuid in guests:
            continue
        devices = service.tracker.devices_of(record.uuid)
        finding = Finding(
            kind="leaked-claim", subject=record.uuid,
            detail="server %s holds %d device(s) (%s) but the hypervisor has no such "
                   "guest" % (record.name, len(devices), record.status))
        if apply:
            fix(finding, functools.partial(_free_leak, service, record.uuid, devices))
        findings.append(finding)
    return findings


def _free_leak(service: ComputeService, uuid: str, devices: ty.Sequence[PciDevice]) -> None:
    from pci_vgpu.service import is_vgpu

    for dev in devices:
        if is_vgpu(dev):
            service.driver.release_vgpu(dev)
    service.tracker.free(uuid)


def orphan_vgpus(service: ComputeService, guests: Guests, apply: bool) -> list[Finding]:
    owned = {attr(d, "mdev_uuid") for r in service.tracker.instances()
             for d in service.tracker.devices_of(r.uuid)}
    in_guests = {u for g in guests.values() for u in g.mdev_uuids}
    findings = []
    for vgpu in service.driver.list_vgpus():
        if not vgpu.mdev_uuid or vgpu.mdev_uuid in owned or vgpu.mdev_uuid in in_guests:
            continue
        finding = Finding(
            kind="orphan-vgpu", subject=vgpu.mdev_uuid,
            detail="vGPU of type %s on GPU %s is held by no server and attached to no "
                   "guest" % (vgpu.vgpu_type, vgpu.parent_addr))
        if apply:
            fix(finding, functools.partial(service.driver.release_vgpu, vgpu_device(vgpu)))
        findings.append(finding)
    return findings


def missing_vgpus(service: ComputeService, guests: Guests, apply: bool) -> list[Finding]:
    present = {v.mdev_uuid for v in service.driver.list_vgpus()}
    findings = []
    for record in service.tracker.instances():
        if record.uuid not in guests:
            continue  # reported as a leaked claim
        for dev in service.tracker.devices_of(record.uuid):
            uuid = attr(dev, "mdev_uuid")
            if not uuid or uuid in present:
                continue
            finding = Finding(
                kind="missing-vgpu", subject=uuid,
                detail="server %s owns vGPU %s (type %s on GPU %s) but the host lacks "
                       "it" % (record.name, uuid, dev.vgpu_type, attr(dev, "parent_addr")))
            if apply:
                fix(finding, functools.partial(service.driver.prepare_vgpu, dev))
            findings.append(finding)
    return findings


def fix(finding: Finding, action: ty.Callable[[], None]) -> None:
    """Apply one fix; a failure is written into the finding, not raised.

    One stubborn vGPU must not stop the other repairs.
    """
    from pci_vgpu.service import _reason

    try:
        action()
        finding.fixed = True
    except Exception as exc:  # noqa: BLE001 - reported in the finding
        finding.detail += "; fix failed: %s" % _reason(exc)


def vgpu_device(vgpu: virt_driver.VgpuInfo) -> PciDevice:
    """A device record for a vGPU the database does not hold (to remove it)."""
    from pci_vgpu.objects import pci_device

    return pci_device.PciDevice(
        address=None, parent_addr=vgpu.parent_addr, mdev_uuid=vgpu.mdev_uuid,
        dev_type="mdev", extra_info={"mdev_type": vgpu.vgpu_type,
                                     "vgpu_backend": vgpu.backend})
