"""State machine across parents and children: Nova's PF/VF rules and GPU/vGPU.

Topology built by :func:`_host`::

    NUMA 0                              NUMA 1
    PF 0000:81:00.0 (8086:1515)         GPU 0000:41:00.0 (10de:1eb8, type-PCI)
     +- VF 0000:81:00.1                  +- mdev ...c01 (nvidia-222)
     +- VF 0000:81:00.2                  +- mdev ...c02 (nvidia-222)
                                        PF 0000:c1:00.0 (10de:20b5, SR-IOV GPU)
                                         +- VF 0000:c1:00.4 (GPU hosting mdevs)
                                             +- mdev ...c03 (nvidia-700)
"""

import types

import pytest

from pci_vgpu import exception
from pci_vgpu import objects
from pci_vgpu.objects import device_tree

AV, CL, AL = "available", "claimed", "allocated"
UNCL, UNAV, REM = "unclaimable", "unavailable", "removed"


def _dev(address, dev_type, parent=None, mdev=None, numa=0, **extra):
    return objects.PciDevice.create(None, dict(
        address=address, dev_type=dev_type, parent_addr=parent,
        mdev_uuid=mdev, vendor_id="10de", product_id="1eb8", numa_node=numa,
        **extra))


def _mdev(n, parent):
    return _dev(None, "mdev", parent,
                "4b20d080-1b54-4048-85b3-a6a62d165c%02d" % n,
                mdev_type="nvidia-222")


def _host():
    h = types.SimpleNamespace(
        pf=_dev("0000:81:00.0", "type-PF"),
        vf1=_dev("0000:81:00.1", "type-VF", "0000:81:00.0"),
        vf2=_dev("0000:81:00.2", "type-VF", "0000:81:00.0"),
        gpu=_dev("0000:41:00.0", "type-PCI", numa=1),
        m1=_mdev(1, "0000:41:00.0"),
        m2=_mdev(2, "0000:41:00.0"),
        spf=_dev("0000:c1:00.0", "type-PF"),
        svf=_dev("0000:c1:00.4", "type-VF", "0000:c1:00.0"),
        m3=_mdev(3, "0000:c1:00.4"),
    )
    device_tree.build_device_tree(list(vars(h).values()))
    return h


def _statuses(*devs):
    return tuple(d.status for d in devs)


def test_tree_links_vfs_to_pf_and_mdevs_to_gpu():
    h = _host()
    assert h.pf.child_devices == [h.vf1, h.vf2]
    assert h.gpu.child_devices == [h.m1, h.m2]
    assert h.m1.parent_device is h.gpu
    assert h.svf.child_devices == [h.m3]
    assert h.m3.parent_device is h.svf and h.svf.parent_device is h.spf


def test_vf_does_not_link_to_a_non_pf_parent():
    gpu = _dev("0000:41:00.0", "type-PCI")
    vf = _dev("0000:41:00.1", "type-VF", "0000:41:00.0")
    device_tree.build_device_tree([vf, gpu])
    assert vf.parent_device is None and gpu.child_devices == []


def test_removed_devices_are_not_linked():
    h = _host()
    h.m2.remove()
    device_tree.build_device_tree(list(vars(h).values()))
    assert h.gpu.child_devices == [h.m1]


# -- GPU / vGPU --------------------------------------------------------------


def test_claiming_gpu_whole_makes_its_vgpus_unclaimable():
    h = _host()
    h.gpu.claim("inst-1")
    assert _statuses(h.gpu, h.m1, h.m2) == (CL, UNCL, UNCL)
    with pytest.raises(exception.PciDeviceInvalidStatus):
        h.m1.claim("inst-2")


def test_allocating_gpu_whole_makes_its_vgpus_unavailable_and_free_restores():
    h = _host()
    h.gpu.allocate("inst-1")
    assert _statuses(h.gpu, h.m1, h.m2) == (AL, UNAV, UNAV)
    freed = h.gpu.free()
    assert _statuses(h.gpu, h.m1, h.m2) == (AV, AV, AV)
    assert {id(d) for d in freed} == {id(h.gpu), id(h.m1), id(h.m2)}


