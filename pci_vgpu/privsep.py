"""Privileged helpers: the only code in pci_vgpu that runs as root.

Creating or removing an mdev and typing an NVIDIA VF are single writes to
sysfs files owned by root.  They go through an oslo.privsep daemon so the
service itself never holds CAP_DAC_OVERRIDE.  The privileged entry point
accepts only the three sysfs attributes pci_vgpu writes, so a compromised
caller cannot turn it into a general "write any file as root" primitive.

Tests call :func:`write_sysfs_unprivileged`, which applies the very same
checks without the daemon.
"""

from __future__ import annotations

import os
import re

from oslo_privsep import capabilities
from oslo_privsep import priv_context

from pci_vgpu import exception

#: The sysfs attribute files pci_vgpu may write (create/remove an mdev,
#: type an NVIDIA vendor-VFIO VF, enable SR-IOV VFs, move a function to
#: vfio-pci and back: see pci_vgpu.sriov).
WRITABLE_ATTRIBUTES = frozenset({"create", "remove", "current_vgpu_type", "sriov_numvfs",
                                 "driver_override", "unbind", "drivers_probe"})

_PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]\n?$")
#: Values allowed where a free value could do harm: a driver may only be
#: overridden to vfio-pci or cleared, and only PCI functions are (un)bound.
VALUE_RULES: dict[str, re.Pattern[str]] = {
    "driver_override": re.compile(r"^(vfio-pci)?\n?$"),
    "unbind": _PCI_ADDRESS,
    "drivers_probe": _PCI_ADDRESS,
    "sriov_numvfs": re.compile(r"^[0-9]{1,4}\n?$"),
}

sys_admin_pctxt = priv_context.PrivContext(
    "pci_vgpu",
    cfg_section="pci_vgpu_privileged",
    pypath=__name__ + ".sys_admin_pctxt",
    capabilities=[capabilities.CAP_DAC_OVERRIDE, capabilities.CAP_SYS_ADMIN],
)


class SysfsWriteRefused(exception.Invalid):
    msg_fmt = ("Refusing to write %(value)r to %(path)s: %(reason)s; only "
               "absolute, normalised paths ending in create, remove, "
               "current_vgpu_type, sriov_numvfs, driver_override, unbind or "
               "drivers_probe may be written")


def check_sysfs_write(path: str, value: str) -> None:
    """Refuse any write that is not one of pci_vgpu's sysfs attributes.

    :raises: SysfsWriteRefused naming the path and value.
    """
    if not os.path.isabs(path) or os.path.normpath(path) != path:
        raise SysfsWriteRefused(path=path, value=value,
                                reason="the path is not absolute and normalised")
    if os.path.basename(path) not in WRITABLE_ATTRIBUTES:
        raise SysfsWriteRefused(path=path, value=value,
                                reason="the attribute is not writable")
    if "\n" in value.rstrip("\n") or len(value) > 64:
        raise SysfsWriteRefused(path=path, value=value,
                                reason="the value is not one short line")
    rule = VALUE_RULES.get(os.path.basename(path))
    if rule is not None and not rule.match(value):
        raise SysfsWriteRefused(path=path, value=value,
                                reason="the value is not allowed for this attribute "
                                       "(%s)" % rule.pattern)


def write_sysfs_unprivileged(path: str, value: str) -> None:
    """Check and write ``value`` to the sysfs attribute ``path``.

    sysfs attributes take one ``write()``; opening without O_CREAT makes a
    typo in the path fail instead of creating a file.

    :raises: SysfsWriteRefused; OSError from the kernel (EINVAL, EPERM, ...).
    """
    check_sysfs_write(path, value)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode("ascii"))
    finally:
        os.close(fd)


@sys_admin_pctxt.entrypoint
def write_sysfs(path: str, value: str) -> None:
    """Privileged :func:`write_sysfs_unprivileged`, run in the privsep daemon."""
    write_sysfs_unprivileged(path, value)
