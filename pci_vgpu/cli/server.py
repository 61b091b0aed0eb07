"""``server create|delete|list|attach|detach``: guests with devices."""

from __future__ import annotations

import argparse
import typing as ty

from pci_vgpu import conf as pci_conf
from pci_vgpu import service as svc
from pci_vgpu.cli import base
from pci_vgpu.cli import columns
from pci_vgpu.cli import flavors
from pci_vgpu.cli import wiring

SERVER_COLUMNS = ("uuid", "name", "numa_node", "running", "devices")


device_summary = columns.device_summary


def server_row(server: svc.Server) -> tuple[ty.Any, ...]:
    return (server.uuid, server.name, server.numa_node, server.running,
            columns.DevicesColumn(server.devices))


def _flavor_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--flavor", required=required, metavar="FLAVOR",
        help="A [cli] flavor name, a JSON flavor file, or inline extra specs "
             "(e.g. 'pci_passthrough:alias=t4-1b:1').")


def requests_of(value: str) -> ty.Any:
    """The PCI requests the flavor ``value`` makes."""
    return wiring.requests_for(flavors.resolve(value, pci_conf.CONF))


class ServerCreate(base.ShowOne):
    """Claim devices, create vGPUs, define and start a guest with them."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("name", help="Server name (unique on this host).")
        _flavor_argument(parser)
        parser.add_argument("--numa-node", type=int, default=None, metavar="N",
                            help="Host NUMA node the guest is bound to; devices are "
                                 "chosen by each alias's numa_policy relative to it "
                                 "(required: that node only).  Default: the node of "
                                 "the devices picked.")
        parser.add_argument("--memory", type=int, default=64, metavar="MB",
                            help="Guest memory (default 64).")
        parser.add_argument("--vcpus", type=int, default=1,
                            help="Guest vCPUs (default 1).")
        self.add_connection_option(parser)
        return parser

    def take_action_checked(self, parsed_args: argparse.Namespace) -> tuple[ty.Any, ...]:
        service = wiring.service(self.driver(parsed_args))
        server = service.create_server(
            parsed_args.name, requests_of(parsed_args.flavor), numa_node=parsed_args.numa_node,
            memory_mb=parsed_args.memory, vcpus=parsed_args.vcpus, flavor=parsed_args.flavor)
        return SERVER_COLUMNS, server_row(server)


class ServerDelete(base.Command):
    """Stop a guest, remove its vGPUs and free its devices."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("server", nargs="+", help="Server name or UUID.")
        self.add_connection_option(parser)
        return parser

    def take_action_checked(self, parsed_args: argparse.Namespace) -> None:
        service = wiring.service(self.driver(parsed_args))
        for name in parsed_args.server:
            gone = service.delete_server(name)
            self.app.stdout.write("Deleted server %s (%s)\n" % (gone.name, gone.uuid))


class ServerList(base.Lister):
    """Servers with their devices and NUMA node."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        self.add_connection_option(parser)
        return parser

    def take_action_checked(self, parsed_args: argparse.Namespace) -> tuple[ty.Any, ...]:
        service = wiring.service(self.driver(parsed_args))
        return SERVER_COLUMNS, [server_row(s) for s in service.list_servers()]


class ServerAttach(base.Lister):
    """Hot-plug the devices a flavor asks for into a running server."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("server", help="Server name or UUID.")
        _flavor_argument(parser)
        self.add_connection_option(parser)
        return parser

    def take_action_checked(self, parsed_args: argparse.Namespace) -> tuple[ty.Any, ...]:
        service = wiring.service(self.driver(parsed_args))
        added = service.attach(parsed_args.server, requests_of(parsed_args.flavor),
                               flavor=parsed_args.flavor)
        names = ("mdev_uuid", "address", "parent_addr", "vgpu_type", "numa_node")
        rows = [tuple(columns.device_object(d)[n] for n in names) for d in added]
        return names, rows


class ServerDetach(base.Command):
    """Unplug one device (mdev UUID or PCI address) from a server and free it."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("server", help="Server name or UUID.")
        parser.add_argument("device", help="mdev UUID or PCI address of the device.")
        self.add_connection_option(parser)
        return parser

    def take_action_checked(self, parsed_args: argparse.Namespace) -> None:
        service = wiring.service(self.driver(parsed_args))
        dev = service.detach(parsed_args.server, parsed_args.device)
        self.app.stdout.write("Detached %s from %s\n" % (svc.device_name(dev), parsed_args.server))
