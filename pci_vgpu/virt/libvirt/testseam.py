"""The thin seam over a real libvirt *test*-driver connection.

The test driver (``test:///<host>.xml``) really parses node devices and
really defines and starts domains, but it cannot create/define mdevs nor
attach/detach devices (``VIR_ERR_NO_SUPPORT``; see
``shared/notes/environment.md`` §2).  :class:`TestDriverSeam` wraps such a
connection and implements only those calls, in the way libvirtd + mdevctl
behave, keeping the inventory consistent: a created mdev shows up in
``listAllDevices`` and its parent's ``availableInstances`` drop (following
:mod:`sharing`'s rules); a removed one gives them back.  Every other call
goes to the real connection untouched.

Failure injection (``fail_next``) lets tests reproduce libvirt errors at an
exact call.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import typing as ty

import libvirt
from lxml import etree

from pci_vgpu.virt.libvirt import hostdev
from pci_vgpu.virt.libvirt import nodedev
from pci_vgpu.virt.libvirt import sharing


def libvirt_error(code: int, message: str) -> libvirt.libvirtError:
    """A libvirtError carrying ``code`` the way libvirt-python fills it."""
    exc = libvirt.libvirtError(message)
    exc.err = (code, libvirt.VIR_FROM_NODEDEV, message, libvirt.VIR_ERR_ERROR,
               None, None, None, -1, -1)
    return exc


@dataclasses.dataclass
class _MdevState:
    mdev_uuid: str
    mdev_type: str
    parent_dev_id: str
    active: bool = True
    persistent: bool = False
    autostart: bool = False


class SeamMdev:
    """A node device for an mdev the seam created or defined."""

    def __init__(self, seam: TestDriverSeam, state: _MdevState) -> None:
        self._seam = seam
        self.state = state

    def name(self) -> str:
        # libvirt >= 7.7 names mdevs mdev_<uuid>_<parent address>.
        parent = self.state.parent_dev_id.removeprefix("pci_")
        return "mdev_%s_%s" % (self.state.mdev_uuid.replace("-", "_"), parent)

    def XMLDesc(self, flags: int = 0) -> str:
        root = etree.Element("device")
        etree.SubElement(root, "name").text = self.name()
        etree.SubElement(root, "parent").text = self.state.parent_dev_id
        cap = etree.SubElement(root, "capability", type="mdev")
        etree.SubElement(cap, "type", id=self.state.mdev_type)
        etree.SubElement(cap, "uuid").text = self.state.mdev_uuid
        etree.SubElement(cap, "iommuGroup", number=str(self._seam.iommu_group(self.state)))
        return str(etree.tostring(root, pretty_print=True, encoding="unicode"))

    def isActive(self) -> int:
        return int(self.state.active)

    def isPersistent(self) -> int:
        return int(self.state.persistent)

    def destroy(self) -> int:
        self._seam._check("nodeDeviceDestroy")
        self.state.active = False
        self._seam._forget_if_gone(self.state)
        return 0

    def undefine(self, flags: int = 0) -> int:
        self._seam._check("nodeDeviceUndefine")
        self.state.persistent = self.state.autostart = False
        self._seam._forget_if_gone(self.state)
        return 0

    def setAutostart(self, autostart: int) -> int:
        self.state.autostart = bool(autostart)
        return 0

    def create(self, flags: int = 0) -> int:
        self._seam._check("nodeDeviceCreate")
        self._seam._reserve(self.state.parent_dev_id, self.state.mdev_type,
                            self.state.mdev_uuid)
        self.state.active = True
        return 0


class _SeamPci:
    """A real PCI node device whose mdev_types reflect the seam's mdevs."""

    def __init__(self, seam: TestDriverSeam, real: ty.Any) -> None:
        self._seam = seam
        self._real = real

    def __getattr__(self, attr: str) -> ty.Any:
        return getattr(self._real, attr)

    def XMLDesc(self, flags: int = 0) -> str:
        return self._seam._adjust_parent_xml(self._real.name(), self._real.XMLDesc(flags))


def _hostdevs_of(dev_xml: str) -> list[hostdev.Hostdev]:
    return hostdev.parse_hostdevs("<domain><devices>%s</devices></domain>" % dev_xml)


