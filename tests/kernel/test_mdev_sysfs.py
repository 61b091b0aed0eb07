"""The sysfs mdev backend against a real kernel: mtty, mdpy, mbochs.

Create, list and remove on all three sample drivers through the
production :class:`~pci_vgpu.virt.libvirt.mdev.SysfsBackend`, and every
refusal of the kernel as the project's typed error naming parent, type and
UUID, with nothing left behind.
"""

from __future__ import annotations

import errno
import os
import uuid

import pytest

from pci_vgpu import mdev_parents
from pci_vgpu.virt import exception
from pci_vgpu.virt.libvirt import mdev
from tests.kernel.conftest import load, unload

pytestmark = pytest.mark.kernel

#: driver -> (a type it offers, the kernel's errno when that type is full)
DRIVERS = {"mtty": ("mtty-2", errno.ENOSPC), "mdpy": ("mdpy-vga", errno.EUSERS),
           "mbochs": ("mbochs-large", errno.ENOSPC)}


def snapshot(root):
    """What must not change when a create is refused."""
    return {p.name: ({t.type_id: t.available for t in p.types.values()}, p.mdevs)
            for p in mdev_parents.read_all(root)}


def test_virtual_parents_are_named_without_pci_address_or_numa(root):
    parents = {p.name: p for p in mdev_parents.read_all(root)}
    assert set(DRIVERS) <= set(parents)
    for name in DRIVERS:
        parent = parents[name]
        assert (parent.subsystem, parent.pci_address, parent.numa_node) == (name, None, None)
        assert parent.types and all(t.device_api == "vfio-pci" for t in parent.types.values())
        assert os.path.realpath(root.mdev_parent(name)) == "/sys/devices/virtual/%s/%s" % (
            name, name)


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_create_list_remove(root, backend, driver):
    mdev_type = DRIVERS[driver][0]
    before = mdev_parents.read_parent(root, driver).types[mdev_type].available
    made = [str(uuid.uuid4()) for _ in range(2)]
    for mdev_uuid in made:
        backend.create(driver, mdev_type, mdev_uuid.upper())
    listed = [m for m in backend.list() if m.parent_addr == driver]
    assert sorted(listed, key=lambda m: m.mdev_uuid) == sorted(
        (mdev.Mdev(u, mdev_type, driver) for u in made), key=lambda m: m.mdev_uuid)
    for mdev_uuid in made:
        device = root.mdev_device(mdev_uuid)
        assert os.path.isdir(os.path.join(device, "iommu_group"))
        group = os.path.basename(os.readlink(os.path.join(device, "iommu_group")))
        assert os.path.exists("/dev/vfio/" + group)
    assert mdev_parents.read_parent(root, driver).types[mdev_type].available < before
    for mdev_uuid in made:
        backend.remove(mdev_uuid, driver)
    assert [m for m in backend.list() if m.parent_addr == driver] == []
    assert mdev_parents.read_parent(root, driver).types[mdev_type].available == before


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_duplicate_uuid_is_eexist_naming_all_three(root, backend, driver):
    mdev_type = DRIVERS[driver][0]
    mdev_uuid = str(uuid.uuid4())
    backend.create(driver, mdev_type, mdev_uuid)
    before = snapshot(root)
    with pytest.raises(exception.MdevUuidInUse) as err:
        backend.create(driver, mdev_type, mdev_uuid)
    assert all(s in str(err.value) for s in (driver, mdev_type, mdev_uuid, "EEXIST"))
    assert snapshot(root) == before


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_full_parent_is_the_kernels_errno_as_no_capacity(root, backend, driver):
    mdev_type, full_errno = DRIVERS[driver]
    left = mdev_parents.read_parent(root, driver).types[mdev_type].available
    for _ in range(left):
        backend.create(driver, mdev_type, str(uuid.uuid4()))
    before = snapshot(root)
    refused = str(uuid.uuid4())
    with pytest.raises(exception.MdevNoCapacity) as err:
        backend.create(driver, mdev_type, refused)
    assert all(s in str(err.value) for s in (driver, mdev_type, refused,
                                              errno.errorcode[full_errno]))
    assert snapshot(root) == before and not os.path.exists(root.mdev_device(refused))


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_malformed_uuid_refused_before_the_kernel_which_says_einval(root, backend, driver):
    mdev_type = DRIVERS[driver][0]
    with pytest.raises(exception.InvalidVgpuName, match="not-a-uuid"):
        backend.create(driver, mdev_type, "not-a-uuid")
    # The kernel agrees with the check: the same write straight to sysfs.
    with pytest.raises(OSError) as err:
        root.write(root.mdev_parent(driver, "mdev_supported_types", mdev_type, "create"),
                   "not-a-uuid")
    assert err.value.errno == errno.EINVAL
    assert [m for m in backend.list() if m.parent_addr == driver] == []


def test_unknown_type_and_unknown_parent_are_parent_gone(root, backend):
    mdev_uuid = str(uuid.uuid4())
    with pytest.raises(exception.MdevParentGone, match="mtty-1, mtty-2"):
        backend.create("mtty", "mtty-9", mdev_uuid)
    with pytest.raises(exception.MdevParentGone, match="no such mdev parent.*mbochs"):
        backend.create("nope", "mtty-1", mdev_uuid)


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_unloaded_driver_is_parent_gone_and_list_still_works(root, backend, driver):
    mdev_type = DRIVERS[driver][0]
    kept = str(uuid.uuid4())
    other = "mtty" if driver != "mtty" else "mdpy"
    backend.create(other, DRIVERS[other][0], kept)
    unload(driver)
    mdev_uuid = str(uuid.uuid4())
    try:
        with pytest.raises(exception.MdevParentGone) as err:
            backend.create(driver, mdev_type, mdev_uuid)
        assert all(s in str(err.value) for s in (driver, mdev_type, mdev_uuid))
        assert [m.mdev_uuid for m in backend.list()] == [kept]
        backend.remove(mdev_uuid, driver)  # never existed: nothing to do
    finally:
        load(driver)


def test_remove_of_a_vanished_mdev_is_done(root, backend):
    mdev_uuid = str(uuid.uuid4())
    backend.create("mtty", "mtty-1", mdev_uuid)
    root.write(root.mdev_device(mdev_uuid, "remove"), "1")  # behind our back
    backend.remove(mdev_uuid, "mtty")
    assert backend.list() == []
