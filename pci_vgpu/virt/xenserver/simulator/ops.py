"""XAPI semantics of the calls the driver uses: capacity, VGPU, VM.

The rules follow XAPI (``xapi_pgpu_helpers``, ``vgpuops``, ``xapi_vgpu``):

* A pGPU's capacity for type *T* comes from
  ``supported_VGPU_max_capacities[T]``.  vGPUs *resident* on a pGPU use
  ``1/max(type)`` of it each, so for NVIDIA's time-sliced types (whose
  ``compatible_types_on_pgpu`` is only themselves) a pGPU runs one type at a
  time: a second type is refused with
  ``VGPU_TYPE_NOT_COMPATIBLE_WITH_RUNNING_TYPE``.  A passthrough type uses
  the whole pGPU.
* ``VGPU.create`` only *records* the vGPU on a halted VM: the pGPU is
  chosen by ``VM.start``, from the VGPU's GPU group, ordered by remaining
  capacity for the type -- ascending for ``depth_first`` (fill the fullest
  pGPU first), descending for ``breadth_first`` (spread) -- ties in pGPU
  creation order.  No API lets a caller pin the pGPU.
* Several VGPUs on one VM are allowed when each type lists the others in
  ``compatible_types_in_vm``.

Each function takes the :class:`~.model.Database` and the call's arguments
after the session, and raises :class:`~.model.XapiError` like XAPI does.
"""

from __future__ import annotations

import fractions
import typing as ty

from pci_vgpu.virt.xenserver.simulator.model import NULL_REF
from pci_vgpu.virt.xenserver.simulator.model import Database
from pci_vgpu.virt.xenserver.simulator.model import XapiError

ALGORITHMS = ("depth_first", "breadth_first")

Record = dict[str, ty.Any]


def _max(db: Database, pgpu: str, vtype: str) -> int:
    caps = db.get("PGPU", pgpu)["supported_VGPU_max_capacities"]
    return int(caps.get(vtype, 0))


def _resident(db: Database, pgpu: str) -> list[str]:
    return db.where("VGPU", "resident_on", pgpu)


def check_capacity(db: Database, pgpu: str, vtype: str) -> int:
    """How many more ``vtype`` vGPUs fit on ``pgpu`` (at least one).

    :raises: XapiError VGPU_TYPE_NOT_SUPPORTED, VGPU_TYPE_NOT_ENABLED,
        VGPU_TYPE_NOT_COMPATIBLE_WITH_RUNNING_TYPE or
        PGPU_INSUFFICIENT_CAPACITY_FOR_VGPU.
    """
    rec = db.get("PGPU", pgpu)
    db.get("VGPU_type", vtype)
    if vtype not in rec["supported_VGPU_types"]:
        raise XapiError("VGPU_TYPE_NOT_SUPPORTED", vtype, *rec["supported_VGPU_types"])
    if vtype not in rec["enabled_VGPU_types"]:
        raise XapiError("VGPU_TYPE_NOT_ENABLED", vtype, *rec["enabled_VGPU_types"])
    used = fractions.Fraction(0)
    for vgpu in _resident(db, pgpu):
        running = db.get("VGPU", vgpu)["type"]
        allowed = db.get("VGPU_type", running)["compatible_types_on_pgpu"]
        if running != vtype and vtype not in allowed:
            raise XapiError("VGPU_TYPE_NOT_COMPATIBLE_WITH_RUNNING_TYPE", pgpu, vtype, running)
        used += fractions.Fraction(1, _max(db, pgpu, running))
    free = int((1 - used) * _max(db, pgpu, vtype))
    if free < 1:
        raise XapiError("PGPU_INSUFFICIENT_CAPACITY_FOR_VGPU", pgpu, vtype)
    return free


def pgpu_remaining_capacity(db: Database, pgpu: str, vtype: str) -> int:
    """``PGPU.get_remaining_capacity``: 0 wherever the type cannot go."""
    db.get("PGPU", pgpu)
    db.get("VGPU_type", vtype)
    try:
        return check_capacity(db, pgpu, vtype)
    except XapiError:
        return 0