def _matches(elem: etree._Element, wanted: list[hostdev.Hostdev]) -> bool:
    return elem.tag == "hostdev" and _hostdevs_of(
        etree.tostring(elem, encoding="unicode")) == wanted


@dataclasses.dataclass
class _LiveChanges:
    """Hot-plug changes to a running domain that the test driver can't hold."""

    added: list[str] = dataclasses.field(default_factory=list)
    removed: list[list[hostdev.Hostdev]] = dataclasses.field(default_factory=list)


class SeamDomain:
    """A real test-driver domain with attach/detach done by the seam."""

    def __init__(self, seam: TestDriverSeam, real: ty.Any) -> None:
        self._seam = seam
        self._real = real

    def __getattr__(self, attr: str) -> ty.Any:
        return getattr(self._real, attr)

    @property
    def _live(self) -> _LiveChanges:
        return self._seam._live_changes[self._real.UUIDString()]

    def XMLDesc(self, flags: int = 0) -> str:
        xml = self._real.XMLDesc(flags)
        if flags & libvirt.VIR_DOMAIN_XML_INACTIVE or not self._real.isActive():
            return ty.cast(str, xml)
        root = etree.fromstring(xml.encode("utf-8"))
        devices = root.find("devices")
        for elem in list(devices):
            if any(_matches(elem, gone) for gone in self._live.removed):
                devices.remove(elem)
        for dev_xml in self._live.added:
            devices.append(etree.fromstring(dev_xml.encode("utf-8")))
        return str(etree.tostring(root, encoding="unicode"))

    def attachDeviceFlags(self, xml: str, flags: int = 0) -> int:
        self._seam._check("attachDeviceFlags")
        for dev in _hostdevs_of(xml):
            self._seam._require_present(dev)
        if flags & libvirt.VIR_DOMAIN_AFFECT_LIVE:
            if not self._real.isActive():
                raise libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID,
                                    "Requested operation is not valid: domain is not running")
            self._live.added.append(xml)
        if flags & libvirt.VIR_DOMAIN_AFFECT_CONFIG:
            self._edit_config(lambda devices: devices.append(
                etree.fromstring(xml.encode("utf-8"))))
        return 0

    def detachDeviceFlags(self, xml: str, flags: int = 0) -> int:
        self._seam._check("detachDeviceFlags")
        wanted = _hostdevs_of(xml)
        if flags & libvirt.VIR_DOMAIN_AFFECT_LIVE:
            live = etree.fromstring(self.XMLDesc(0).encode("utf-8")).find("devices")
            if not any(_matches(e, wanted) for e in live):
                raise libvirt_error(libvirt.VIR_ERR_DEVICE_MISSING,
                                    "device not found: matching host device not found")
            added = [x for x in self._live.added if _hostdevs_of(x) != wanted]
            if len(added) == len(self._live.added):
                self._live.removed.append(wanted)
            self._live.added[:] = added
        if flags & libvirt.VIR_DOMAIN_AFFECT_CONFIG:
            self._edit_config(lambda devices: [
                devices.remove(e) for e in list(devices) if _matches(e, wanted)])
        return 0

    def _edit_config(self, edit: ty.Callable[[etree._Element], object]) -> None:
        xml = self._real.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        root = etree.fromstring(xml.encode("utf-8"))
        edit(root.find("devices"))
        self._seam._conn.defineXML(etree.tostring(root, encoding="unicode"))

    def create(self, flags: int = 0) -> int:
        self._seam._check("domainCreate")
        self._seam._live_changes.pop(self._real.UUIDString(), None)
        return ty.cast(int, self._real.create())

    def destroy(self) -> int:
        self._seam._live_changes.pop(self._real.UUIDString(), None)
        return ty.cast(int, self._real.destroy())

    def undefine(self) -> int:
        self._seam._check("domainUndefine")
        return ty.cast(int, self._real.undefine())


