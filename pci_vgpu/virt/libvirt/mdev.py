"""Create, remove and list mediated devices: two interchangeable backends.

``sysfs``   writes the UUID to ``mdev_supported_types/<type>/create`` and
            ``1`` to ``/sys/bus/mdev/devices/<uuid>/remove`` (through
            oslo.privsep in production).  Transient: a host reboot loses it.
``nodedev`` asks libvirt: ``nodeDeviceCreateXML`` (start now), then
            ``nodeDeviceDefineXML`` and autostart (persist across reboots,
            libvirt stores it through mdevctl) -- what Nova does today.

Both validate the type and UUID before they touch a path or XML, and both
leave nothing behind when a step fails.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import typing as ty

import libvirt
from lxml import etree

from pci_vgpu import sysfs as sysfs_mod
from pci_vgpu.virt import exception
from pci_vgpu.virt.libvirt import names
from pci_vgpu.virt.libvirt import nodedev

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Mdev:
    """An existing mediated device."""

    mdev_uuid: str
    mdev_type: str
    parent_addr: str
    #: False for a persistent (defined) mdev that is not started.
    active: bool = True


class MdevBackend(ty.Protocol):
    """What the driver needs from an mdev backend."""

    name: str

    def create(self, parent_addr: str, mdev_type: str, mdev_uuid: str) -> None: ...

    def remove(self, mdev_uuid: str, parent_addr: str | None) -> None: ...

    def list(self) -> list[Mdev]: ...


def _create_failed(uuid_: str, type_: str, parent: str, reason: str) -> exception.VgpuCreateFailed:
    return exception.VgpuCreateFailed(mdev_uuid=uuid_, vgpu_type=type_,
                                      parent_addr=parent, reason=reason)


#: Kernel errors of a ``create`` write, by errno: the typed error and what
#: it means.  mtty and mbochs say ENOSPC when full, the mdev core EUSERS
#: when a parent's instance count (mdpy) is used up.
_CREATE_ERRORS: dict[int, tuple[type[exception.VgpuCreateFailed], str]] = {
    errno.EEXIST: (exception.MdevUuidInUse, "an mdev with that UUID exists"),
    errno.ENOSPC: (exception.MdevNoCapacity, "the parent has no room for it"),
    errno.EUSERS: (exception.MdevNoCapacity, "the parent's instances are used up"),
    errno.EINVAL: (exception.VgpuCreateFailed, "the driver rejected the UUID or type"),
    errno.ENOENT: (exception.MdevParentGone, "the type vanished while it was written"),
    errno.ENODEV: (exception.MdevParentGone, "the parent vanished while it was written"),
}


def _kernel_said(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "the kernel refused: %s (%s)" % (exc.strerror or exc, name)


class SysfsBackend:
    """Transient mdevs through ``<sysfs_root>/sys`` writes.

    Parents are found under ``/sys/class/mdev_bus`` by the name the kernel
    gives them: a GPU's PCI address or a virtual parent's device name.
    """

    name = "sysfs"

    def __init__(self, root: sysfs_mod.SysfsRoot) -> None:
        self.root = root

    def create(self, parent_addr: str, mdev_type: str, mdev_uuid: str) -> None:
        """Write the UUID to the type's ``create``; nothing else is written.

        :raises: MdevParentGone (no such parent or type, or it vanished),
            MdevUuidInUse (EEXIST), MdevNoCapacity (ENOSPC, EUSERS),
            VgpuCreateFailed (any other refusal), each naming the parent,
            type and UUID; InvalidVgpuName / InvalidVgpuTypeName first.
        """
        names.mdev_parent(parent_addr)
        names.mdev_type(mdev_type)
        mdev_uuid = names.mdev_uuid(mdev_uuid)
        if not self.root.exists(self.root.mdev_parent(parent_addr)):
            raise exception.MdevParentGone(
                mdev_uuid=mdev_uuid, vgpu_type=mdev_type, parent_addr=parent_addr,
                reason="no such mdev parent (known: %s)"
                % (", ".join(self.root.mdev_parents()) or "none"))
        types_dir = self.root.mdev_parent(parent_addr, "mdev_supported_types")
        type_dir = os.path.join(types_dir, mdev_type)
        if not self.root.exists(type_dir):
            raise exception.MdevParentGone(
                mdev_uuid=mdev_uuid, vgpu_type=mdev_type, parent_addr=parent_addr,
                reason="the parent offers types: %s"
                % (", ".join(self.root.listdir(types_dir)) or "none"))
        try:
            self.root.write(os.path.join(type_dir, "create"), mdev_uuid)
        except OSError as exc:
            kind, meaning = _CREATE_ERRORS.get(
                exc.errno or 0, (exception.VgpuCreateFailed, ""))
            raise kind(mdev_uuid=mdev_uuid, vgpu_type=mdev_type, parent_addr=parent_addr,
                       reason="%s%s" % (_kernel_said(exc), ": " + meaning if meaning else ""))

    def remove(self, mdev_uuid: str, parent_addr: str | None) -> None:
        """Write ``1`` to the mdev's ``remove``.

        An mdev that is absent, or vanishes before the write lands (its
        parent's driver unloaded), is not an error: it is gone either way.

        :raises: MdevRemoveFailed naming the mdev's parent and type as sysfs
            shows them (EBUSY while a guest holds it).
        """
        mdev_uuid = names.mdev_uuid(mdev_uuid)
        device = self.root.mdev_device(mdev_uuid)
        if not self.root.exists(device):
            return
        mdev_type = self.root.link_name(os.path.join(device, "mdev_type"))
        parent = os.path.basename(os.path.dirname(os.path.realpath(device)))
        try:
            self.root.write(os.path.join(device, "remove"), "1")
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENODEV) and not self.root.exists(device):
                return
            raise exception.MdevRemoveFailed(
                mdev_uuid=mdev_uuid, vgpu_type=mdev_type or "(unknown)",
                parent_addr=parent_addr or parent, reason=_kernel_said(exc))

    def list(self) -> list[Mdev]:
        """Every mdev under ``/sys/bus/mdev/devices``; one that vanishes
        while being read is left out."""
        found = []
        for entry in self.root.listdir(self.root.path("bus", "mdev", "devices")):
            device = self.root.mdev_device(entry)
            mdev_type = self.root.link_name(os.path.join(device, "mdev_type"))
            parent = os.path.basename(os.path.dirname(os.path.realpath(device)))
            if mdev_type:
                found.append(Mdev(mdev_uuid=entry.lower(), mdev_type=mdev_type,
                                  parent_addr=parent))
        return found


def mdev_device_xml(parent_dev_id: str, mdev_type: str, mdev_uuid: str) -> str:
    """Node-device XML of an mdev for nodeDeviceCreateXML / DefineXML."""
    root = etree.Element("device")
    etree.SubElement(root, "parent").text = parent_dev_id
    cap = etree.SubElement(root, "capability", type="mdev")
    etree.SubElement(cap, "type", id=mdev_type)
    etree.SubElement(cap, "uuid").text = mdev_uuid
    return str(etree.tostring(root, pretty_print=True, encoding="unicode"))


def _destroy_failed(started: ty.Any, mdev_uuid: str) -> str:
    """Destroy an mdev whose create is being undone; what went wrong, or "".

    A failed destroy must not hide why the create failed, and the caller
    must learn that the mdev is still there (reconcile reports it).
    """
    try:
        started.destroy()
    except libvirt.libvirtError as exc:
        LOG.error("Could not destroy mdev %(uuid)s after its define failed: "
                  "%(err)s", {"uuid": mdev_uuid, "err": exc})
        return "; the mdev still exists (destroy failed: %s)" % exc
    return ""


class NodedevBackend:
    """Persistent mdevs through libvirt's node-device API."""

    name = "nodedev"

    def __init__(self, conn: ty.Any) -> None:
        self.conn = conn

    def _parsed(self, flags: int) -> list[tuple[ty.Any, nodedev.Node]]:
        """Listed devices with their parsed XML.

        One removed between the listing and its ``XMLDesc`` (libvirtd drops
        an mdev only when udev reports it gone: measured on libvirt 9.0)
        raises VIR_ERR_NO_NODE_DEVICE and is skipped.
        """
        found = []
        for dev in self.conn.listAllDevices(flags):
            try:
                xml = dev.XMLDesc(0)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_NODE_DEVICE:
                    raise
                continue
            parsed = nodedev.parse(xml)
            if parsed is not None:
                found.append((dev, parsed))
        return found

    def _pci_nodes(self) -> list[nodedev.PciNode]:
        flags = libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV
        return [n for _, n in self._parsed(flags) if isinstance(n, nodedev.PciNode)]

    def _find(self, mdev_uuid: str) -> ty.Any | None:
        for dev, node in self._mdev_nodes():
            if node.mdev_uuid == mdev_uuid:
                return dev
        return None

    def _mdev_nodes(self) -> list[tuple[ty.Any, nodedev.MdevNode]]:
        flags = libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV
        return [(dev, node) for dev, node in self._parsed(flags)
                if isinstance(node, nodedev.MdevNode)]

    def _parent_names(self) -> dict[str, str]:
        """libvirt node-device name -> the parent's address or kernel name."""
        names_ = {n.dev_id: n.address for n in self._pci_nodes()}
        flags = libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV_TYPES
        for _, node in self._parsed(flags):
            if isinstance(node, nodedev.VirtualParentNode):
                names_[node.dev_id] = node.name
        return names_

    def _parent_dev_id(self, parent_addr: str) -> str | None:
        # The parent's node-device name is read from libvirt, never built
        # from the address (the naming scheme is libvirt's business).
        for dev_id, name in self._parent_names().items():
            if name == parent_addr:
                return dev_id
        return None

    def create(self, parent_addr: str, mdev_type: str, mdev_uuid: str) -> None:
        """Create (transient), then define + autostart (persistent).

        :raises: VgpuCreateFailed; a failed define destroys the started mdev
            (the message says so if that failed too).
        """
        names.mdev_parent(parent_addr)
        names.mdev_type(mdev_type)
        mdev_uuid = names.mdev_uuid(mdev_uuid)
        parent = self._parent_dev_id(parent_addr)
        if parent is None:
            raise _create_failed(
                mdev_uuid, mdev_type, parent_addr,
                "libvirt knows no PCI device at that address nor an mdev parent by that name")
        defined = self._find(mdev_uuid)
        if defined is not None:
            # Defined but stopped (autostart failed after a reboot): start it.
            try:
                defined.create(0)
            except libvirt.libvirtError as exc:
                raise _create_failed(mdev_uuid, mdev_type, parent_addr, str(exc))
            return
        xml = mdev_device_xml(parent, mdev_type, mdev_uuid)
        try:
            started = self.conn.nodeDeviceCreateXML(xml, 0)
        except libvirt.libvirtError as exc:
            raise _create_failed(mdev_uuid, mdev_type, parent_addr, str(exc))
        try:
            defined = self.conn.nodeDeviceDefineXML(xml, 0)
        except libvirt.libvirtError as exc:
            raise _create_failed(mdev_uuid, mdev_type, parent_addr,
                                 "it could not be made persistent: %s%s"
                                 % (exc, _destroy_failed(started, mdev_uuid)))
        try:
            defined.setAutostart(1)
        except libvirt.libvirtError as exc:
            # Still persistent; init_host starts defined mdevs itself.
            LOG.warning("mdev %(uuid)s will not autostart: %(err)s",
                        {"uuid": mdev_uuid, "err": exc})

    def remove(self, mdev_uuid: str, parent_addr: str | None) -> None:
        """Stop and undefine; an absent mdev is not an error.

        :raises: VgpuRemoveFailed with libvirt's reason.
        """
        mdev_uuid = names.mdev_uuid(mdev_uuid)
        for dev, node in self._mdev_nodes():
            if node.mdev_uuid != mdev_uuid:
                continue
            try:
                if dev.isActive():
                    dev.destroy()
                if dev.isPersistent():
                    dev.undefine(0)
            except libvirt.libvirtError as exc:
                raise exception.VgpuRemoveFailed(
                    mdev_uuid=mdev_uuid, parent_addr=parent_addr, reason=str(exc))

    def list(self) -> list[Mdev]:
        """Every mdev libvirt reports, with its parent's address."""
        addresses = self._parent_names()
        return [Mdev(mdev_uuid=node.mdev_uuid, mdev_type=node.mdev_type,
                     parent_addr=addresses.get(node.parent_dev_id, node.parent_dev_id),
                     active=nodedev.is_active(dev))
                for dev, node in self._mdev_nodes()]
