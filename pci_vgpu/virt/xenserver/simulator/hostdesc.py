"""Host description files: what hardware a simulated XenServer host has.

A description is a JSON document (shipped ones live in ``hosts/``)::

    {"description": "...",
     "host": {"name_label": ..., "API_version_major": 2, ...},
     "vgpu_types": {"K260Q": {"model_name": "GRID K260Q", "implementation": "nvidia",
                              "identifier": "0001:nvidia,...", "framebuffer_size": ...,
                              "compatible_types_in_vm": ["K260Q"]}, ...},
     "gpu_groups": {"k2-pack": {"name_label": ..., "allocation_algorithm": "depth_first"}},
     "pgpus": [{"pci_id": "0000:08:00.0", "vendor_id": "10de", "device_id": "11bf",
                "gpu_group": "k2-pack", "max_capacities": {"K260Q": 2, ...},
                "enabled": ["K260Q"]            # optional, default: every supported type
               }, ...]}

Keys of ``vgpu_types`` and ``gpu_groups`` are local names the file uses to
link objects; the simulator turns them into XAPI refs.  Loading is strict:
an unknown name or a missing field raises :class:`HostDescriptionInvalid`
naming it, and nothing is half-loaded.
"""

from __future__ import annotations

import json
import pathlib
import typing as ty

from pci_vgpu import exception
from pci_vgpu.virt.xenserver.simulator.model import NULL_REF
from pci_vgpu.virt.xenserver.simulator.model import Database

HOSTS_DIR = pathlib.Path(__file__).parent / "hosts"
_ALGORITHMS = ("depth_first", "breadth_first")
_IMPLEMENTATIONS = ("passthrough", "nvidia", "nvidia_sriov", "gvt_g", "mxgpu")

Desc = dict[str, ty.Any]


class HostDescriptionInvalid(exception.Invalid):
    msg_fmt = "Simulator host description %(source)s is invalid: %(reason)s"


def shipped_hosts() -> list[str]:
    """Names of the descriptions shipped with the package."""
    return sorted(p.stem for p in HOSTS_DIR.glob("*.json"))


def resolve(name_or_path: str) -> pathlib.Path:
    """The file of a shipped description name, or the path itself.

    :raises: HostDescriptionInvalid if there is no such file.
    """
    path = HOSTS_DIR / (name_or_path + ".json")
    if not path.is_file():
        path = pathlib.Path(name_or_path)
    if not path.is_file():
        raise HostDescriptionInvalid(
            source=name_or_path,
            reason="no such file; shipped hosts are %s" % ", ".join(shipped_hosts()))
    return path


def load(name_or_path: str) -> Desc:
    """Read a shipped description by name, or a file by path.

    :raises: HostDescriptionInvalid if it cannot be found or parsed.
    """
    path = resolve(name_or_path)
    try:
        desc = json.loads(path.read_text())
    except ValueError as exc:
        raise HostDescriptionInvalid(source=str(path), reason=str(exc)) from exc
    validate(desc, str(path))
    return ty.cast(Desc, desc)


def _need(cond: bool, source: str, reason: str) -> None:
    if not cond:
        raise HostDescriptionInvalid(source=source, reason=reason)


def validate(desc: Desc, source: str) -> None:
    """Check cross references and enums before anything is built."""
    _need(isinstance(desc, dict), source, "top level must be an object")
    for key in ("host", "vgpu_types", "gpu_groups", "pgpus"):
        _need(key in desc, source, "missing key %r" % key)
    for name, vtype in desc["vgpu_types"].items():
        _need(vtype.get("implementation") in _IMPLEMENTATIONS, source,
              "vGPU type %r: implementation must be one of %s" % (name, ", ".join(_IMPLEMENTATIONS)))
        for other in vtype.get("compatible_types_in_vm", []):
            _need(other in desc["vgpu_types"], source,
                  "vGPU type %r: unknown compatible type %r" % (name, other))
    for name, group in desc["gpu_groups"].items():
        _need(group.get("allocation_algorithm") in _ALGORITHMS, source,
              "GPU group %r: allocation_algorithm must be one of %s" % (name, ", ".join(_ALGORITHMS)))
    for pgpu in desc["pgpus"]:
        _validate_pgpu(desc, pgpu, source)