def test_new_vgpu_on_a_gpu_given_whole_is_refused():
    h = _host()
    h.gpu.allocate("inst-1")
    new = _mdev(9, "0000:41:00.0")
    device_tree.link(h.gpu, new)
    with pytest.raises(exception.PciDeviceGpuInUse) as err:
        new.claim("inst-2")
    assert "0000:41:00.0" in str(err.value) and "allocated" in str(err.value)


def test_claiming_a_vgpu_keeps_siblings_claimable_but_not_the_gpu():
    h = _host()
    h.m1.claim("inst-1")
    assert _statuses(h.gpu, h.m1, h.m2) == (UNCL, CL, AV)
    h.m2.claim("inst-2")
    assert _statuses(h.gpu, h.m1, h.m2) == (UNCL, CL, CL)
    with pytest.raises(exception.PciDeviceVgpusInUse) as err:
        h.gpu.claim("inst-3")
    assert "4b20d080-1b54-4048-85b3-a6a62d165c01 on 0000:41:00.0 (claimed)" \
        in str(err.value)


def test_allocating_a_vgpu_makes_gpu_unavailable():
    h = _host()
    h.m1.allocate({"uuid": "inst-1"})
    assert _statuses(h.gpu, h.m1, h.m2) == (UNAV, AL, AV)
    with pytest.raises(exception.PciDeviceVgpusInUse):
        h.gpu.allocate("inst-9")


def test_freeing_the_last_used_vgpu_makes_gpu_available():
    h = _host()
    h.m1.claim("inst-1")
    h.m2.allocate("inst-2")
    assert h.m1.free() == [h.m1]
    assert h.gpu.status == UNAV
    freed = h.m2.free()
    assert [d.ident for d in freed] == [h.gpu.ident, h.m2.ident]
    assert _statuses(h.gpu, h.m1, h.m2) == (AV, AV, AV)
    h.gpu.claim("inst-3")


def test_removed_vgpu_does_not_pin_its_gpu():
    h = _host()
    h.m1.claim("inst-1")
    h.m2.remove()
    h.m1.free()
    assert h.gpu.status == AV


def test_vgpu_on_an_sriov_vf_blocks_the_whole_pf():
    h = _host()
    h.m3.claim("inst-1")
    assert _statuses(h.spf, h.svf, h.m3) == (UNCL, UNCL, CL)
    with pytest.raises(exception.PciDeviceVgpusInUse):
        h.spf.claim("inst-2")
    h.m3.free()
    assert _statuses(h.spf, h.svf, h.m3) == (AV, AV, AV)


def test_pf_given_whole_hides_vgpus_of_its_vfs():
    h = _host()
    h.spf.allocate("inst-1")
    assert _statuses(h.spf, h.svf, h.m3) == (AL, UNAV, UNAV)
    new = _mdev(8, "0000:c1:00.4")
    device_tree.link(h.svf, new)
    with pytest.raises(exception.PciDeviceGpuInUse, match="0000:c1:00.0"):
        new.claim("inst-2")
    h.spf.free()
    assert _statuses(h.spf, h.svf, h.m3) == (AV, AV, AV)


# -- Nova's PF / VF rules, unchanged ------------------------------------------


def test_vf_claim_makes_pf_unclaimable_and_pf_claim_then_fails():
    h = _host()
    h.vf1.claim("inst-1")
    assert _statuses(h.pf, h.vf1, h.vf2) == (UNCL, CL, AV)
    with pytest.raises(exception.PciDeviceVFInvalidStatus) as err:
        h.pf.claim("inst-2")
    assert "0000:81:00.1 (claimed)" in str(err.value)


