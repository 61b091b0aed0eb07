"""XAPI inventory -> ``pci_passthrough_devices`` dicts (doc/contract.rst).

One snapshot (:class:`Snapshot`) reads every record the driver needs in a
few ``get_all_records`` calls; the functions below turn it into device
dicts:

* a PGPU -> a GPU dict (``dev_type`` ``type-PCI``, address from its PCI
  record), whose ``vgpu_types`` hold each *enabled* non-passthrough
  VGPU_type keyed by ``model_name``: ``identifier`` is XAPI's type
  identifier, ``max`` the pGPU's ``supported_VGPU_max_capacities`` entry and
  ``available`` ``PGPU.get_remaining_capacity`` (XAPI's own count, which
  already folds in the type lock and resident vGPUs);
* a VGPU that is not a whole-GPU passthrough -> a ``mdev`` dict whose
  identity is pci_vgpu's UUID tag (``other_config['pci-vgpu-uuid']``) when
  pci_vgpu created it, else the VGPU's own uuid.

A passthrough VGPU_type is how XAPI hands a whole GPU to a VM, so it is not
a vGPU type here: the GPU dict itself is the whole-GPU device.
NUMA: XAPI records no NUMA node for a PCI device, so it comes from
``[xenserver] pci_numa_nodes`` (bus prefix -> node) or is None.
"""

from __future__ import annotations

import dataclasses
import typing as ty

Call = ty.Callable[..., ty.Any]
Record = dict[str, ty.Any]
Device = dict[str, ty.Any]

NULL_REF = "OpaqueRef:NULL"
#: other_config keys pci_vgpu writes on the VGPUs it creates.
INSTANCE_KEY = "nova-instance-uuid"
UUID_KEY = "pci-vgpu-uuid"
#: other_config key of the VMs pci_vgpu creates (Nova's XenAPI driver's).
VM_INSTANCE_KEY = "nova_uuid"


@dataclasses.dataclass
class Snapshot:
    """Every record of the classes the driver reads, by ref."""

    pgpus: dict[str, Record]
    pcis: dict[str, Record]
    groups: dict[str, Record]
    types: dict[str, Record]
    vgpus: dict[str, Record]
    vms: dict[str, Record]

    @classmethod
    def read(cls, call: Call) -> Snapshot:
        """Read the snapshot through ``call(method, *args)``."""
        return cls(
            pgpus=call("PGPU.get_all_records"), pcis=call("PCI.get_all_records"),
            groups=call("GPU_group.get_all_records"),
            types=call("VGPU_type.get_all_records"),
            vgpus=call("VGPU.get_all_records"), vms=call("VM.get_all_records"))

    def address(self, pgpu: str) -> str | None:
        """PCI address of ``pgpu`` (None for NULL or an unknown ref)."""
        rec = self.pgpus.get(pgpu)
        if rec is None or rec["PCI"] not in self.pcis:
            return None
        return str(self.pcis[rec["PCI"]]["pci_id"]).lower()

    def pgpu_by_address(self, address: str) -> str | None:
        """Ref of the PGPU at ``address``, if any."""
        for ref in self.pgpus:
            if self.address(ref) == address.lower():
                return ref
        return None

    def is_passthrough(self, vtype: str) -> bool:
        return bool(self.types.get(vtype, {}).get("implementation") == "passthrough")

    def find_type(self, name: str) -> str | None:
        """Ref of the VGPU_type whose model name or identifier is ``name``."""
        for ref, rec in self.types.items():
            if name in (rec["model_name"], rec["identifier"]):
                return ref
        return None

    def name_refs(self, text: str) -> str:
        """``text`` with each known VGPU_type / GPU_group / PGPU ref followed by its name.

        XAPI error parameters are refs; an operator needs "GRID K240Q".
        """
        names = {ref: rec["model_name"] for ref, rec in self.types.items()}
        names.update({ref: rec["name_label"] for ref, rec in self.groups.items()})
        names.update({ref: "pGPU %s" % self.address(ref) for ref in self.pgpus})
        for ref, name in names.items():
            text = text.replace(ref, "%s (%s)" % (ref, name))
        return text

    def vgpu_identity(self, vgpu: str) -> str:
        """pci_vgpu's UUID tag of ``vgpu``, else the VGPU's own uuid."""
        rec = self.vgpus[vgpu]
        return str(rec["other_config"].get(UUID_KEY) or rec["uuid"]).lower()

    def vgpu_parent(self, vgpu: str) -> str | None:
        """The pGPU the VGPU runs on (None while its VM is halted)."""
        return self.address(self.vgpus[vgpu]["resident_on"])


