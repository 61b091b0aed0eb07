"""``pci-vgpu demo``: the guided walk-through on the embedded defaults."""

from __future__ import annotations

import argparse

from pci_vgpu import demo
from pci_vgpu.cli import base


class Demo(base.Command):
    """Inventory, pools, explain, guests on NUMA nodes, on both embedded hosts."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "--state-dir", default=None, metavar="DIR",
            help="Keep the demo's SQLite database here (default: a temporary "
                 "directory removed at the end).")
        return parser

    def take_action_checked(self, parsed_args: argparse.Namespace) -> int:
        return demo.run(self.app.stdout, parsed_args.state_dir)
