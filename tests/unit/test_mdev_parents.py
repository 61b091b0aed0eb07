"""mdev parents through /sys/class/mdev_bus on the fake tree: PCI and virtual.

The tree (same layout as a real kernel's, see tests/fixtures/sysfs.py)::

    class/mdev_bus/0000:41:00.0 -> GPU on NUMA node 1, nvidia-222 (max 2)
    class/mdev_bus/mtty         -> virtual: mtty-1 (24 ports), mtty-2 (12)
"""

from __future__ import annotations

import errno
import uuid

import pytest

from pci_vgpu import capacity
from pci_vgpu import mdev_parents
from pci_vgpu import sysfs
from pci_vgpu.virt import exception
from pci_vgpu.virt.libvirt import mdev
from tests.fixtures import sysfs as fake_sysfs

GPU = "0000:41:00.0"
UUID1 = "4b20d080-1b54-4048-85b3-a6a62d165c01"
UUID2 = "9f579710-6ffc-4201-987b-4b9e7d0e8d1a"


@pytest.fixture
def tree(tmp_path):
    fake = fake_sysfs.FakeSysfs(str(tmp_path / "root"))
    fake.add_pci(GPU, numa_node=1)
    fake.populate_parent(GPU, "nvidia-222", 2, name="GRID T4-1B")
    fake.add_virtual_parent("mtty", {"mtty-1": 24, "mtty-2": 12})
    return fake


def test_parents_are_enumerated_from_the_mdev_bus_class(tree):
    assert tree.root.mdev_parents() == [GPU, "mtty"]
    gpu, mtty = mdev_parents.read_all(tree.root)
    assert (gpu.subsystem, gpu.pci_address, gpu.numa_node) == ("pci", GPU, 1)
    assert (mtty.subsystem, mtty.pci_address, mtty.numa_node) == ("mtty", None, None)
    assert {t: e.available for t, e in mtty.types.items()} == {"mtty-1": 24, "mtty-2": 12}
    assert gpu.types["nvidia-222"].name == "GRID T4-1B"


def test_a_vanished_parent_reads_as_none(tree):
    tree.unregister_parent("mtty")
    assert mdev_parents.read_parent(tree.root, "mtty") is None
    assert [p.name for p in mdev_parents.read_all(tree.root)] == [GPU]


def test_model_of_a_virtual_parent_follows_the_budget(tree):
    backend = mdev.SysfsBackend(tree.root)
    parent = mdev_parents.read_parent(tree.root, "mtty")
    state = mdev_parents.gpu_state(parent, mdev_parents.sharing_of(parent))
    backend.create("mtty", "mtty-2", UUID1)
    capacity.consume_instance(state, "mtty-2")
    assert {t: capacity.creatable(state, t) for t in state.max_instances} == {
        "mtty-1": tree.available("mtty", "mtty-1"), "mtty-2": tree.available("mtty", "mtty-2")
    } == {"mtty-1": 22, "mtty-2": 11}
    assert mdev_parents.read_parent(tree.root, "mtty").mdevs == {UUID1: "mtty-2"}


def test_virtual_parent_create_list_remove(tree):
    backend = mdev.SysfsBackend(tree.root)
    backend.create("mtty", "mtty-1", UUID1)
    assert tree.writes[-1] == ("sys/class/mdev_bus/mtty/mdev_supported_types/mtty-1/create",
                               UUID1)
    assert backend.list() == [mdev.Mdev(UUID1, "mtty-1", "mtty")]
    backend.remove(UUID1, "mtty")
    assert backend.list() == []


def test_kernel_errors_are_typed_and_name_parent_type_uuid(tree):
    backend = mdev.SysfsBackend(tree.root)
    backend.create("mtty", "mtty-2", UUID1)
    with pytest.raises(exception.MdevUuidInUse, match="%s of type mtty-2 on GPU mtty.*EEXIST"
                       % UUID1):
        backend.create("mtty", "mtty-2", UUID1)
    for _ in range(11):
        backend.create("mtty", "mtty-2", str(uuid.uuid4()))
    with pytest.raises(exception.MdevNoCapacity, match="%s of type mtty-1.*ENOSPC" % UUID2):
        backend.create("mtty", "mtty-1", UUID2)
    assert len(backend.list()) == 12


def test_unloaded_parent_is_parent_gone(tree):
    backend = mdev.SysfsBackend(tree.root)
    backend.create("mtty", "mtty-1", UUID1)
    tree.unregister_parent("mtty")
    assert backend.list() == []
    with pytest.raises(exception.MdevParentGone, match="no such mdev parent \\(known: %s\\)"
                       % GPU):
        backend.create("mtty", "mtty-1", UUID2)
    backend.remove(UUID1, "mtty")  # gone with its parent: nothing to do


def test_remove_refusal_names_type_and_parent(tree):
    backend = mdev.SysfsBackend(tree.root)
    backend.create("mtty", "mtty-1", UUID1)
    tree.in_use.add(UUID1)
    with pytest.raises(exception.MdevRemoveFailed,
                       match="%s of type mtty-1 on GPU mtty.*EBUSY" % UUID1):
        backend.remove(UUID1, None)


@pytest.mark.parametrize("bad", ["../mtty", "MTTY", "", "a/b", "mt..ty"])
def test_parent_names_are_checked_before_any_path(tree, bad):
    with pytest.raises(exception.InvalidVgpuName, match="mdev parent"):
        mdev.SysfsBackend(tree.root).create(bad, "mtty-1", UUID1)
    assert tree.writes == []


def test_fake_full_errno_is_configurable(tree):
    tree.add_virtual_parent("mdpy", {"mdpy-vga": 1}, full_errno=errno.EUSERS)
    backend = mdev.SysfsBackend(tree.root)
    backend.create("mdpy", "mdpy-vga", UUID1)
    with pytest.raises(exception.MdevNoCapacity, match="EUSERS"):
        backend.create("mdpy", "mdpy-vga", UUID2)


def test_parent_vanishing_between_check_and_write_is_parent_gone(tree):
    def unload_then_write(path, value):
        tree.unregister_parent("mtty")  # the driver unloads meanwhile
        tree.write(path, value)

    backend = mdev.SysfsBackend(sysfs.SysfsRoot(tree.base, writer=unload_then_write))
    with pytest.raises(exception.MdevParentGone,
                       match="%s of type mtty-1 on GPU mtty.*ENOENT.*vanished" % UUID1):
        backend.create("mtty", "mtty-1", UUID1)
    assert tree.mdevs() == {}
