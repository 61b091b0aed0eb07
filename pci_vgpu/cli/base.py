"""What every pci-vgpu command shares: error wording and the driver option.

cliff prints an exception's ``str()`` as the one error line on stderr (and
the traceback only with ``--debug``).  pci_vgpu's exceptions already name the
offending value; anything else (a bug, an OS error) is wrapped here in
:class:`CommandFailed` so the line still says which command failed and why.
Either way the line is made one line and its secrets are masked
(:mod:`pci_vgpu.redact`): a URL or DSN with a password in an error never
reaches the terminal as typed (the log handlers mask too, see ``app``).
"""

from __future__ import annotations

import argparse
import typing as ty

from cliff import command
from cliff import lister
from cliff import show

from pci_vgpu import conf as pci_conf
from pci_vgpu import exception
from pci_vgpu import redact
from pci_vgpu.cli import connection
from pci_vgpu.virt import driver as virt_driver


class CommandFailed(exception.PciVgpuException):
    msg_fmt = "%(command)s failed: %(reason)s"


def one_line(text: str) -> str:
    """``text`` masked and on one line (its lines joined)."""
    return redact.mask(" ".join(line.strip() for line in text.strip().splitlines()
                                if line.strip()))


def _wrap(cmd_name: str, exc: Exception) -> exception.PciVgpuException:
    if isinstance(exc, exception.PciVgpuException):
        text = one_line(exc.format_message())
        if text != exc.format_message():
            exc.message = text
            exc.args = (text,)
        return exc
    # First line only: the error must stay one line (SQLAlchemy appends a
    # "Background on this error" paragraph, for one).
    text = redact.mask(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
    reason = "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__
    return CommandFailed(command=cmd_name, reason=reason)


class _Wrapped:
    """Mixin: turn foreign exceptions into one readable line."""

    def take_action_checked(self, parsed_args: argparse.Namespace) -> ty.Any:
        raise NotImplementedError

    def take_action(self, parsed_args: argparse.Namespace) -> ty.Any:
        try:
            return self.take_action_checked(parsed_args)
        except exception.PciVgpuException as exc:
            raise _wrap("", exc)
        except Exception as exc:
            raise _wrap(getattr(self, "cmd_name", type(self).__name__), exc) from exc


class _DriverOption:
    """Mixin: the ``--connection`` option and the driver it selects."""

    def add_connection_option(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--connection", metavar="URI", default=None,
            help="Hypervisor to use: a libvirt URI (test:///path/host.xml, "
                 "qemu:///system), an http(s):// XenServer URL, or a driver name "
                 "(libvirt, xenserver, noop) for its configured/embedded connection. "
                 "Default: [host] driver.")

    def driver(self, parsed_args: argparse.Namespace) -> virt_driver.VirtDriver:
        conf = pci_conf.CONF
        conn = connection.parse(parsed_args.connection, conf.host.driver)
        return connection.load(conn, conf)


class Command(_Wrapped, _DriverOption, command.Command):
    """A command whose output is free text."""


class Lister(_Wrapped, _DriverOption, lister.Lister):
    """A command whose output is a table (``-f table|json|yaml|csv|value``)."""


class ShowOne(_Wrapped, _DriverOption, show.ShowOne):
    """A command whose output is one record."""
