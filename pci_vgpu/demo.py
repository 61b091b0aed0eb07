"""The guided walk-through behind ``pci-vgpu demo`` (grows with the project)."""

from __future__ import annotations

import typing as ty

from oslo_config import cfg


def run(conf: cfg.ConfigOpts, out: ty.TextIO) -> int:
    """Walk through what the embedded configuration defines; return 0."""
    out.write("[pci] alias: %s\n" % list(conf.pci.alias))
    out.write("[pci] device_spec: %s\n" % list(conf.pci.device_spec))
    return 0
