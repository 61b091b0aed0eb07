"""Real SR-IOV through libvirt: QEMU's NVMe PF and its VFs behind intel-iommu.

The libvirt driver's inventory comes from libvirtd's own nodedev XML (udev
underneath): PF/VF relations and IOMMU groups must equal sysfs, and
``[pci] device_spec`` filters the real VFs by PF address and by ids.
"""

from __future__ import annotations

import os

import pytest

from pci_vgpu import privsep
from pci_vgpu import sriov
from pci_vgpu import sysfs
from tests.kernel.debian import lab

pytestmark = pytest.mark.kernel

NVME = ("1b36", "0010")


@pytest.fixture
def root():
    return sysfs.SysfsRoot("/", writer=privsep.write_sysfs_unprivileged)


@pytest.fixture
def vfs(root):
    """Two VFs on the PF, known to libvirtd; disabled again afterwards."""
    made = sriov.set_num_vfs(root, lab.NVME_PF, 2)
    conn_drv = lab.make_driver("/tmp")
    names = {"pci_" + a.replace(":", "_").replace(".", "_") for a in made}
    lab.wait_for(lambda: names <= {d.name() for d in conn_drv.conn.listAllDevices(0)},
                 60, "libvirtd lists the VFs %s" % sorted(made))
    conn_drv.close()
    yield made
    for vf in made:
        if sriov.driver_of(root, vf) == sriov.VFIO_PCI:
            sriov.release(root, vf)
    sriov.set_num_vfs(root, lab.NVME_PF, 0)


def _group(address):
    return int(os.path.basename(os.readlink("/sys/bus/pci/devices/%s/iommu_group" % address)))


def _by_address(specs=()):
    drv = lab.make_driver("/tmp", specs=specs)
    try:
        return {d["address"]: d for d in drv.get_pci_passthrough_devices() if d["address"]}
    finally:
        drv.close()


def test_inventory_has_real_pf_vf_links_and_iommu_groups(vfs):
    devices = _by_address()
    pf = devices[lab.NVME_PF]
    assert (pf["dev_type"], pf["vendor_id"], pf["product_id"]) == ("type-PF", *NVME)
    assert pf["iommu_group"] == _group(lab.NVME_PF)
    groups = {pf["iommu_group"]}
    for vf in vfs:
        entry = devices[vf]
        assert (entry["dev_type"], entry["parent_addr"]) == ("type-VF", lab.NVME_PF)
        assert (entry["vendor_id"], entry["product_id"]) == NVME
        assert entry["iommu_group"] == _group(vf)
        groups.add(entry["iommu_group"])
    assert len(groups) == 3  # intel-iommu: every function in its own group


def test_device_spec_by_pf_address_and_by_ids_on_real_vfs(vfs):
    by_pf = _by_address(['{"address": "%s"}' % lab.NVME_PF])
    assert sorted(by_pf) == sorted([lab.NVME_PF, *vfs])
    one_vf = _by_address(['{"vendor_id": "%s", "product_id": "%s", "address": "%s"}'
                          % (*NVME, vfs[1])])
    assert sorted(one_vf) == [vfs[1]]
    by_ids = _by_address(['{"vendor_id": "%s", "product_id": "%s"}' % NVME])
    assert sorted(by_ids) == sorted([lab.NVME_PF, *vfs])
    assert _by_address(['{"vendor_id": "%s", "product_id": "ffff"}' % NVME[0]]) == {}