def test_pf_allocate_makes_vfs_unavailable_and_vf_use_fails():
    h = _host()
    h.pf.allocate("inst-1")
    assert _statuses(h.pf, h.vf1, h.vf2) == (AL, UNAV, UNAV)
    with pytest.raises(exception.PciDeviceInvalidStatus):
        h.vf1.allocate("inst-2")


def test_vf_with_claimed_pf_is_refused_with_pf_error():
    h = _host()
    h.pf.claim("inst-1")
    vf3 = _dev("0000:81:00.3", "type-VF", "0000:81:00.0")
    device_tree.link(h.pf, vf3)
    with pytest.raises(exception.PciDevicePFInvalidStatus, match="claimed"):
        vf3.claim("inst-2")


def test_free_vf_releases_pf_only_when_all_siblings_free():
    h = _host()
    h.vf1.allocate("inst-1")
    h.vf2.claim("inst-2")
    h.vf1.free()
    assert h.pf.status == UNAV
    h.vf2.free()
    assert h.pf.status == AV


# -- ownership and status ------------------------------------------------------


def test_allocate_claimed_device_by_other_instance_is_refused():
    h = _host()
    h.m1.claim("inst-1")
    with pytest.raises(exception.PciDeviceInvalidOwner) as err:
        h.m1.allocate({"uuid": "inst-2"})
    assert "inst-1" in str(err.value) and "inst-2" in str(err.value)


def test_allocate_appends_a_copy_to_instance_and_free_removes_it():
    h = _host()
    instance = {"uuid": "inst-1"}
    h.m1.claim("inst-1")
    h.m1.allocate(instance)
    assert instance["pci_devices"] == [h.m1]
    assert instance["pci_devices"][0] is not h.m1
    h.m1.free(instance)
    assert instance["pci_devices"] == []


def test_allocate_appends_to_an_object_device_list():
    h = _host()
    instance = types.SimpleNamespace(uuid="inst-1",
                                     pci_devices=objects.PciDeviceList())
    h.gpu.allocate(instance)
    assert [d.address for d in instance.pci_devices] == ["0000:41:00.0"]
    h.gpu.free(instance)
    assert list(instance.pci_devices) == []


def test_free_by_other_instance_is_refused():
    h = _host()
    h.gpu.allocate("inst-1")
    with pytest.raises(exception.PciDeviceInvalidOwner):
        h.gpu.free({"uuid": "inst-2"})
    assert h.gpu.status == AL


def test_free_of_available_device_is_refused():
    with pytest.raises(exception.PciDeviceInvalidStatus,
                       match="available instead of claimed or allocated"):
        _host().gpu.free()


def test_claim_clears_nothing_on_failure():
    h = _host()
    h.m1.allocate("inst-1")
    before = _statuses(*vars(h).values())
    with pytest.raises(exception.PciDeviceVgpusInUse):
        h.gpu.claim("inst-2")
    assert _statuses(*vars(h).values()) == before


# -- remove ------------------------------------------------------------------


@pytest.mark.parametrize("action", ["claim", "allocate"])
def test_remove_of_used_device_is_refused(action):
    h = _host()
    getattr(h.m1, action)("inst-1")
    with pytest.raises(exception.PciDeviceRemoveInUse) as err:
        h.m1.remove()
    assert "inst-1" in str(err.value) and "free it first" in str(err.value)
    assert h.m1.status in (CL, AL)


def test_remove_of_gpu_with_used_vgpus_is_refused():
    h = _host()
    h.m2.allocate("inst-1")
    with pytest.raises(exception.PciDeviceRemoveChildrenInUse,
                       match="c02 on 0000:41:00.0"):
        h.gpu.remove()
    assert h.gpu.status == UNAV


def test_remove_of_unavailable_device_is_allowed_as_in_nova():
    h = _host()
    h.gpu.allocate("inst-1")
    h.m1.remove()
    assert (h.m1.status, h.m1.instance_uuid) == (REM, None)


def test_remove_twice_is_refused():
    h = _host()
    h.m1.remove()
    with pytest.raises(exception.PciDeviceInvalidStatus, match="removed"):
        h.m1.remove()