def numa_node(address: str | None, numa_map: ty.Mapping[str, str]) -> int | None:
    """NUMA node of ``address`` from the longest matching prefix, else None."""
    if address is None:
        return None
    best = max((p for p in numa_map if address.startswith(p.lower())), key=len, default=None)
    return None if best is None else int(numa_map[best])


def _type_entry(snap: Snapshot, call: Call, pgpu: str, vtype: str) -> dict[str, ty.Any]:
    rec = snap.types[vtype]
    heads, fb_mib = int(rec["max_heads"]), int(rec["framebuffer_size"]) // (1024 * 1024)
    return {
        "name": rec["model_name"],
        "description": "%s %s, %d MiB framebuffer, %d heads" % (
            rec["vendor_name"], rec["model_name"], fb_mib, heads),
        "device_api": rec["implementation"],
        "available": int(call("PGPU.get_remaining_capacity", pgpu, vtype)),
        "max": int(snap.pgpus[pgpu]["supported_VGPU_max_capacities"].get(vtype, 0)),
        "identifier": rec["identifier"] or None,
    }


def _sharing(snap: Snapshot, types: list[str]) -> str:
    # NVIDIA time-sliced pGPUs are homogeneous in XAPI: one type at a time.
    impls = {snap.types[t]["implementation"] for t in types}
    return "one-type" if impls <= {"nvidia"} else "budget"


def gpu_device(snap: Snapshot, call: Call, pgpu: str, numa_map: ty.Mapping[str, str]) -> Device:
    """The GPU dict of ``pgpu``."""
    rec, pci = snap.pgpus[pgpu], snap.pcis[snap.pgpus[pgpu]["PCI"]]
    vendor, product = pci["vendor_id"].lower(), pci["device_id"].lower()
    vtypes = [t for t in rec["enabled_VGPU_types"] if t in snap.types and not snap.is_passthrough(t)]
    address = snap.address(pgpu)
    device: Device = {
        "dev_id": pgpu, "address": address, "vendor_id": vendor, "product_id": product,
        "numa_node": numa_node(address, numa_map), "label": "label_%s_%s" % (vendor, product),
        "dev_type": "type-PCI", "parent_addr": None,
    }
    if vtypes:
        entries = {snap.types[t]["model_name"]: _type_entry(snap, call, pgpu, t) for t in vtypes}
        device.update(vgpu_types=dict(sorted(entries.items())),
                      vgpu_sharing=_sharing(snap, vtypes), vgpu_backend="xenapi")
    return device


def _group_pci(snap: Snapshot, group: str) -> Record | None:
    for rec in snap.pgpus.values():
        if rec["GPU_group"] == group:
            return snap.pcis[rec["PCI"]]
    return None


def vgpu_device(snap: Snapshot, vgpu: str, numa_map: ty.Mapping[str, str]) -> Device | None:
    """The ``mdev`` dict of ``vgpu``; None for a whole-GPU passthrough VGPU."""
    rec = snap.vgpus[vgpu]
    if snap.is_passthrough(rec["type"]):
        return None
    parent = snap.vgpu_parent(vgpu)
    pci = snap.pcis[snap.pgpus[rec["resident_on"]]["PCI"]] if parent else _group_pci(snap, rec["GPU_group"])
    vendor = pci["vendor_id"].lower() if pci else ""
    product = pci["device_id"].lower() if pci else ""
    return {
        "dev_id": vgpu, "address": None, "vendor_id": vendor, "product_id": product,
        "numa_node": numa_node(parent, numa_map), "label": "label_%s_%s" % (vendor, product),
        "dev_type": "mdev", "parent_addr": parent, "mdev_uuid": snap.vgpu_identity(vgpu),
        "mdev_type": snap.types[rec["type"]]["model_name"],
        "instance_uuid": rec["other_config"].get(INSTANCE_KEY), "vgpu_backend": "xenapi",
    }


def devices(snap: Snapshot, call: Call, numa_map: ty.Mapping[str, str]) -> list[Device]:
    """Every GPU dict, then every vGPU dict, in address / creation order."""
    gpus = sorted((gpu_device(snap, call, p, numa_map) for p in snap.pgpus),
                  key=lambda d: d["address"] or "")
    vgpus = [d for d in (vgpu_device(snap, v, numa_map) for v in snap.vgpus) if d is not None]
    return gpus + vgpus