def _validate_pgpu(desc: Desc, pgpu: Desc, source: str) -> None:
    where = "pGPU %r" % pgpu.get("pci_id")
    for key in ("pci_id", "vendor_id", "device_id", "gpu_group", "max_capacities"):
        _need(key in pgpu, source, "%s: missing key %r" % (where, key))
    _need(pgpu["gpu_group"] in desc["gpu_groups"], source,
          "%s: unknown GPU group %r" % (where, pgpu["gpu_group"]))
    for name in list(pgpu["max_capacities"]) + list(pgpu.get("enabled", [])):
        _need(name in pgpu["max_capacities"] and name in desc["vgpu_types"], source,
              "%s: type %r is not a supported vGPU type of this pGPU" % (where, name))


def populate(db: Database, desc: Desc) -> None:
    """Create the host, types, groups, PCI and PGPU records of ``desc``."""
    host = db.insert("host", _host_record(desc["host"]))
    types = {name: db.insert("VGPU_type", _type_record(t)) for name, t in desc["vgpu_types"].items()}
    for name, rec in desc["vgpu_types"].items():
        stored = db.get("VGPU_type", types[name])
        stored["compatible_types_in_vm"] = [types[o] for o in rec.get("compatible_types_in_vm", [])]
        stored["compatible_types_on_pgpu"] = [types[name]]
    groups = {name: db.insert("GPU_group", _group_record(g)) for name, g in desc["gpu_groups"].items()}
    for pgpu in desc["pgpus"]:
        pci = db.insert("PCI", _pci_record(pgpu, host))
        caps = {types[n]: int(c) for n, c in pgpu["max_capacities"].items()}
        enabled = [types[n] for n in pgpu.get("enabled", pgpu["max_capacities"])]
        db.insert("PGPU", {
            "PCI": pci, "GPU_group": groups[pgpu["gpu_group"]], "host": host,
            "other_config": {}, "supported_VGPU_types": list(caps),
            "enabled_VGPU_types": enabled, "supported_VGPU_max_capacities": caps,
            "dom0_access": pgpu.get("dom0_access", "disabled"),
            "is_system_display_device": bool(pgpu.get("is_system_display_device", False)),
            "compatibility_metadata": {},
        })


def _host_record(host: Desc) -> Desc:
    record = {"name_label": "xenserver", "name_description": "", "hostname": "xenserver",
              "address": "127.0.0.1", "enabled": True, "other_config": {},
              "API_version_major": 2, "API_version_minor": 21, "software_version": {}}
    record.update(host)
    return record


def _type_record(vtype: Desc) -> Desc:
    record: Desc = {"vendor_name": "", "model_name": "", "framebuffer_size": 0, "max_heads": 0,
                    "max_resolution_x": 0, "max_resolution_y": 0, "identifier": "",
                    "experimental": False}
    record.update({k: v for k, v in vtype.items() if k != "compatible_types_in_vm"})
    return record


def _group_record(group: Desc) -> Desc:
    return {"name_label": group.get("name_label", ""), "name_description": "",
            "other_config": {}, "GPU_types": [],
            "allocation_algorithm": group["allocation_algorithm"]}


def _pci_record(pgpu: Desc, host: str) -> Desc:
    return {
        "class_id": "0300", "class_name": "VGA compatible controller",
        "vendor_id": pgpu["vendor_id"], "vendor_name": pgpu.get("vendor_name", ""),
        "device_id": pgpu["device_id"], "device_name": pgpu.get("device_name", ""),
        "subsystem_vendor_id": pgpu.get("subsystem_vendor_id", ""),
        "subsystem_device_id": pgpu.get("subsystem_device_id", ""),
        "driver_name": pgpu.get("driver_name", ""), "host": host,
        "pci_id": pgpu["pci_id"], "dependencies": [], "other_config": {},
        "functions": 1, "virtual_functions": [], "physical_function": NULL_REF,
    }
