"""``pci-vgpu``: the operator's command line, a cliff application.

Every listing takes cliff's ``-f table|json|yaml|csv|value`` and ``-c``.
Global options: ``--config-file`` / ``--config-dir`` (oslo.config; the bundled
defaults apply when neither is given and no standard file exists) and
``--debug`` (tracebacks).  An error is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
import typing as ty
import warnings

from cliff import app
from cliff import commandmanager

from pci_vgpu import redact
from pci_vgpu.cli import config

#: (command name, "module:Class") -- imported only when the command runs, so
#: ``pci-vgpu help`` works even while a subsystem is broken.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("host inventory", "pci_vgpu.cli.host:HostInventory"),
    ("host reconcile", "pci_vgpu.cli.host:HostReconcile"),
    ("host init", "pci_vgpu.cli.host:HostInit"),
    ("pool list", "pci_vgpu.cli.pool:PoolList"),
    ("config check", "pci_vgpu.cli.check:ConfigCheck"),
    ("flavor explain", "pci_vgpu.cli.flavor:FlavorExplain"),
    ("server create", "pci_vgpu.cli.server:ServerCreate"),
    ("server delete", "pci_vgpu.cli.server:ServerDelete"),
    ("server list", "pci_vgpu.cli.server:ServerList"),
    ("server attach", "pci_vgpu.cli.server:ServerAttach"),
    ("server detach", "pci_vgpu.cli.server:ServerDetach"),
    ("demo", "pci_vgpu.cli.demo:Demo"),
)


def _version() -> str:
    try:
        return importlib.metadata.version("pci_vgpu")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class _LazyEntryPoint:
    """Enough of an entry point for cliff's CommandManager."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __repr__(self) -> str:
        return self.target

    def load(self) -> ty.Any:
        module_name, _, attr = self.target.partition(":")
        module = __import__(module_name, fromlist=[attr])
        return getattr(module, attr)


class CommandManager(commandmanager.CommandManager):
    """Commands from :data:`COMMANDS`, not from entry points.

    Registering in code keeps the command list in one reviewed place instead of
    a pyproject table edited by everyone.
    """

    def __init__(self) -> None:
        super().__init__("pci_vgpu.cli.none", convert_underscores=True)
        for name, target in COMMANDS:
            self.commands[name] = _LazyEntryPoint(target)  # type: ignore[assignment]

    def load_commands(self, namespace: str) -> None:
        return None


class PciVgpuApp(app.App):
    """The ``pci-vgpu`` application."""

    CONSOLE_MESSAGE_FORMAT = "%(levelname)s: %(message)s"
    #: Warnings and errors only; -v shows INFO, -vv DEBUG.
    DEFAULT_VERBOSE_LEVEL = 0

    def __init__(self) -> None:
        super().__init__(
            description="vGPU and PCI passthrough on OpenStack Nova's PCI framework: "
                        "inventory, pools, flavors, guests.",
            version=_version(),
            command_manager=CommandManager(),
            deferred_help=True,
        )

    def build_option_parser(self, description: str | None, version: str | None,
                            argparse_kwargs: dict[str, ty.Any] | None = None
                            ) -> argparse.ArgumentParser:
        parser = super().build_option_parser(description, version, argparse_kwargs)
        parser.add_argument(
            "--config-file", action="append", default=[], metavar="PATH",
            help="oslo.config file; may be repeated, later files win.  Default: "
                 "~/.pci-vgpu/pci-vgpu.conf or /etc/pci-vgpu/pci-vgpu.conf if present, "
                 "else the bundled defaults (embedded test hosts).")
        parser.add_argument(
            "--config-dir", action="append", default=[], metavar="DIR",
            help="Directory of *.conf files read after --config-file.")
        return parser

    def configure_logging(self) -> None:
        """cliff's logging, without piling up handlers, secrets masked.

        Each in-process run (tests, interactive mode) would add another
        stderr handler to the root logger and print every line twice.  Each
        handler gets :func:`pci_vgpu.redact.protect_handler`, so no log line
        or error (``--connection http://root:PASSWORD@host/``, a DSN with a
        password) shows a secret.
        """
        root = logging.getLogger("")
        for handler in list(root.handlers):
            if getattr(handler, "_pci_vgpu", False):
                root.removeHandler(handler)
        before = set(root.handlers)
        super().configure_logging()
        for handler in set(root.handlers) - before:
            handler._pci_vgpu = True  # type: ignore[attr-defined]
            # Every line, tracebacks included, has its URL/DSN passwords masked.
            redact.protect_handler(handler)

    def run(self, argv: list[str]) -> int:
        """cliff's run; an interactive session that ends normally exits 0.

        (cliff returns 1 after any interactive session.)
        """
        self._session_ended = False
        result = int(super().run(argv))
        return 0 if self._session_ended else result

    def interact(self) -> None:
        super().interact()
        self._session_ended = True

    def initialize_app(self, argv: list[str]) -> None:
        config.load(self.options.config_file, self.options.config_dir)


def quiet_import_warnings() -> None:
    """Hide eventlet's deprecation notice, printed when oslo.db imports it.

    pci_vgpu never uses green threads; the notice would be the first thing
    every operator reads.
    """
    warnings.filterwarnings("ignore", message=r"(?s)\s*Eventlet is deprecated")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"oslo_service(\..*)?")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"oslo_utils(\..*)?")


def main(argv: list[str] | None = None) -> int:
    """Console script entry point; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    quiet_import_warnings()
    return int(PciVgpuApp().run(args))


if __name__ == "__main__":
    sys.exit(main())