def group_remaining_capacity(db: Database, group: str, vtype: str) -> int:
    """``GPU_group.get_remaining_capacity``: the sum over its pGPUs."""
    db.get("GPU_group", group)
    return sum(pgpu_remaining_capacity(db, p, vtype)
               for p in db.where("PGPU", "GPU_group", group))


def set_enabled_types(db: Database, pgpu: str, types: ty.Sequence[str]) -> None:
    """``PGPU.set_enabled_VGPU_types``; each type must be supported."""
    rec = db.get("PGPU", pgpu)
    for vtype in types:
        db.get("VGPU_type", vtype)
        if vtype not in rec["supported_VGPU_types"]:
            raise XapiError("VGPU_TYPE_NOT_SUPPORTED", vtype, *rec["supported_VGPU_types"])
    rec["enabled_VGPU_types"] = list(types)


def add_enabled_type(db: Database, pgpu: str, vtype: str) -> None:
    enabled = db.get("PGPU", pgpu)["enabled_VGPU_types"]
    set_enabled_types(db, pgpu, enabled + [t for t in [vtype] if t not in enabled])


def remove_enabled_type(db: Database, pgpu: str, vtype: str) -> None:
    db.get("VGPU_type", vtype)
    enabled = db.get("PGPU", pgpu)["enabled_VGPU_types"]
    set_enabled_types(db, pgpu, [t for t in enabled if t != vtype])


def set_allocation_algorithm(db: Database, group: str, value: str) -> None:
    """``GPU_group.set_allocation_algorithm`` (an enum in XAPI)."""
    rec = db.get("GPU_group", group)
    if value not in ALGORITHMS:
        raise XapiError("INVALID_VALUE", "allocation_algorithm", value)
    rec["allocation_algorithm"] = value


def _assert_power_state(db: Database, vm: str, expected: str) -> Record:
    rec = db.get("VM", vm)
    if rec["power_state"] != expected:
        raise XapiError("VM_BAD_POWER_STATE", vm, expected.lower(), rec["power_state"].lower())
    return rec


def vm_create(db: Database, record: Record) -> str:
    """``VM.create``: a halted VM; ``name_label`` is required."""
    if not isinstance(record, dict) or "name_label" not in record:
        raise XapiError("FIELD_TYPE_ERROR", "name_label")
    stored = {k: v for k, v in record.items() if k not in ("uuid", "VGPUs")}
    stored.update(power_state="Halted", resident_on=NULL_REF)
    stored.setdefault("other_config", {})
    return db.insert("VM", stored)


def vm_destroy(db: Database, vm: str) -> None:
    """``VM.destroy``: only a halted VM; its VGPUs go with it."""
    _assert_power_state(db, vm, "Halted")
    for vgpu in db.where("VGPU", "VM", vm):
        db.delete("VGPU", vgpu)
    db.delete("VM", vm)


def vm_start(db: Database, vm: str, paused: bool = False, force: bool = False) -> None:
    """``VM.start``: place every VGPU on a pGPU, then run; all or nothing."""
    _assert_power_state(db, vm, "Halted")
    vgpus = sorted(db.where("VGPU", "VM", vm), key=lambda v: int(db.get("VGPU", v)["device"]))
    placed: list[str] = []
    try:
        for vgpu in vgpus:
            db.get("VGPU", vgpu)["resident_on"] = _choose_pgpu(db, vm, vgpu)
            placed.append(vgpu)
    except XapiError:
        for vgpu in placed:
            db.get("VGPU", vgpu)["resident_on"] = NULL_REF
        raise
    for vgpu in vgpus:
        db.get("VGPU", vgpu)["currently_attached"] = True
    rec = db.get("VM", vm)
    rec["power_state"] = "Paused" if paused else "Running"
    rec["resident_on"] = db.refs("host")[0]


