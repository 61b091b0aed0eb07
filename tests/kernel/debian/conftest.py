"""Tests that need the Debian kernel-lab guest (libvirtd + mdevctl).

They run through ``tools/kernel-lab-debian test`` (see
``tests/kernel/test_debian_lab.py``); anywhere else they are skipped, with
the reason.
"""

from __future__ import annotations

import os
import typing as ty

import pytest

from tests.kernel.debian import lab


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kernel: needs the kernel-lab guest (tools/kernel-lab*)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if lab.in_debian_guest():
        return
    skip = pytest.mark.skip(reason="needs the Debian kernel-lab guest (libvirtd + mdevctl; run by "
                                   "tests/kernel/test_debian_lab.py through "
                                   "tools/kernel-lab-debian test)")
    for item in items:
        if "tests/kernel/debian/" in str(item.fspath):
            item.add_marker(skip)


def pytest_ignore_collect(collection_path: ty.Any, config: pytest.Config) -> bool | None:
    """Not collected in tools/kernel-lab's busybox guest: it has no libvirtd,
    and its run must see no skips (tests/kernel/test_lab.py)."""
    if os.environ.get("PCI_VGPU_KERNEL_LAB") == "1" and not lab.in_debian_guest():
        return True
    return None
