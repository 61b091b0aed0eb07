"""Names are validated before they reach a path or an XML document."""

from __future__ import annotations

import pytest

from pci_vgpu import exception as pci_exception
from pci_vgpu.virt import exception
from pci_vgpu.virt.libvirt import names


@pytest.mark.parametrize("good", ["nvidia-222", "i915-GVTg_V5_4", "vfio_ap-passthrough"])
def test_types_accepted(good):
    assert names.mdev_type(good) == good


@pytest.mark.parametrize("bad", ["../nvidia", "a/b", "", "nvidia..1", "-x", 5, None,
                                 "x" * 200, "nvidia\n222"])
def test_types_refused_with_the_value_named(bad):
    with pytest.raises(pci_exception.InvalidVgpuTypeName) as err:
        names.mdev_type(bad)
    assert repr(bad) in str(err.value)
    assert "letters, digits" in str(err.value)


def test_uuid_is_canonicalised():
    assert names.mdev_uuid("4B20D080-1B54-4048-85B3-A6A62D165C01") == \
        "4b20d080-1b54-4048-85b3-a6a62d165c01"


@pytest.mark.parametrize("bad", ["not-a-uuid", "{4b20d080-1b54-4048-85b3-a6a62d165c01}",
                                 "urn:uuid:4b20d080-1b54-4048-85b3-a6a62d165c01", "", None,
                                 "../../4b20d080-1b54-4048-85b3-a6a62d165c01"])
def test_uuid_refused(bad):
    with pytest.raises(exception.InvalidVgpuName) as err:
        names.mdev_uuid(bad)
    assert "mdev UUID" in str(err.value)


@pytest.mark.parametrize("bad", ["41:00.0", "0000:41:00.8", "0000:41:00.0/..", "0000:4G:00.0"])
def test_address_refused(bad):
    with pytest.raises(exception.InvalidVgpuName):
        names.pci_address(bad)


@pytest.mark.parametrize("bad", ["0", "-1", "1155/..", "abc", ""])
def test_vf_type_id_refused(bad):
    with pytest.raises(exception.InvalidVgpuName) as err:
        names.vf_type_id(bad)
    assert "positive decimal" in str(err.value)
