"""``host inventory`` and ``host reconcile``."""

from __future__ import annotations

import argparse
import typing as ty

from oslo_log import log as logging

from pci_vgpu.cli import base
from pci_vgpu.cli import columns
from pci_vgpu.cli import wiring
from pci_vgpu.virt.noop import attr

LOG = logging.getLogger(__name__)

#: JSON keys of ``host inventory -f json``, in order (documented in README).
INVENTORY_COLUMNS = (
    "dev_id", "address", "parent_addr", "vendor_id", "product_id", "dev_type",
    "numa_node", "mdev_uuid", "mdev_type", "vgpu_types", "status", "instance_uuid",
)


def inventory_row(dev: dict[str, ty.Any], record: ty.Any | None) -> tuple[ty.Any, ...]:
    """One output row: the driver's dict, plus status and owner from the DB.

    A device the database does not hold (filtered out by ``[pci]
    device_spec``) is listed with status ``unmatched`` so an operator sees
    why it is not offered.
    """
    status = getattr(record, "status", None) or "unmatched"
    owner = getattr(record, "instance_uuid", None) or dev.get("instance_uuid")
    return (
        dev.get("dev_id"), dev.get("address"), dev.get("parent_addr"),
        dev.get("vendor_id"), dev.get("product_id"), dev.get("dev_type"),
        dev.get("numa_node"), dev.get("mdev_uuid"), dev.get("mdev_type"),
        columns.VgpuTypesColumn(dev.get("vgpu_types") or {}), status, owner,
    )


def device_key(dev: ty.Any) -> str | None:
    """Identity shared by a driver dict and a DB record: mdev UUID or address."""
    if isinstance(dev, dict):
        key = dev.get("mdev_uuid") or dev.get("address")
    else:
        key = attr(dev, "mdev_uuid") or attr(dev, "address")
    return None if key is None else str(key)


class HostInventory(base.Lister):
    """Discover the host's devices through the driver, sync them, list them."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        self.add_connection_option(parser)
        parser.add_argument("--no-sync", action="store_true",
                            help="Only read the hypervisor; leave the database alone.")
        return parser

    def take_action_checked(self, parsed_args: argparse.Namespace) -> tuple[ty.Any, ...]:
        driver = self.driver(parsed_args)
        if parsed_args.no_sync:
            devices, records = driver.get_pci_passthrough_devices(), {}
        else:
            service = wiring.service(driver, sync=True)
            devices = service.last_inventory
            records = {device_key(r): r for r in service.tracker.devices()}
        rows = [inventory_row(d, records.get(device_key(d))) for d in devices]
        return INVENTORY_COLUMNS, rows


class HostReconcile(base.Lister):
    """Compare database, hypervisor vGPUs and guests; fix with --apply.

    Exits 1 while a finding remains unfixed, so a cron job can alert on it.
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        self.add_connection_option(parser)
        parser.add_argument("--apply", action="store_true",
                            help="Fix what was found: free leaked claims, remove orphan "
                                 "vGPUs, re-create missing ones.")
        return parser

    def take_action_checked(self, parsed_args: argparse.Namespace) -> tuple[ty.Any, ...]:
        service = wiring.service(self.driver(parsed_args))
        findings = service.reconcile(apply=parsed_args.apply)
        self.unfixed = sum(1 for f in findings if not f.fixed)
        rows = [(f.kind, f.subject, f.detail, f.fixed) for f in findings]
        return ("kind", "subject", "detail", "fixed"), rows

    def run(self, parsed_args: argparse.Namespace) -> int:
        self.unfixed = 0
        result = int(super().run(parsed_args))
        return result if result or not self.unfixed else 1


class HostInit(base.Lister):
    """Start-up after a reboot: re-create lost vGPUs of allocated devices.

    Lists what the driver re-created, the vGPUs no allocated device owns
    (``[libvirt] remove_orphan_mdevs`` removes them) and what it removed.
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        self.add_connection_option(parser)
        return parser

    def take_action_checked(self, parsed_args: argparse.Namespace) -> tuple[ty.Any, ...]:
        report = wiring.service(self.driver(parsed_args)).init_host()
        rows = [("recreated", subject, "") for subject in report.recreated]
        rows += [("orphan", str(o.mdev_uuid or o.parent_addr),
                  "type %s on %s" % (o.vgpu_type, o.parent_addr)) for o in report.orphans]
        rows += [("removed", subject, "") for subject in report.removed]
        return ("action", "subject", "detail"), rows
