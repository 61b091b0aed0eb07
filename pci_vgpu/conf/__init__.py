"""Configuration of pci_vgpu (oslo.config), one module per option group.

``CONF`` is the process-wide ``ConfigOpts``; every group is registered on
import of this package (registration has no other side effect).
``list_opts`` is the ``oslo.config.opts`` entry point used by
``oslo-config-generator --namespace pci_vgpu``.
"""

from __future__ import annotations

import typing as ty

from oslo_config import cfg

from pci_vgpu.conf import database
from pci_vgpu.conf import host
from pci_vgpu.conf import libvirt
from pci_vgpu.conf import pci
from pci_vgpu.conf import xenserver

_MODULES = (host, pci, database, libvirt, xenserver)

CONF = cfg.CONF


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register every pci_vgpu option group on ``conf``."""
    for module in _MODULES:
        module.register_opts(conf)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Return ``[(group, opts)]`` for oslo-config-generator."""
    result: list[tuple[str, list[cfg.Opt]]] = []
    for module in _MODULES:
        result.extend(module.list_opts())
    return result


register_opts(CONF)

__all__: ty.Sequence[str] = ("CONF", "list_opts", "register_opts")
