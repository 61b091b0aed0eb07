"""Real SR-IOV: QEMU's NVMe PF with VFs behind an emulated Intel IOMMU.

``sriov_numvfs`` makes VFs with real ``virtfn``/``physfn`` links and an
IOMMU group each; ``[pci] device_spec`` matches them by PF address and by
vendor/product; a VF claimed for a guest moves to vfio-pci the way
``managed`` does it and goes back afterwards.  These VFs stand in for
SR-IOV GPU VFs (AMD MxGPU): same sysfs, other ids.
"""

from __future__ import annotations

import os

import pytest

from pci_vgpu import devspec
from pci_vgpu import sriov

pytestmark = pytest.mark.kernel

#: QEMU's NVMe controller (Red Hat, Inc. QEMU NVM Express Controller).
NVME = ("1b36", "0010")


@pytest.fixture
def pf(root):
    """The NVMe PF, with its VFs disabled again afterwards."""
    found = [a for a in root.listdir(root.path("bus", "pci", "devices"))
             if sriov.device_dict(root, a)["dev_type"] == sriov.TYPE_PF]
    assert len(found) == 1, found
    yield found[0]
    for vf in sriov.virtual_functions(root, found[0]):
        if sriov.driver_of(root, vf) == sriov.VFIO_PCI:
            sriov.release(root, vf)
    sriov.set_num_vfs(root, found[0], 0)


def test_vfs_have_pf_links_and_own_iommu_groups(root, pf):
    assert root.read_int(root.pci_device(pf, "sriov_totalvfs")) == 4
    vfs = sriov.set_num_vfs(root, pf, 3)
    assert len(vfs) == 3
    pf_dict = sriov.device_dict(root, pf)
    groups = set()
    for vf in vfs:
        dev = sriov.device_dict(root, vf)
        assert (dev["dev_type"], dev["parent_addr"], dev["vendor_id"], dev["product_id"]) == (
            sriov.TYPE_VF, pf, *NVME)
        assert dev["numa_node"] is None  # QEMU's q35 has no NUMA: -1
        groups.add(dev["iommu_group"])
        assert os.path.exists("/sys/kernel/iommu_groups/%d/devices/%s" % (
            dev["iommu_group"], vf))
    assert len(groups) == 3 and pf_dict["iommu_group"] not in groups


def test_changing_vfs_while_enabled_is_ebusy_and_too_many_is_erange(root, pf):
    sriov.set_num_vfs(root, pf, 2)
    with pytest.raises(sriov.VfsBusy, match="%s: it has 2 enabled" % pf):
        sriov.set_num_vfs(root, pf, 3)
    sriov.set_num_vfs(root, pf, 0)
    with pytest.raises(sriov.VfCountOutOfRange, match="allowed 0 to 4"):
        sriov.set_num_vfs(root, pf, 5)
    assert sriov.virtual_functions(root, pf) == []
    with pytest.raises(sriov.NotAPhysicalFunction):
        sriov.set_num_vfs(root, "0000:00:00.0", 1)


def test_device_spec_matches_real_vfs_by_pf_address_and_by_ids(root, pf):
    vfs = sriov.set_num_vfs(root, pf, 3)
    everything = [sriov.device_dict(root, a)
                  for a in root.listdir(root.path("bus", "pci", "devices"))]
    by_pf = devspec.Whitelist(['{"address": "%s"}' % pf])
    assert sorted(d["address"] for d in everything if by_pf.device_assignable(d)) == sorted(
        [pf] + vfs)
    vf_only = devspec.Whitelist(['{"vendor_id": "%s", "product_id": "%s", "address": "%s"}'
                                 % (*NVME, vfs[1])])
    assert [d["address"] for d in everything if vf_only.device_assignable(d)] == [vfs[1]]
    by_ids = devspec.Whitelist(['{"vendor_id": "%s", "product_id": "%s"}' % NVME])
    assert {d["dev_type"] for d in everything if by_ids.device_assignable(d)} == {
        sriov.TYPE_PF, sriov.TYPE_VF}
    assert not [d for d in everything if devspec.Whitelist(
        ['{"vendor_id": "%s", "product_id": "ffff"}' % NVME[0]]).device_assignable(d)]


def test_claimed_vf_is_bound_to_vfio_pci_and_released(root, pf):
    vf = sriov.set_num_vfs(root, pf, 2)[1]
    sriov.bind_vfio(root, vf)
    assert sriov.driver_of(root, vf) == sriov.VFIO_PCI
    group = sriov.device_dict(root, vf)["iommu_group"]
    assert os.path.exists("/dev/vfio/%d" % group)
    assert sriov.bind_vfio(root, vf) == sriov.VFIO_PCI  # idempotent
    after = sriov.release(root, vf)
    assert after != sriov.VFIO_PCI and sriov.driver_of(root, vf) == after
    assert root.read(root.pci_device(vf, "driver_override")) == "(null)"
    assert not os.path.exists("/dev/vfio/%d" % group)


def test_disabling_vfs_with_one_on_vfio_leaves_no_vf(root, pf):
    vf = sriov.set_num_vfs(root, pf, 1)[0]
    sriov.bind_vfio(root, vf)
    # The kernel lets the PF drop its VFs even then (vfio-pci is unbound);
    # what matters is that the project's state is honest afterwards.
    sriov.set_num_vfs(root, pf, 0)
    assert sriov.virtual_functions(root, pf) == []
