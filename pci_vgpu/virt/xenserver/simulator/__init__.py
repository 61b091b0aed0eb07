"""A faithful, local XAPI (XenServer API) simulator over XML-RPC.

It lets the XenServer driver, its tests and the demo run the real
``XenAPI.Session`` client without a XenServer host.  It implements the
classes the driver uses -- ``session``, ``host``, ``PCI``, ``PGPU``,
``GPU_group``, ``VGPU_type``, ``VGPU``, ``VM`` -- with XAPI's field names,
wire format and rules (see :mod:`.ops`), loaded from a host description
(see :mod:`.hostdesc`).  ``python -m pci_vgpu.virt.xenserver.simulator
--host grid-k2 --port 0`` serves one and prints its URL.
"""

from __future__ import annotations

from pci_vgpu.virt.xenserver.simulator.hostdesc import shipped_hosts
from pci_vgpu.virt.xenserver.simulator.model import XapiError
from pci_vgpu.virt.xenserver.simulator.server import Simulator

__all__ = ("Simulator", "XapiError", "shipped_hosts")
