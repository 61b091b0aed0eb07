"""Guest XML built with lxml: hostdevs for vGPUs and GPUs, minimal domains.

Nothing here concatenates strings into XML: UUIDs and addresses are
validated (:mod:`names`) and set as attributes, so a hostile value can
neither break out of an attribute nor inject an element.
"""

from __future__ import annotations

import dataclasses
import typing as ty

from lxml import etree

from pci_vgpu.virt import driver
from pci_vgpu.virt.libvirt import names


@dataclasses.dataclass(frozen=True)
class Hostdev:
    """One device to plug: an mdev (by UUID) or a PCI function (by address)."""

    kind: str  # "mdev" | "pci"
    mdev_uuid: str | None = None
    address: str | None = None
    managed: bool = True

    @property
    def label(self) -> str:
        """How error messages name the device."""
        return ("mdev %s" % self.mdev_uuid if self.kind == "mdev"
                else "PCI device %s" % self.address)


def mdev(mdev_uuid: str) -> Hostdev:
    return Hostdev(kind="mdev", mdev_uuid=names.mdev_uuid(mdev_uuid), managed=False)


def pci(address: str, managed: bool = True) -> Hostdev:
    return Hostdev(kind="pci", address=names.pci_address(address), managed=managed)


def hostdev_element(dev: Hostdev) -> etree._Element:
    """``<hostdev mode='subsystem' ...>`` for ``dev``."""
    elem = etree.Element("hostdev", mode="subsystem", type=dev.kind)
    if dev.kind == "mdev":
        elem.set("model", "vfio-pci")
        source = etree.SubElement(elem, "source")
        etree.SubElement(source, "address", uuid=ty.cast(str, dev.mdev_uuid))
        return elem
    elem.set("managed", "yes" if dev.managed else "no")
    domain, bus, slot_fn = ty.cast(str, dev.address).split(":")
    slot, function = slot_fn.split(".")
    source = etree.SubElement(elem, "source")
    etree.SubElement(source, "address", domain="0x" + domain, bus="0x" + bus,
                     slot="0x" + slot, function="0x" + function)
    return elem


def hostdev_xml(dev: Hostdev) -> str:
    return str(etree.tostring(hostdev_element(dev), pretty_print=True, encoding="unicode"))


def domain_xml(guest: driver.GuestSpec, devices: ty.Sequence[Hostdev],
               virt_type: str) -> str:
    """A minimal diskless domain carrying ``devices``.

    The guest is bound to ``guest.numa_node`` (memory strict) so a vGPU
    claimed on that node's GPU is used from the same node.
    """
    names.mdev_uuid(guest.uuid)
    dom = etree.Element("domain", type=virt_type)
    etree.SubElement(dom, "name").text = guest.name
    etree.SubElement(dom, "uuid").text = guest.uuid
    etree.SubElement(dom, "memory", unit="MiB").text = str(guest.memory_mb)
    etree.SubElement(dom, "vcpu").text = str(guest.vcpus)
    if guest.numa_node is not None:
        tune = etree.SubElement(dom, "numatune")
        etree.SubElement(tune, "memory", mode="strict", nodeset=str(guest.numa_node))
    os_elem = etree.SubElement(dom, "os")
    etree.SubElement(os_elem, "type", arch="x86_64").text = "hvm"
    etree.SubElement(dom, "on_poweroff").text = "destroy"
    if virt_type != "test":
        # Without ACPI QEMU's i440fx root bus refuses every hot-plug
        # ("Bus 'pci.0' does not support hotplugging", measured on QEMU 7.2).
        features = etree.SubElement(dom, "features")
        etree.SubElement(features, "acpi")
        etree.SubElement(features, "apic")
    devs = etree.SubElement(dom, "devices")
    if virt_type != "test":
        etree.SubElement(devs, "graphics", type="vnc", listen="127.0.0.1")
        serial = etree.SubElement(devs, "serial", type="pty")
        etree.SubElement(serial, "target", port="0")
    for dev in devices:
        devs.append(hostdev_element(dev))
    return str(etree.tostring(dom, pretty_print=True, encoding="unicode"))


def parse_hostdevs(xml: str) -> list[Hostdev]:
    """The mdev and PCI hostdevs of a domain's XML."""
    root = etree.fromstring(xml.encode("utf-8"))
    found: list[Hostdev] = []
    for elem in root.iterfind("devices/hostdev[@mode='subsystem']"):
        addr = elem.find("source/address")
        if addr is None:
            continue
        if elem.get("type") == "mdev" and addr.get("uuid"):
            found.append(Hostdev(kind="mdev", mdev_uuid=addr.get("uuid", "").lower(),
                                 managed=False))
        elif elem.get("type") == "pci":
            values = [int(addr.get(k, "0"), 16) for k in ("domain", "bus", "slot", "function")]
            found.append(Hostdev(kind="pci", address="%04x:%02x:%02x.%1x" % tuple(values),
                                 managed=elem.get("managed") == "yes"))
    return found
