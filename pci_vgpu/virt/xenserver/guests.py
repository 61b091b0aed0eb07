"""Guests with vGPUs on XAPI: plan, build, start, tear down.

What XAPI decides itself, and what pci_vgpu can and cannot pin:

* ``VGPU.create(VM, GPU_group, device, other_config, type)`` only records a
  vGPU on a *halted* VM, in a GPU *group*.  The pGPU is chosen by
  ``VM.start``: XAPI ranks the group's pGPUs by remaining capacity for the
  type (``depth_first``: fullest first; ``breadth_first``: emptiest first)
  and takes the first that fits.  No API lets a caller pin a pGPU
  (``VGPU.scheduled_to_be_resident_on`` is read-only).
* So the driver passes the group of the pGPU the claim chose (groups hold
  identical pGPUs), starts the VM, then reads each VGPU's ``resident_on``.
  Where XAPI picked another pGPU of the group it logs a warning; the next
  inventory reports the vGPU under the pGPU it really runs on and the
  tracker follows the hypervisor.  Operators who need the claim honoured
  exactly use one pGPU per GPU group, or the pack/spread policy matching the
  group's allocation algorithm.
* A whole GPU is a VGPU of the pGPU's ``passthrough`` type in its group.
* Several vGPUs per VM are created in device slots "0", "1", ... and XAPI
  refuses types that are not ``compatible_types_in_vm``.

Every step that fails undoes what this module created (VGPUs, then the VM)
before raising, so a failed spawn leaves the host as it was.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as ty

from pci_vgpu.virt import driver as virt_driver
from pci_vgpu.virt import exception as virt_exc
from pci_vgpu.virt.xenserver import inventory

if ty.TYPE_CHECKING:
    from pci_vgpu.objects.pci_device import PciDevice

LOG = logging.getLogger(__name__)

Call = ty.Callable[..., ty.Any]
MiB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class VgpuPlan:
    """One VGPU.create call, worked out before anything is created."""

    group: str
    vtype: str
    other_config: dict[str, str]
    #: Address of the pGPU the claim chose (for the post-start check).
    claimed_parent: str | None
    #: The device in words, for messages.
    label: str


class PlanError(Exception):
    """A device that cannot become a XAPI VGPU; the message says why."""


def _plan_vgpu(snap: inventory.Snapshot, guest_uuid: str, dev: PciDevice) -> VgpuPlan:
    label = "vGPU %s (type %s on %s)" % (dev.mdev_uuid, dev.vgpu_type, dev.parent_addr)
    vtype = snap.find_type(dev.vgpu_type or "")
    if vtype is None or snap.is_passthrough(vtype):
        offered = sorted(r["model_name"] for r in snap.types.values()
                         if r["implementation"] != "passthrough")
        raise PlanError("%s: unknown vGPU type %r; this host offers %s"
                        % (label, dev.vgpu_type, ", ".join(offered)))
    pgpu = snap.pgpu_by_address(dev.parent_addr or "")
    if pgpu is None:
        raise PlanError("%s: no pGPU at address %r" % (label, dev.parent_addr))
    config = {inventory.INSTANCE_KEY: guest_uuid, inventory.UUID_KEY: str(dev.mdev_uuid)}
    return VgpuPlan(snap.pgpus[pgpu]["GPU_group"], vtype, config, dev.parent_addr, label)


def _plan_whole_gpu(snap: inventory.Snapshot, guest_uuid: str, dev: PciDevice) -> VgpuPlan:
    label = "GPU %s" % dev.address
    pgpu = snap.pgpu_by_address(dev.address or "")
    if pgpu is None:
        raise PlanError("%s: XAPI manages no pGPU at this address" % label)
    rec = snap.pgpus[pgpu]
    passthrough = [t for t in rec["enabled_VGPU_types"] if snap.is_passthrough(t)]
    if not passthrough:
        raise PlanError("%s: the pGPU has no enabled passthrough type" % label)
    config = {inventory.INSTANCE_KEY: guest_uuid}
    return VgpuPlan(rec["GPU_group"], passthrough[0], config, dev.address, label)


def plan(snap: inventory.Snapshot, guest_uuid: str,
         devices: ty.Sequence[PciDevice]) -> list[VgpuPlan]:
    """The VGPU.create calls for ``devices``.

    :raises: PlanError for a device XAPI cannot attach.
    """
    plans = []
    for dev in devices:
        if dev.dev_type == "mdev":
            plans.append(_plan_vgpu(snap, guest_uuid, dev))
        elif dev.dev_type in ("type-PCI", "type-PF") and dev.address:
            plans.append(_plan_whole_gpu(snap, guest_uuid, dev))
        else:
            raise PlanError("device %s of type %s: the XenServer driver attaches only "
                            "GPUs and vGPUs" % (dev.address or dev.mdev_uuid, dev.dev_type))
    return plans


def vm_record(guest: virt_driver.GuestSpec) -> dict[str, ty.Any]:
    """The ``VM.create`` record of an HVM guest (int64 values as strings)."""
    memory = str(guest.memory_mb * MiB)
    return {
        "name_label": guest.name, "name_description": "pci_vgpu guest %s" % guest.uuid,
        "user_version": "1", "is_a_template": False, "affinity": inventory.NULL_REF,
        "memory_static_max": memory, "memory_dynamic_max": memory,
        "memory_dynamic_min": memory, "memory_static_min": memory,
        "VCPUs_max": str(guest.vcpus), "VCPUs_at_startup": str(guest.vcpus), "VCPUs_params": {},
        "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
        "actions_after_crash": "destroy", "PV_bootloader": "", "PV_kernel": "",
        "PV_ramdisk": "", "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order", "HVM_boot_params": {"order": "dc"},
        "platform": {"acpi": "1", "apic": "true", "pae": "true", "viridian": "true"},
        "PCI_bus": "", "recommendations": "",
        "other_config": {inventory.VM_INSTANCE_KEY: guest.uuid},
    }


def find_vm(snap: inventory.Snapshot, guest_uuid: str) -> str | None:
    """Ref of the VM pci_vgpu created for ``guest_uuid``, if any."""
    for ref, rec in snap.vms.items():
        if rec.get("other_config", {}).get(inventory.VM_INSTANCE_KEY) == guest_uuid:
            return ref
    return None


def build_and_start(call: Call, guest: virt_driver.GuestSpec, plans: list[VgpuPlan]) -> str:
    """Create the VM and its VGPUs, start it; undo everything on failure.

    :raises: XapiFailure (after the rollback).
    """
    vm = str(call("VM.create", vm_record(guest)))
    created: list[str] = []
    try:
        for slot, item in enumerate(plans):
            created.append(call("VGPU.create", vm, item.group, str(slot),
                                item.other_config, item.vtype))
        call("VM.start", vm, False, False)
    except virt_exc.VirtDriverError:
        _rollback(call, vm, created)
        raise
    return vm


def _rollback(call: Call, vm: str, vgpus: list[str]) -> None:
    for ref, method in [(v, "VGPU.destroy") for v in reversed(vgpus)] + [(vm, "VM.destroy")]:
        try:
            call(method, ref)
        except virt_exc.VirtDriverError as exc:
            LOG.error("Rollback step %(method)s %(ref)s failed: %(err)s",
                      {"method": method, "ref": ref, "err": exc})


def check_placement(call: Call, vm: str, plans: list[VgpuPlan]) -> list[str]:
    """Compare each VGPU's ``resident_on`` with the claimed pGPU; return the mismatches."""
    snap = inventory.Snapshot.read(call)
    mismatches = []
    for vgpu in snap.vms[vm]["VGPUs"]:
        slot = int(snap.vgpus[vgpu]["device"])
        actual, claimed = snap.vgpu_parent(vgpu), plans[slot].claimed_parent
        if actual != claimed:
            LOG.warning("XAPI placed %(dev)s on pGPU %(actual)s, not the claimed %(claimed)s",
                        {"dev": plans[slot].label, "actual": actual, "claimed": claimed})
            mismatches.append(plans[slot].label)
    return mismatches


def teardown(call: Call, vm: str) -> None:
    """Stop ``vm`` if it runs, then destroy it with its VGPUs.

    :raises: XapiFailure.
    """
    if call("VM.get_power_state", vm) in ("Running", "Paused"):
        call("VM.hard_shutdown", vm)
    for vgpu in call("VM.get_VGPUs", vm):
        call("VGPU.destroy", vgpu)
    call("VM.destroy", vm)


__all__ = ("PlanError", "VgpuPlan", "build_and_start", "check_placement",
           "find_vm", "plan", "teardown", "vm_record")