def _choose_pgpu(db: Database, vm: str, vgpu: str) -> str:
    rec = db.get("VGPU", vgpu)
    group, vtype = rec["GPU_group"], rec["type"]
    pgpus = db.where("PGPU", "GPU_group", group)
    spread = db.get("GPU_group", group)["allocation_algorithm"] == "breadth_first"
    ranked = sorted(pgpus, key=lambda p: pgpu_remaining_capacity(db, p, vtype), reverse=spread)
    errors: list[XapiError] = []
    for pgpu in ranked:
        try:
            check_capacity(db, pgpu, vtype)
            return pgpu
        except XapiError as exc:
            errors.append(exc)
    codes = {e.code for e in errors}
    if len(codes) == 1 and "PGPU_INSUFFICIENT_CAPACITY_FOR_VGPU" not in codes:
        raise errors[0]
    raise XapiError("VM_REQUIRES_VGPU", vm, group, vtype)


def vm_shutdown(db: Database, vm: str) -> None:
    """``VM.hard_shutdown`` / ``clean_shutdown``: vGPUs leave their pGPUs."""
    rec = db.get("VM", vm)
    if rec["power_state"] not in ("Running", "Paused"):
        raise XapiError("VM_BAD_POWER_STATE", vm, "running", rec["power_state"].lower())
    for vgpu in db.where("VGPU", "VM", vm):
        db.get("VGPU", vgpu).update(resident_on=NULL_REF, currently_attached=False)
    rec.update(power_state="Halted", resident_on=NULL_REF)


def vgpu_create(db: Database, vm: str, group: str, device: str,
                other_config: dict[str, str], vtype: str) -> str:
    """``VGPU.create``: record a vGPU on a halted VM.

    :raises: XapiError HANDLE_INVALID, VM_BAD_POWER_STATE,
        DEVICE_ALREADY_EXISTS, VGPU_TYPE_NOT_ENABLED, VGPU_TYPE_NOT_COMPATIBLE.
    """
    db.get("GPU_group", group)
    db.get("VGPU_type", vtype)
    _assert_power_state(db, vm, "Halted")
    if not str(device).isdigit():
        raise XapiError("INVALID_DEVICE", device)
    siblings = db.where("VGPU", "VM", vm)
    if any(db.get("VGPU", v)["device"] == str(device) for v in siblings):
        raise XapiError("DEVICE_ALREADY_EXISTS", device)
    enabled = {t for p in db.where("PGPU", "GPU_group", group)
               for t in db.get("PGPU", p)["enabled_VGPU_types"]}
    if vtype not in enabled:
        raise XapiError("VGPU_TYPE_NOT_ENABLED", vtype, group)
    _assert_compatible_in_vm(db, vtype, [db.get("VGPU", v)["type"] for v in siblings])
    return db.insert("VGPU", {
        "VM": vm, "GPU_group": group, "device": str(device), "type": vtype,
        "other_config": dict(other_config or {}), "currently_attached": False,
        "resident_on": NULL_REF, "scheduled_to_be_resident_on": NULL_REF,
        "compatibility_metadata": {}, "extra_args": "", "PCI": NULL_REF,
    })


def _assert_compatible_in_vm(db: Database, vtype: str, others: list[str]) -> None:
    mine = db.get("VGPU_type", vtype)["compatible_types_in_vm"]
    for other in others:
        theirs = db.get("VGPU_type", other)["compatible_types_in_vm"]
        if other not in mine or vtype not in theirs:
            raise XapiError("VGPU_TYPE_NOT_COMPATIBLE", vtype, other)


def vgpu_destroy(db: Database, vgpu: str) -> None:
    """``VGPU.destroy``: refused while attached to a running VM."""
    rec = db.get("VGPU", vgpu)
    if rec["currently_attached"] and db.get("VM", rec["VM"])["power_state"] == "Running":
        raise XapiError("OPERATION_NOT_ALLOWED", "vGPU currently attached to a running VM")
    db.delete("VGPU", vgpu)