class TestDriverSeam:
    """A ``test:///`` connection plus mdev create/define and hot-plug."""

    __test__ = False  # not a pytest class

    def __init__(self, conn: ty.Any) -> None:
        self._conn = conn
        self._mdevs: dict[str, _MdevState] = {}
        self._hidden: set[str] = set()  # host-file mdevs removed via the seam
        self._live_changes: dict[str, _LiveChanges] = collections.defaultdict(_LiveChanges)
        self._failures: dict[str, list[libvirt.libvirtError | None]] = (
            collections.defaultdict(list))

    def __getattr__(self, attr: str) -> ty.Any:
        return getattr(self._conn, attr)

    # -- failure injection ---------------------------------------------
    def fail_next(self, call: str, error: libvirt.libvirtError, after: int = 0) -> None:
        """Make ``call`` (e.g. "attachDeviceFlags") raise ``error`` once,
        after ``after`` successful calls."""
        self._failures[call].extend([None] * after + [error])

    def _check(self, call: str) -> None:
        if self._failures[call]:
            error = self._failures[call].pop(0)
            if error is not None:
                raise error

    # -- node devices ----------------------------------------------------
    def listAllDevices(self, flags: int = 0) -> list[ty.Any]:
        self._check("listAllDevices")
        devices: list[ty.Any] = []
        for real in self._conn.listAllDevices(flags):
            if real.name() not in self._hidden:
                devices.append(_SeamPci(self, real))
        if not flags or flags & libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV:
            # Like libvirtd without ACTIVE/INACTIVE flags: defined but
            # stopped mdevs are listed too.
            devices.extend(SeamMdev(self, s) for s in self._mdevs.values())
        return devices

    def nodeDeviceLookupByName(self, name: str) -> ty.Any:
        self._check("nodeDeviceLookupByName")
        for state in self._mdevs.values():
            if SeamMdev(self, state).name() == name:
                return SeamMdev(self, state)
        if name in self._hidden:
            raise libvirt_error(libvirt.VIR_ERR_NO_NODE_DEVICE,
                                "Node device not found: no node device with matching name '%s'" % name)
        return _SeamPci(self, self._conn.nodeDeviceLookupByName(name))

    def nodeDeviceCreateXML(self, xml: str, flags: int = 0) -> SeamMdev:
        self._check("nodeDeviceCreateXML")
        parent, mdev_type, mdev_uuid = self._parse_mdev_xml(xml)
        self._reserve(parent, mdev_type, mdev_uuid)
        state = self._mdevs.setdefault(mdev_uuid, _MdevState(mdev_uuid, mdev_type, parent))
        state.active = True
        return SeamMdev(self, state)

    def nodeDeviceDefineXML(self, xml: str, flags: int = 0) -> SeamMdev:
        self._check("nodeDeviceDefineXML")
        parent, mdev_type, mdev_uuid = self._parse_mdev_xml(xml)
        state = self._mdevs.setdefault(
            mdev_uuid, _MdevState(mdev_uuid, mdev_type, parent, active=False))
        state.persistent = True
        return SeamMdev(self, state)

    def remove_host_mdev(self, dev_id: str) -> None:
        """Make a host-file mdev disappear (someone else removed it)."""
        self._hidden.add(dev_id)

    def reboot(self) -> None:
        """What a host reboot does to mdevs: transient ones are gone,
        defined ones come back only if autostart is set; guests stop."""
        for state in list(self._mdevs.values()):
            state.active = state.persistent and state.autostart
            self._forget_if_gone(state)
        for dom in self._conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            self._live_changes.pop(dom.UUIDString(), None)
            dom.destroy()

    # -- domains -----------------------------------------------------------
    def defineXML(self, xml: str) -> SeamDomain:
        return SeamDomain(self, self._conn.defineXML(xml))

    def lookupByUUIDString(self, uuid_: str) -> SeamDomain:
        return SeamDomain(self, self._conn.lookupByUUIDString(uuid_))

    def listAllDomains(self, flags: int = 0) -> list[SeamDomain]:
        return [SeamDomain(self, d) for d in self._conn.listAllDomains(flags)]

    # -- bookkeeping -------------------------------------------------------
    def _parse_mdev_xml(self, xml: str) -> tuple[str, str, str]:
        root = etree.fromstring(xml.encode("utf-8"))
        type_elem = root.find("capability[@type='mdev']/type")
        mdev_uuid = root.findtext("capability[@type='mdev']/uuid")
        parent = root.findtext("parent")
        if type_elem is None or not mdev_uuid or not parent:
            raise libvirt_error(libvirt.VIR_ERR_XML_ERROR,
                                "XML error: mdev device needs parent, type and uuid")
        return parent, type_elem.get("id", ""), mdev_uuid.lower()

    def _forget_if_gone(self, state: _MdevState) -> None:
        if not state.active and not state.persistent:
            self._mdevs.pop(state.mdev_uuid, None)

    def _parent(self, dev_id: str) -> nodedev.PciNode:
        try:
            parsed = nodedev.parse(self._conn.nodeDeviceLookupByName(dev_id).XMLDesc(0))
        except libvirt.libvirtError:
            parsed = None
        if not isinstance(parsed, nodedev.PciNode):
            raise libvirt_error(libvirt.VIR_ERR_NO_NODE_DEVICE,
                                "Node device not found: no node device with matching name '%s'" % dev_id)
        return parsed

    def _host_mdevs(self, parent_dev_id: str) -> list[nodedev.MdevNode]:
        found = []
        for dev in self._conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV):
            parsed = nodedev.parse(dev.XMLDesc(0))
            if isinstance(parsed, nodedev.MdevNode) and parsed.parent_dev_id == parent_dev_id:
                found.append(parsed)
        return found

    def _available(self, parent: nodedev.PciNode) -> dict[str, int]:
        """availableInstances per type after the seam's creations/removals."""
        base = {t.type_id: t.available for t in parent.mdev_types}
        delta: collections.Counter[str] = collections.Counter()
        present: collections.Counter[str] = collections.Counter()
        for host_mdev in self._host_mdevs(parent.dev_id):
            if host_mdev.dev_id in self._hidden:
                delta[host_mdev.mdev_type] -= 1
            else:
                present[host_mdev.mdev_type] += 1
        for state in self._mdevs.values():
            if state.active and state.parent_dev_id == parent.dev_id:
                delta[state.mdev_type] += 1
                present[state.mdev_type] += 1
        rule = sharing.rule_for(parent.vendor_id)
        if rule.sharing == sharing.BUDGET:
            def size(t: str) -> float:
                return 1.0 / (rule.explicit_max(t, None) or 1)
            return {t: max(0, math.floor(n - sum(d * size(u) for u, d in delta.items()) / size(t)
                                         + 1e-9))
                    for t, n in base.items()}
        return {t: 0 if any(present[u] for u in present if u != t) else max(0, n - delta[t])
                for t, n in base.items()}

    def _reserve(self, parent_dev_id: str, mdev_type: str, mdev_uuid: str) -> None:
        parent = self._parent(parent_dev_id)
        existing = self._mdevs.get(mdev_uuid)
        if existing is not None and existing.active:
            raise libvirt_error(libvirt.VIR_ERR_OPERATION_FAILED,
                                "operation failed: mediated device %s already exists" % mdev_uuid)
        available = self._available(parent)
        if available.get(mdev_type, 0) < 1:
            raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR,
                                "internal error: Unable to create mediated device %s of type "
                                "%s on %s: no available instances" % (mdev_uuid, mdev_type,
                                                                       parent_dev_id))

    def _adjust_parent_xml(self, dev_id: str, xml: str) -> str:
        parsed = nodedev.parse(xml)
        if not isinstance(parsed, nodedev.PciNode) or not parsed.mdev_types:
            return xml
        available = self._available(parsed)
        root = etree.fromstring(xml.encode("utf-8"))
        for elem in root.iterfind(".//capability[@type='mdev_types']/type"):
            count = elem.find("availableInstances")
            if count is not None:
                count.text = str(available[elem.get("id", "")])
        return str(etree.tostring(root, encoding="unicode"))

    def iommu_group(self, state: _MdevState) -> int:
        """A stable fake IOMMU group per mdev (real mdevs get a fresh one)."""
        return 1000 + sorted(self._mdevs).index(state.mdev_uuid)

    def _require_present(self, dev: hostdev.Hostdev) -> None:
        if dev.kind != "mdev":
            return
        active = {s.mdev_uuid for s in self._mdevs.values() if s.active}
        for parsed in (nodedev.parse(d.XMLDesc(0)) for d in self._conn.listAllDevices(
                libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV)):
            if isinstance(parsed, nodedev.MdevNode) and parsed.dev_id not in self._hidden:
                active.add(parsed.mdev_uuid)
        if dev.mdev_uuid not in active:
            raise libvirt_error(libvirt.VIR_ERR_NO_NODE_DEVICE,
                                "Node device not found: mediated device '%s' not found"
                                % dev.mdev_uuid)
