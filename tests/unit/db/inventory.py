"""A small host inventory for tracker tests, drawn::

    socket 0                              socket 1
    NUMA node 0                           NUMA node 1
      0000:06:00.0  V100 (10de:1db4)        0000:41:00.0  T4 (10de:1eb8)
                    whole-GPU only                        vGPU, one-type:
                                                           nvidia-222 max 4
                                                           nvidia-223 max 2

Helpers read as verbs: ``report(...)`` is the driver's
``pci_passthrough_devices`` JSON; ``vgpu_request`` / ``gpu_request`` build
InstancePCIRequests the way ``pci_vgpu.request`` does.
"""

from __future__ import annotations

import json
import typing as ty

from oslo_utils import uuidutils

from pci_vgpu.objects import instance_pci_requests as ipr

T4 = "0000:41:00.0"
V100 = "0000:06:00.0"


def create_gpu(address: str, product_id: str, numa_node: int | None,
               vgpu_types: dict[str, int] | None = None) -> dict[str, ty.Any]:
    """A GPU device dict; ``vgpu_types`` maps type id -> max instances."""
    dev: dict[str, ty.Any] = {
        "dev_id": "pci_" + address.replace(":", "_").replace(".", "_"),
        "address": address, "vendor_id": "10de", "product_id": product_id,
        "numa_node": numa_node, "label": "label_10de_%s" % product_id,
        "dev_type": "type-PCI", "parent_addr": None,
    }
    if vgpu_types:
        dev["vgpu_types"] = {
            type_id: {"name": type_id, "description": "", "device_api":
                      "vfio-pci", "available": count, "max": count,
                      "identifier": None}
            for type_id, count in vgpu_types.items()}
        dev["vgpu_sharing"] = "one-type"
        dev["vgpu_backend"] = "mdev"
    return dev


def default_host(t4_types: dict[str, int] | None = None) -> list[dict[str, ty.Any]]:
    return [create_gpu(V100, "1db4", 0),
            create_gpu(T4, "1eb8", 1,
                       t4_types or {"nvidia-222": 4, "nvidia-223": 2})]


def report(devices: list[dict[str, ty.Any]]) -> str:
    return json.dumps(devices)


def vgpu_request(vgpu_type: str = "nvidia-222", count: int = 1,
                 numa_policy: str = "legacy") -> ipr.InstancePCIRequest:
    spec = {"vendor_id": "10de", "product_id": "1eb8",
            "vgpu_types": json.dumps([vgpu_type])}
    return ipr.InstancePCIRequest(
        count=count, spec=[spec], alias_name="vgpu-" + vgpu_type,
        is_new=False, numa_policy=numa_policy,
        request_id=uuidutils.generate_uuid(), requester_id=None)


def gpu_request(product_id: str = "1db4", count: int = 1) -> ipr.InstancePCIRequest:
    return ipr.InstancePCIRequest(
        count=count, spec=[{"vendor_id": "10de", "product_id": product_id}],
        alias_name="gpu-" + product_id, is_new=False, numa_policy="legacy",
        request_id=uuidutils.generate_uuid(), requester_id=None)
