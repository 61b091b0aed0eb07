"""Reconciliation: the database, the hypervisor's vGPUs and its guests.

Every way capacity can get stuck, or a guest can lose a device, is one kind
of :class:`Finding`; with ``apply`` each is fixed, in this order:

* **unfinished-create / unfinished-attach** -- a server (or a hot-plug) is
  still *claimed* while its guest exists: the process doing it died.  If
  the guest runs with every claimed device the step that was left is
  recording the allocation, and that is done; otherwise what was done is
  undone (guest destroyed for a create, devices unplugged for an attach,
  vGPUs removed, claim freed);
* **leaked-claim** -- the database holds devices for a server the hypervisor
  has no guest for (a crash between claim and spawn, a delete that stopped
  half-way, a guest deleted behind pci-vgpu's back): its vGPUs are removed
  and its devices freed;
* **orphan-vgpu** -- a vGPU exists that no claimed/allocated device owns and
  no guest uses (a crash between creating it and recording the claim, an
  mdev made by hand): it is removed, giving its capacity back;
* **missing-vgpu** -- a server's vGPU is gone from the host (a reboot lost a
  transient mdev): it is re-created with its recorded UUID;
* **unplugged-device** -- a server holds a hot-plugged device its guest no
  longer uses (a detach that stopped before freeing it): it is freed; a
  flavor device is only reported;
* **untracked-guest** -- a guest uses devices, but no server of the database
  holds it.  Reported only: adopting or deleting a guest is the operator's
  decision;
* **stuck-capacity** -- the database's inventory disagrees with the host's
  (see :mod:`pci_vgpu.reconcile_inventory`): fixed by syncing the inventory,
  which ``--apply`` does last whenever it found or fixed anything.

A fix that fails is written into its finding and the others still run.
Each fix can be interrupted (``kill -9``) and the next reconcile finishes
the job: every fix is made of steps that are each safe to repeat.
"""

from __future__ import annotations

import dataclasses
import functools
import typing as ty

from pci_vgpu import fault
from pci_vgpu.virt import driver as virt_driver
from pci_vgpu.virt.noop import attr

if ty.TYPE_CHECKING:
    from pci_vgpu.objects.pci_device import PciDevice
    from pci_vgpu.service import ComputeService
    from pci_vgpu.service import InstanceRecord

Guests = dict[str, virt_driver.GuestInfo]
CLAIMED = "claimed"


@dataclasses.dataclass
class Finding:
    """One difference between the database and the hypervisor."""

    #: "unfinished-create" | "unfinished-attach" | "leaked-claim" |
    #: "orphan-vgpu" | "missing-vgpu" | "unplugged-device" |
    #: "untracked-guest" | "stuck-capacity"
    kind: str
    #: Server UUID (claims), guest UUID (untracked guest), vGPU UUID or address.
    subject: str
    detail: str
    fixed: bool = False


def _guests(service: ComputeService) -> Guests:
    return {g.uuid: g for g in service.driver.list_guests()}


def run(service: ComputeService, apply: bool) -> list[Finding]:
    """Every finding on ``service``'s host, fixed when ``apply``."""
    from pci_vgpu import reconcile_inventory

    findings = unfinished(service, _guests(service), apply)
    guests = _guests(service)  # again: undoing a create destroys its guest
    findings += leaked_claims(service, guests, apply)
    findings += orphan_vgpus(service, guests, apply)
    findings += missing_vgpus(service, guests, apply)
    findings += unplugged_devices(service, guests, apply)
    findings += untracked_guests(service, guests)
    findings += reconcile_inventory.stuck_capacity(service, apply, resync=bool(findings))
    return findings


def _used_by(guest: virt_driver.GuestInfo) -> set[str]:
    return set(guest.mdev_uuids) | set(guest.pci_addresses)


def unfinished(service: ComputeService, guests: Guests, apply: bool) -> list[Finding]:
    """Claims of creates and attaches whose process died with the guest there."""
    from pci_vgpu.service import device_name

    findings = []
    for server in service.tracker.instances():
        guest = guests.get(server.uuid)
        if guest is None:
            continue  # a leaked claim
        for record in service.tracker.group(server.uuid):
            if record.status != CLAIMED:
                continue
            devices = service.tracker.record_devices(record.uuid)
            plugged = {device_name(d) for d in devices} <= _used_by(guest)
            finding, action = _unfinished_fix(service, server, record, guest, devices, plugged)
            if apply:
                fix(finding, action)
            findings.append(finding)
    return findings


