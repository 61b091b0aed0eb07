"""``pci-vgpu demo``: the guided walk-through on the embedded defaults."""

from __future__ import annotations

import argparse

from pci_vgpu import conf as pci_conf
from pci_vgpu import demo
from pci_vgpu.cli import base


class Demo(base.Command):
    """Walk through inventory, pools, explain and guests on the embedded hosts."""

    def take_action_checked(self, parsed_args: argparse.Namespace) -> int:
        return demo.run(pci_conf.CONF, self.app.stdout)
