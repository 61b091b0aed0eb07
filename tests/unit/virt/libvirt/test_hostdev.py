"""Guest XML is built with lxml: golden files and injection attempts."""

from __future__ import annotations

import pytest

from pci_vgpu.virt import driver
from pci_vgpu.virt import exception
from pci_vgpu.virt.libvirt import hostdev
from tests.unit.virt.libvirt.conftest import GUEST, UUID1, golden


def test_mdev_hostdev_golden():
    golden("hostdev-mdev.xml", hostdev.hostdev_xml(hostdev.mdev(UUID1)))


def test_pci_hostdevs_golden():
    golden("hostdev-pci-managed.xml", hostdev.hostdev_xml(hostdev.pci("0000:41:00.0")))
    golden("hostdev-pci-unmanaged.xml",
           hostdev.hostdev_xml(hostdev.pci("0000:c1:00.4", managed=False)))


def test_domain_golden():
    guest = driver.GuestSpec(uuid=GUEST, name="vm-1", memory_mb=128, vcpus=2, numa_node=1)
    golden("domain-kvm.xml", hostdev.domain_xml(
        guest, [hostdev.mdev(UUID1), hostdev.pci("0000:03:02.1")], "kvm"))


def test_guest_name_is_escaped_not_injected():
    guest = driver.GuestSpec(uuid=GUEST, name="x</name><devices/><name>y")
    xml = hostdev.domain_xml(guest, [], "test")
    assert "<name>x&lt;/name&gt;&lt;devices/&gt;&lt;name&gt;y</name>" in xml


@pytest.mark.parametrize("bad", ["x'/><hostdev", UUID1 + "' evil='1"])
def test_mdev_uuid_injection_refused(bad):
    with pytest.raises(exception.InvalidVgpuName):
        hostdev.mdev(bad)


def test_parse_round_trip():
    devs = [hostdev.mdev(UUID1), hostdev.pci("0000:41:00.0"),
            hostdev.pci("0000:c1:00.4", managed=False)]
    xml = hostdev.domain_xml(driver.GuestSpec(uuid=GUEST, name="g"), devs, "test")
    assert hostdev.parse_hostdevs(xml) == devs