def _unfinished_fix(service: ComputeService, server: InstanceRecord, record: InstanceRecord,
                    guest: virt_driver.GuestInfo, devices: list[PciDevice],
                    plugged: bool) -> tuple[Finding, ty.Callable[[], None]]:
    is_create = record.uuid == server.uuid
    kind = "unfinished-create" if is_create else "unfinished-attach"
    what = "create" if is_create else "hot-plug of %d device(s)" % len(devices)
    if plugged and (guest.running or not is_create):
        return (Finding(kind, server.uuid, "the %s of server %s stopped after the guest got "
                                           "its devices; the allocation was never recorded "
                                           "(fix: record it)" % (what, server.name)),
                functools.partial(service.tracker.allocate, server.uuid))
    detail = "the %s of server %s stopped before it was done (fix: undo it)" % (
        what, server.name)
    if is_create:
        return (Finding(kind, server.uuid, detail),
                functools.partial(_undo_create, service, server.uuid, devices))
    return (Finding(kind, server.uuid, detail),
            functools.partial(_undo_attach, service, server.uuid, guest, devices))


def _release_all(service: ComputeService, devices: ty.Sequence[PciDevice]) -> None:
    from pci_vgpu.service import is_vgpu

    for dev in devices:
        if is_vgpu(dev):
            service.driver.release_vgpu(dev)


def _undo_create(service: ComputeService, uuid: str, devices: ty.Sequence[PciDevice]) -> None:
    service.driver.destroy(uuid)
    _release_all(service, devices)
    service.tracker.free(uuid)


def _undo_attach(service: ComputeService, server_uuid: str, guest: virt_driver.GuestInfo,
                 devices: ty.Sequence[PciDevice]) -> None:
    from pci_vgpu.service import device_name

    plugged = [d for d in devices if device_name(d) in _used_by(guest)]
    if plugged:
        service.driver.detach_devices(server_uuid, plugged)
    _release_all(service, devices)
    service.tracker.free_devices(server_uuid, devices)


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
    _release_all(service, devices)
    service.tracker.free(uuid)


def orphan_vgpus(service: ComputeService, guests: Guests, apply: bool) -> list[Finding]:
    owned = {attr(d, "mdev_uuid") or attr(d, "address")
             for r in service.tracker.instances()
             for d in service.tracker.devices_of(r.uuid)}
    in_guests = {u for g in guests.values() for u in _used_by(g)}
    findings = []
    for vgpu in service.driver.list_vgpus():
        name = vgpu.mdev_uuid or vgpu.parent_addr
        if not name or name in owned or name in in_guests:
            continue
        finding = Finding(
            kind="orphan-vgpu", subject=name,
            detail="vGPU of type %s on %s is held by no server and attached to no "
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


def unplugged_devices(service: ComputeService, guests: Guests, apply: bool) -> list[Finding]:
    """Allocated devices of a server that its guest does not use."""
    from pci_vgpu.service import device_name

    findings = []
    for server in service.tracker.instances():
        guest = guests.get(server.uuid)
        for index, record in enumerate(service.tracker.group(server.uuid)):
            if guest is None or record.status == CLAIMED:
                continue  # leaked claim / unfinished: handled above
            for dev in service.tracker.record_devices(record.uuid):
                if device_name(dev) in _used_by(guest):
                    continue
                finding = Finding(
                    kind="unplugged-device", subject=device_name(dev),
                    detail="server %s holds %s but its guest does not use it" % (
                        server.name, device_name(dev)))
                if index == 0:
                    finding.detail += ("; it came with the flavor: attach it again or "
                                       "delete the server (not fixed automatically)")
                elif apply:
                    fix(finding, functools.partial(_free_unplugged, service, server.uuid, dev))
                findings.append(finding)
    return findings


def _free_unplugged(service: ComputeService, server_uuid: str, dev: PciDevice) -> None:
    _release_all(service, [dev])
    service.tracker.free_devices(server_uuid, [dev])


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
    fault.point("reconcile:fixed")


def vgpu_device(vgpu: virt_driver.VgpuInfo) -> PciDevice:
    """A device record for a vGPU the database does not hold (to remove it)."""
    from pci_vgpu.objects import pci_device

    if vgpu.backend == "nvidia-vf":
        dev = pci_device.PciDevice(
            address=vgpu.parent_addr, dev_type="type-VF",
            extra_info={"vgpu_backend": vgpu.backend, "vgpu_type": vgpu.vgpu_type})
        return dev
    return pci_device.PciDevice(
        address=None, parent_addr=vgpu.parent_addr, mdev_uuid=vgpu.mdev_uuid,
        dev_type="mdev", extra_info={"mdev_type": vgpu.vgpu_type,
                                     "vgpu_backend": vgpu.backend})
