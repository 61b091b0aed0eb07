"""Run ``pci-vgpu`` in-process, the way the console script does.

Each call builds a fresh cliff application (so configuration and options are
parsed again) while the embedded hypervisors stay loaded, exactly as in
cliff's interactive mode or the demo.  State goes to a temporary directory.
"""

from __future__ import annotations

import io
import json
import pathlib
import typing as ty

from pci_vgpu import conf as pci_conf
from pci_vgpu.cli import app
from pci_vgpu.cli import config
from pci_vgpu.cli import connection
from pci_vgpu.cli import wiring
from pci_vgpu.virt import driver as virt_driver


class Cli:
    """``cli("server", "list")`` -> stdout; asserts the exit code."""

    def __init__(self, state_dir: pathlib.Path, extra_conf: str = "",
                 bundled: bool = True) -> None:
        """``extra_conf`` is added to the bundled defaults, or replaces them."""
        path = state_dir / "test.conf"
        path.write_text("[host]\nstate_dir = %s\n%s" % (state_dir, extra_conf))
        self.base = ["--config-file", str(path)]
        if bundled:
            self.base = ["--config-file", config.BUNDLED_DEFAULTS] + self.base
        self.stderr = ""

    def __call__(self, *argv: str, expect: int = 0) -> str:
        runner = app.PciVgpuApp()
        runner.stdout, runner.stderr = io.StringIO(), io.StringIO()
        rc = runner.run(self.base + list(argv))
        self.stderr = runner.stderr.getvalue()
        assert rc == expect, "pci-vgpu %s exited %s: %s%s" % (
            " ".join(argv), rc, runner.stdout.getvalue(), self.stderr)
        return runner.stdout.getvalue()

    def json(self, *argv: str, expect: int = 0) -> ty.Any:
        return json.loads(self(*argv, "-f", "json", expect=expect))

    def load_config(self) -> None:
        """Load this runner's configuration into CONF, as a command would."""
        config.load(self.base[1::2])

    def driver(self, name: str) -> virt_driver.VirtDriver:
        """The loaded driver of ``--connection name``, to act behind pci-vgpu's back.

        The configuration is loaded first: the embedded host must keep its
        state in this runner's state directory.
        """
        self.load_config()
        return connection.load(connection.parse(name, "libvirt"), pci_conf.CONF)

    def close(self) -> None:
        """Stop the embedded hosts, close the database, forget the config.

        The configuration is the process-wide ``CONF``: other tests must
        not inherit the bundled aliases.
        """
        connection.close_all()
        wiring.close_all()
        pci_conf.CONF.reset()


def pools_by_type(pools: list[dict[str, ty.Any]]) -> dict[tuple[str, str], int]:
    """``{(gpu address, vgpu type): free}`` from ``pool list -f json``."""
    return {(p["address"], p["vgpu_type"]): p["free"] for p in pools if p["vgpu_type"]}
