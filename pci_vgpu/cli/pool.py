"""``pool list``: the pools the scheduler sees, with free and used counts."""

from __future__ import annotations

import argparse
import typing as ty

from pci_vgpu import pool as pool_mod
from pci_vgpu.cli import base
from pci_vgpu.cli import columns
from pci_vgpu.cli import wiring
from pci_vgpu.virt.noop import attr

POOL_COLUMNS = ("vendor_id", "product_id", "numa_node", "dev_type", "address",
                "vgpu_type", "vgpu_names", "free", "used", "max", "tags")
_BUSY = ("claimed", "allocated")
_KNOWN = set(pool_mod.KEY_FIELDS) | set(pool_mod.VGPU_TAGS) | {pool_mod.GPU_TAG, "count"}


def _members(pool: dict[str, ty.Any], devices: ty.Sequence[ty.Any]) -> list[ty.Any]:
    """The devices of a whole-device pool, whatever their status."""
    return [d for d in devices
            if attr(d, "dev_type") == pool["dev_type"]
            and attr(d, "vendor_id") == pool["vendor_id"]
            and attr(d, "product_id") == pool["product_id"]
            and (attr(d, "parent_addr") or attr(d, "address")) == pool["address"]]


def _type_names(pool: dict[str, ty.Any], devices: ty.Sequence[ty.Any]) -> list[str]:
    """Other names of the pool's type (its name and identifier) from its GPU.

    Read from the GPU's vGPU types rather than split out of the pool's
    ``vgpu_names`` tag: a XAPI identifier contains commas itself.
    """
    for dev in devices:
        if attr(dev, "address") == pool["address"] and getattr(dev, "vgpu_types", None):
            entry = dev.vgpu_types.get(pool["vgpu_type"]) or {}
            names = (entry.get("name"), entry.get("identifier"))
            return [n for n in dict.fromkeys(names) if n and n != pool["vgpu_type"]]
    return []


def pool_row(pool: dict[str, ty.Any], devices: ty.Sequence[ty.Any]) -> tuple[ty.Any, ...]:
    """One output row of a Nova-shaped pool dict."""
    tags = {k: v for k, v in pool.items() if k not in _KNOWN}
    if pool.get("vgpu_type"):
        used = int(pool.get("vgpu_in_use") or 0)
        total = int(pool.get("vgpu_max") or 0)
        names = columns.ListColumn(_type_names(pool, devices))
    else:
        members = _members(pool, devices)
        used = sum(1 for d in members if attr(d, "status") in _BUSY)
        total = max(len(members), pool["count"] + used)
        names = columns.ListColumn([])
    return (pool["vendor_id"], pool["product_id"], pool["numa_node"], pool["dev_type"],
            pool["address"], pool.get("vgpu_type"), names, pool["count"], used, total,
            columns.DictColumn(tags))


def pool_sort_key(pool: dict[str, ty.Any]) -> tuple[ty.Any, ...]:
    node = pool.get("numa_node")
    return (-1 if node is None else node, str(pool.get("address")),
            str(pool.get("vgpu_type") or ""))


class PoolList(base.Lister):
    """Pools by vGPU type and NUMA node with free/used counts."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        self.add_connection_option(parser)
        parser.add_argument("--refresh", action="store_true",
                            help="Sync the hypervisor's inventory into the database first.")
        return parser

    def take_action_checked(self, parsed_args: argparse.Namespace) -> tuple[ty.Any, ...]:
        service = wiring.service(self.driver(parsed_args), sync=parsed_args.refresh)
        devices = service.tracker.devices()
        pools = sorted(service.tracker.stats(), key=pool_sort_key)
        return POOL_COLUMNS, [pool_row(p, devices) for p in pools]
