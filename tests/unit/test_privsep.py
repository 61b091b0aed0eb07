"""The privileged sysfs write: only pci_vgpu's attributes and values, one line."""

from __future__ import annotations

import os

import pytest

from pci_vgpu import privsep


@pytest.mark.parametrize("path", [
    "relative/create",
    "/sys/bus/mdev/devices/../../../etc/create",
    "/etc/shadow",
    "/sys/bus/pci/devices/0000:41:00.0/driver_override",
])
def test_refuses_paths_outside_the_writable_attributes(path):
    with pytest.raises(privsep.SysfsWriteRefused) as err:
        privsep.check_sysfs_write(path, "1")
    assert path in str(err.value)


def test_refuses_multi_line_values():
    with pytest.raises(privsep.SysfsWriteRefused):
        privsep.check_sysfs_write("/sys/x/create", "a\nb")


def test_unprivileged_write_writes_existing_attribute(tmp_path):
    target = tmp_path / "create"
    target.write_text("")
    privsep.write_sysfs_unprivileged(str(target), "4b20d080-1b54-4048-85b3-a6a62d165c01")
    assert target.read_text() == "4b20d080-1b54-4048-85b3-a6a62d165c01"


def test_unprivileged_write_never_creates_a_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        privsep.write_sysfs_unprivileged(str(tmp_path / "remove"), "1")
    assert not os.path.exists(tmp_path / "remove")


@pytest.mark.parametrize("attr,good,bad", [
    ("driver_override", ["vfio-pci", "\n"], ["nvme", "e1000e", "1"]),
    ("unbind", ["0000:01:00.1"], ["eth0", "../x"]),
    ("drivers_probe", ["0000:01:00.1\n"], ["0000:01:00"]),
    ("sriov_numvfs", ["0", "3"], ["-1", "x"]),
])
def test_sriov_and_binding_attributes_take_only_their_values(attr, good, bad):
    path = "/sys/bus/pci/devices/0000:01:00.0/" + attr
    for value in good:
        privsep.check_sysfs_write(path, value)
    for value in bad:
        with pytest.raises(privsep.SysfsWriteRefused, match="not allowed"):
            privsep.check_sysfs_write(path, value)
