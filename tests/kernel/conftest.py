"""The kernel tier: tests that run inside the kernel-lab guest.

``tools/kernel-lab run`` boots a Debian kernel in QEMU with the kernel's
sample mdev drivers and an SR-IOV NVMe controller behind an emulated IOMMU,
and runs this project's pytest in a chroot of the host's own userland (see
``doc/kernel-tier.rst``)::

    guest /sys
      class/mdev_bus/mtty    24 serial ports: mtty-1 takes 1, mtty-2 takes 2
      class/mdev_bus/mdpy    one instance count per parent (``count``, 4)
      class/mdev_bus/mbochs  one video-memory budget (``count`` MB) shared by
                             mbochs-1/2/3 = 4/16/64 MB
      bus/pci/devices/0000:01:00.0  NVMe PF (1b36:0010), sriov_totalvfs 4

Tests marked ``kernel`` need that guest: elsewhere they are skipped with the
reason.  ``tests/kernel/test_lab.py`` is the host side that boots it.
"""

from __future__ import annotations

import os
import subprocess
import typing as ty

import pytest

from pci_vgpu import privsep
from pci_vgpu import sysfs
from pci_vgpu.virt.libvirt import mdev

#: Set by tools/kernel-lab in the guest's environment.
GUEST_ENV = "PCI_VGPU_KERNEL_LAB"


def in_guest() -> bool:
    """True inside the kernel-lab guest: its env var and a real mdev bus."""
    return os.environ.get(GUEST_ENV) == "1" and os.path.isdir("/sys/class/mdev_bus")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if in_guest():
        return
    skip = pytest.mark.skip(reason="needs the kernel-lab guest (run by tests/kernel/test_lab.py "
                                   "through tools/kernel-lab; /sys/class/mdev_bus and "
                                   "%s=1 are missing here)" % GUEST_ENV)
    for item in items:
        if item.get_closest_marker("kernel") is not None:
            item.add_marker(skip)


def busybox(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a busybox applet of the guest kit (insmod, rmmod)."""
    return subprocess.run([os.environ["PCI_VGPU_KERNEL_LAB_BUSYBOX"], *args],
                          capture_output=True, text=True, check=False)


def load(module: str, **params: int) -> None:
    """(Re)load a sample driver with module parameters, e.g. count=100."""
    unload(module)
    path = os.path.join(os.environ["PCI_VGPU_KERNEL_LAB_MODULES"], module + ".ko")
    done = busybox("insmod", path, *("%s=%d" % kv for kv in params.items()))
    assert done.returncode == 0, done.stderr
    assert os.path.isdir("/sys/class/mdev_bus/" + module)


def unload(module: str) -> None:
    if os.path.isdir("/sys/module/" + module.replace("-", "_")):
        done = busybox("rmmod", module)
        assert done.returncode == 0, done.stderr


@pytest.fixture
def root() -> sysfs.SysfsRoot:
    """The guest's real /sys, written without the privsep daemon (root)."""
    return sysfs.SysfsRoot("/", writer=privsep.write_sysfs_unprivileged)


@pytest.fixture
def backend(root: sysfs.SysfsRoot) -> ty.Iterator[mdev.SysfsBackend]:
    """The production sysfs backend; every mdev is removed afterwards and
    the sample drivers are back with their default parameters."""
    yield mdev.SysfsBackend(root)
    for found in mdev.SysfsBackend(root).list():
        mdev.SysfsBackend(root).remove(found.mdev_uuid, found.parent_addr)
    for module in ("mtty", "mdpy", "mbochs"):
        if not os.path.isdir("/sys/class/mdev_bus/" + module):
            load(module)
