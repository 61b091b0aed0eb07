"""NVIDIA vendor-specific VFIO: typing and untyping VFs through sysfs."""

from __future__ import annotations

import pytest

from pci_vgpu.virt import exception
from pci_vgpu.virt.libvirt import nvidia_vf

VF = "0000:c1:00.4"


def test_parse_creatable_skips_header_and_junk():
    text = "ID    : vGPU Name\n1155  : NVIDIA L40S-4Q\n0 : bogus\nnot a line\n1156 : NVIDIA L40S-8Q\n"
    assert nvidia_vf.parse_creatable(text) == {"nvidia-1155": "NVIDIA L40S-4Q",
                                               "nvidia-1156": "NVIDIA L40S-8Q"}


def test_type_then_release(sysfs):
    sysfs.add_nvidia_vf(VF, {"1155": "NVIDIA L40S-4Q"})
    nvidia_vf.set_type(sysfs.root, VF, "nvidia-1155")
    assert sysfs.current_type(VF) == "1155"
    nvidia_vf.set_type(sysfs.root, VF, "nvidia-1155")  # idempotent: no second write
    assert len(sysfs.writes) == 1
    nvidia_vf.release(sysfs.root, VF)
    assert sysfs.current_type(VF) == "0"
    nvidia_vf.release(sysfs.root, VF)  # untyped already: nothing to do
    assert len(sysfs.writes) == 2


def test_release_while_in_use_is_refused_and_the_type_stays(sysfs):
    sysfs.add_nvidia_vf(VF, {"1155": "NVIDIA L40S-4Q"}, current="1155")
    sysfs.in_use.add(VF)
    with pytest.raises(exception.VgpuRemoveFailed, match="still in use by a guest"):
        nvidia_vf.release(sysfs.root, VF)
    assert sysfs.current_type(VF) == "1155"


def test_type_not_creatable_names_the_creatable_ones(sysfs):
    sysfs.add_nvidia_vf(VF, {"1155": "NVIDIA L40S-4Q"})
    with pytest.raises(exception.VgpuCreateFailed) as err:
        nvidia_vf.set_type(sysfs.root, VF, "nvidia-1160")
    assert "nvidia-1160" in str(err.value) and "creatable types now: nvidia-1155" in str(err.value)
    assert sysfs.writes == []


def test_already_typed_differently(sysfs):
    sysfs.add_nvidia_vf(VF, {"1155": "a", "1156": "b"}, current="1156")
    with pytest.raises(exception.VgpuCreateFailed, match="typed nvidia-1156"):
        nvidia_vf.set_type(sysfs.root, VF, "nvidia-1155")


def test_not_a_vendor_vfio_vf(sysfs):
    sysfs.add_pci(VF)
    assert nvidia_vf.read_vf(sysfs.root, VF) is None
    with pytest.raises(exception.VgpuCreateFailed, match="not an NVIDIA vendor-VFIO VF"):
        nvidia_vf.set_type(sysfs.root, VF, "nvidia-1155")


def test_type_ids_are_validated_before_writing(sysfs):
    sysfs.add_nvidia_vf(VF, {"1155": "a"})
    with pytest.raises(exception.InvalidVgpuName):
        nvidia_vf.set_type(sysfs.root, VF, "0")
    assert sysfs.writes == []


def test_bare_numeric_type_is_accepted_and_written_as_a_number(sysfs):
    sysfs.add_nvidia_vf(VF, {"1155": "a"})
    nvidia_vf.set_type(sysfs.root, VF, "1155")
    assert sysfs.writes == [("sys/bus/pci/devices/%s/nvidia/current_vgpu_type" % VF, "1155")]
    assert nvidia_vf.read_vf(sysfs.root, VF).current == "nvidia-1155"
