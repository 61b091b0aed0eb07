"""SysfsRoot: every path under the root, no escape, writes via the writer."""

from __future__ import annotations

import os

import pytest

from pci_vgpu import privsep
from pci_vgpu import sysfs


@pytest.mark.parametrize("bad", ["..", ".", "", "a/b", "x\0"])
def test_path_refuses_components_that_escape(tmp_path, bad):
    root = sysfs.SysfsRoot(str(tmp_path))
    with pytest.raises(sysfs.SysfsPathInvalid) as err:
        root.pci_device("0000:41:00.0", "mdev_supported_types", bad)
    assert repr(bad) in str(err.value)


def test_paths_live_under_the_root(tmp_path):
    root = sysfs.SysfsRoot(str(tmp_path))
    assert root.mdev_device("u", "remove") == os.path.join(
        str(tmp_path), "sys", "bus", "mdev", "devices", "u", "remove")


def test_read_absent_is_none_and_int_parsing(tmp_path):
    root = sysfs.SysfsRoot(str(tmp_path))
    path = root.path("numa_node")
    assert root.read(path) is None
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as handle:
        handle.write("-1\n")
    assert root.read_int(path) == -1
    with open(path, "w") as handle:
        handle.write("garbage\n")
    assert root.read_int(path) is None


def test_write_goes_through_the_writer(tmp_path):
    seen = []
    root = sysfs.SysfsRoot(str(tmp_path), writer=lambda p, v: seen.append((p, v)))
    root.write(root.mdev_device("u", "remove"), "1")
    assert seen == [(root.mdev_device("u", "remove"), "1")]


def test_production_writer_is_the_privsep_entrypoint():
    assert sysfs._default_writer() is privsep.write_sysfs


def test_mdev_parents_live_in_the_mdev_bus_class(tmp_path):
    root = sysfs.SysfsRoot(str(tmp_path))
    assert root.mdev_parents() == []
    assert root.mdev_parent("mtty", "mdev_supported_types") == os.path.join(
        str(tmp_path), "sys", "class", "mdev_bus", "mtty", "mdev_supported_types")
    os.makedirs(os.path.join(str(tmp_path), "sys", "class", "mdev_bus", "0000:41:00.0"))
    os.makedirs(os.path.join(str(tmp_path), "sys", "class", "mdev_bus", "mtty"))
    assert root.mdev_parents() == ["0000:41:00.0", "mtty"]
    with pytest.raises(sysfs.SysfsPathInvalid):
        root.mdev_parent("..")
