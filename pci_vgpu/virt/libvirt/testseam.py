"""The thin seam over a real libvirt *test*-driver connection.

The test driver (``test:///<host>.xml``) really parses node devices and
really defines and starts domains, but it cannot create/define mdevs nor
attach/detach devices (``VIR_ERR_NO_SUPPORT``; see
``shared/notes/environment.md`` §2).  :class:`TestDriverSeam` wraps such a
connection and implements only those calls, in the way libvirtd + mdevctl
behave, keeping the inventory consistent: a created mdev shows up in
``listAllDevices`` and its parent's ``availableInstances`` drop (following
:mod:`sharing`'s rules); a removed one gives them back.  The seam owns every
mdev, those of the host file included (they start active, as mdevs the
kernel already had), so any of them can be stopped or undefined.  Every
other call goes to the real connection.

With a :class:`~.teststore.HostStore` the host outlives the process: every
call first takes the store's lock and, when another process saved the host
since, reopens the saved host file; every call that changes the host saves
it before it returns.  Handles (domains, node devices) resolve their real
object at each call, so they stay valid across such reloads, as libvirt
handles do across other clients' changes.

Failure injection (``fail_next``) lets tests reproduce libvirt errors at an
exact call.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import typing as ty

import libvirt
from lxml import etree

from pci_vgpu.virt.libvirt import hostdev
from pci_vgpu.virt.libvirt import nodedev
from pci_vgpu.virt.libvirt import testkernel
from pci_vgpu.virt.libvirt import teststore

MdevState = testkernel.MdevState


libvirt_error = testkernel.libvirt_error


def _no_node_device(name: str) -> libvirt.libvirtError:
    return libvirt_error(libvirt.VIR_ERR_NO_NODE_DEVICE,
                         "Node device not found: no node device with matching name '%s'" % name)


class SeamMdev:
    """A node device for an mdev the seam holds."""

    def __init__(self, seam: TestDriverSeam, state: MdevState) -> None:
        self._seam = seam
        self._uuid = state.mdev_uuid
        self._last = state

    @property
    def state(self) -> MdevState:
        """The mdev's current state (another process may have changed it)."""
        with self._seam._reading():
            self._last = self._seam._mdevs.get(self._uuid, self._last)
            return self._last

    def _live_state(self) -> MdevState:
        current = self._seam._mdevs.get(self._uuid)
        if current is None:
            raise _no_node_device(self._last.name())
        return current

    def name(self) -> str:
        return self.state.name()

    def XMLDesc(self, flags: int = 0) -> str:
        with self._seam._reading():
            return self._seam.kernel.mdev_xml(self._live_state())

    def isActive(self) -> int:
        return int(self.state.active)

    def isPersistent(self) -> int:
        return int(self.state.persistent)

    def destroy(self) -> int:
        with self._seam._writing():
            self._seam._check("nodeDeviceDestroy")
            state = self._live_state()
            state.active = False
            self._seam._forget_if_gone(state)
        return 0

    def undefine(self, flags: int = 0) -> int:
        with self._seam._writing():
            self._seam._check("nodeDeviceUndefine")
            state = self._live_state()
            state.persistent = state.autostart = False
            self._seam._forget_if_gone(state)
        return 0

    def setAutostart(self, autostart: int) -> int:
        with self._seam._writing():
            self._live_state().autostart = bool(autostart)
        return 0

    def create(self, flags: int = 0) -> int:
        with self._seam._writing():
            self._seam._check("nodeDeviceCreate")
            state = self._live_state()
            self._seam.kernel.reserve(self._seam._mdevs, state.parent_dev_id,
                                      state.mdev_type, state.mdev_uuid)
            state.active = True
        return 0


class _SeamPci:
    """A real PCI node device whose mdev_types reflect the seam's mdevs."""

    def __init__(self, seam: TestDriverSeam, name: str) -> None:
        self._seam = seam
        self._name = name

    def _real(self) -> ty.Any:
        return self._seam._conn.nodeDeviceLookupByName(self._name)

    def __getattr__(self, attr: str) -> ty.Any:
        with self._seam._reading():
            return getattr(self._real(), attr)

    def name(self) -> str:
        return self._name

    def XMLDesc(self, flags: int = 0) -> str:
        with self._seam._reading():
            return self._seam.kernel.adjust_parent_xml(
                self._seam._mdevs, self._real().XMLDesc(flags))


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
    """A test-driver domain with attach/detach done by the seam."""

    def __init__(self, seam: TestDriverSeam, uuid_: str) -> None:
        self._seam = seam
        self._uuid = uuid_

    def _real(self) -> ty.Any:
        return self._seam._conn.lookupByUUIDString(self._uuid)

    def __getattr__(self, attr: str) -> ty.Any:
        with self._seam._reading():
            return getattr(self._real(), attr)

    def UUIDString(self) -> str:
        return self._uuid

    @property
    def _live(self) -> _LiveChanges:
        return self._seam._live_changes[self._uuid]

    def XMLDesc(self, flags: int = 0) -> str:
        with self._seam._reading():
            real = self._real()
            xml = real.XMLDesc(flags)
            if flags & libvirt.VIR_DOMAIN_XML_INACTIVE or not real.isActive():
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
        with self._seam._writing():
            self._seam._check("attachDeviceFlags")
            for dev in _hostdevs_of(xml):
                self._seam._require_present(dev)
            if flags & libvirt.VIR_DOMAIN_AFFECT_LIVE:
                if not self._real().isActive():
                    raise libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID,
                                        "Requested operation is not valid: domain is not running")
                self._live.added.append(xml)
            if flags & libvirt.VIR_DOMAIN_AFFECT_CONFIG:
                self._edit_config(lambda devices: devices.append(
                    etree.fromstring(xml.encode("utf-8"))))
        return 0

    def detachDeviceFlags(self, xml: str, flags: int = 0) -> int:
        with self._seam._writing():
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
        xml = self._real().XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        root = etree.fromstring(xml.encode("utf-8"))
        edit(root.find("devices"))
        self._seam._conn.defineXML(etree.tostring(root, encoding="unicode"))

    def create(self, flags: int = 0) -> int:
        with self._seam._writing():
            self._seam._check("domainCreate")
            self._seam._live_changes.pop(self._uuid, None)
            return ty.cast(int, self._real().create())

    def destroy(self) -> int:
        with self._seam._writing():
            self._seam._live_changes.pop(self._uuid, None)
            return ty.cast(int, self._real().destroy())

    def undefine(self) -> int:
        with self._seam._writing():
            self._seam._check("domainUndefine")
            return ty.cast(int, self._real().undefine())


class TestDriverSeam:
    """A ``test:///`` connection plus mdev create/define and hot-plug."""

    __test__ = False  # not a pytest class

    def __init__(self, conn: ty.Any, store: teststore.HostStore | None = None) -> None:
        self._conn = conn
        self._store = store
        self._stamp: tuple[int, ...] = ()
        self._mdevs: dict[str, MdevState] = {}
        #: Names of the real connection's mdevs (served from ``_mdevs``).
        self._absorbed: set[str] = set()
        self._live_changes: dict[str, _LiveChanges] = collections.defaultdict(_LiveChanges)
        self._failures: dict[str, list[libvirt.libvirtError | None]] = (
            collections.defaultdict(list))
        source = store.source_xml() if store is not None else None
        self.kernel = testkernel.Kernel(testkernel.baseline_nodes(conn, source))
        self._absorb(store.read_configs() if store is not None else {})
        if store is not None:
            self._stamp = store.stamp()

    @classmethod
    def open_stored(cls, store: teststore.HostStore) -> TestDriverSeam:
        """The host saved in ``store`` (started from its source on first use).

        :raises: libvirtError if the host file cannot be opened;
            StateDirUnusable if the store cannot be written.
        """
        with store.lock():
            fresh = store.ensure()
            try:
                return cls(libvirt.open(store.uri), store)
            except libvirt.libvirtError:
                if fresh:
                    store.discard()  # a host file libvirt refuses leaves no store
                raise

    def __getattr__(self, attr: str) -> ty.Any:
        return getattr(self._conn, attr)

    # -- the store ---------------------------------------------------------
    @contextlib.contextmanager
    def _reading(self) -> ty.Iterator[None]:
        """Hold the stored host and see its latest saved state."""
        if self._store is None:
            yield
            return
        with self._store.lock():
            if self._store.stamp() != self._stamp:
                self._reload()
            yield

    @contextlib.contextmanager
    def _writing(self) -> ty.Iterator[None]:
        """Like :meth:`_reading`, and save the host when the call succeeds."""
        with self._reading():
            yield
            if self._store is not None:
                self._save()

    def _reload(self) -> None:
        assert self._store is not None
        old, self._conn = self._conn, libvirt.open(self._store.uri)
        try:
            old.close()
        except libvirt.libvirtError:
            pass
        self._mdevs.clear()
        self._absorbed.clear()
        self._live_changes.clear()
        self._absorb(self._store.read_configs())
        self._stamp = self._store.stamp()

    def _save(self) -> None:
        assert self._store is not None
        active = [s for s in self._mdevs.values() if s.active]
        domains = [(d.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), bool(d.isActive()))
                   for d in self._conn.listAllDomains(0)]
        configs = {s.mdev_uuid: teststore.MdevConfig(
            self.kernel.address_of(s.parent_dev_id), s.mdev_type, s.autostart)
            for s in self._mdevs.values() if s.persistent}
        self._store.save(teststore.Snapshot(teststore.compose(
            self._store.source_xml(), self.kernel.all_available(self._mdevs),
            [self.kernel.mdev_xml(s) for s in active], domains), configs))
        self._stamp = self._store.stamp()

    def _absorb(self, configs: dict[str, teststore.MdevConfig]) -> None:
        """Take over the host file's mdevs and the defined ones of ``configs``."""
        for dev in self._conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV):
            parsed = nodedev.parse(dev.XMLDesc(0))
            if not isinstance(parsed, nodedev.MdevNode):
                continue
            self._absorbed.add(parsed.dev_id)
            config = configs.get(parsed.mdev_uuid)
            self._mdevs[parsed.mdev_uuid] = MdevState(
                parsed.mdev_uuid, parsed.mdev_type, parsed.parent_dev_id,
                persistent=config is not None, autostart=bool(config and config.autostart),
                dev_id=parsed.dev_id, iommu_group=parsed.iommu_group)
        for mdev_uuid, config in configs.items():
            parent = self.kernel.dev_id_of(config.parent_addr)
            if mdev_uuid not in self._mdevs and parent is not None:
                self.kernel.place(self._mdevs, self._mdevs.setdefault(mdev_uuid, MdevState(
                    mdev_uuid, config.mdev_type, parent, active=False, persistent=True,
                    autostart=config.autostart)))

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
        with self._reading():
            self._check("listAllDevices")
            devices: list[ty.Any] = [
                _SeamPci(self, real.name()) for real in self._conn.listAllDevices(flags)
                if real.name() not in self._absorbed]
            if not flags or flags & libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV:
                # Like libvirtd without ACTIVE/INACTIVE flags: defined but
                # stopped mdevs are listed too.
                devices.extend(SeamMdev(self, s) for s in self._mdevs.values())
            return devices

    def nodeDeviceLookupByName(self, name: str) -> ty.Any:
        with self._reading():
            self._check("nodeDeviceLookupByName")
            for state in self._mdevs.values():
                if state.name() == name:
                    return SeamMdev(self, state)
            if name in self._absorbed:
                raise _no_node_device(name)
            self._conn.nodeDeviceLookupByName(name)  # raises like libvirt
            return _SeamPci(self, name)

    def nodeDeviceCreateXML(self, xml: str, flags: int = 0) -> SeamMdev:
        with self._writing():
            self._check("nodeDeviceCreateXML")
            parent, mdev_type, mdev_uuid = _parse_mdev_xml(xml)
            self.kernel.reserve(self._mdevs, parent, mdev_type, mdev_uuid)
            state = self._mdevs.setdefault(mdev_uuid, MdevState(mdev_uuid, mdev_type, parent))
            state.active = True
            self.kernel.place(self._mdevs, state)
            return SeamMdev(self, state)

    def nodeDeviceDefineXML(self, xml: str, flags: int = 0) -> SeamMdev:
        with self._writing():
            self._check("nodeDeviceDefineXML")
            parent, mdev_type, mdev_uuid = _parse_mdev_xml(xml)
            state = self._mdevs.setdefault(
                mdev_uuid, MdevState(mdev_uuid, mdev_type, parent, active=False))
            state.persistent = True
            self.kernel.place(self._mdevs, state)
            return SeamMdev(self, state)

    def remove_host_mdev(self, dev_id: str) -> None:
        """Make an mdev disappear (someone else removed it behind libvirt)."""
        with self._writing():
            for state in list(self._mdevs.values()):
                if state.name() == dev_id:
                    del self._mdevs[state.mdev_uuid]

    def reboot(self) -> None:
        """What a host reboot does to mdevs: transient ones are gone,
        defined ones come back only if autostart is set; guests stop."""
        with self._writing():
            for state in list(self._mdevs.values()):
                state.active = state.persistent and state.autostart
                self._forget_if_gone(state)
            for dom in self._conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                self._live_changes.pop(dom.UUIDString(), None)
                dom.destroy()

    # -- domains -----------------------------------------------------------
    def defineXML(self, xml: str) -> SeamDomain:
        with self._writing():
            return SeamDomain(self, self._conn.defineXML(xml).UUIDString())

    def lookupByUUIDString(self, uuid_: str) -> SeamDomain:
        with self._reading():
            return SeamDomain(self, self._conn.lookupByUUIDString(uuid_).UUIDString())

    def listAllDomains(self, flags: int = 0) -> list[SeamDomain]:
        with self._reading():
            return [SeamDomain(self, d.UUIDString()) for d in self._conn.listAllDomains(flags)]

    # -- bookkeeping -------------------------------------------------------
    def _forget_if_gone(self, state: MdevState) -> None:
        if not state.active and not state.persistent:
            self._mdevs.pop(state.mdev_uuid, None)

    def _require_present(self, dev: hostdev.Hostdev) -> None:
        if dev.kind != "mdev":
            return
        active = {s.mdev_uuid for s in self._mdevs.values() if s.active}
        if dev.mdev_uuid not in active:
            raise libvirt_error(libvirt.VIR_ERR_NO_NODE_DEVICE,
                                "Node device not found: mediated device '%s' not found"
                                % dev.mdev_uuid)


def _parse_mdev_xml(xml: str) -> tuple[str, str, str]:
    root = etree.fromstring(xml.encode("utf-8"))
    type_elem = root.find("capability[@type='mdev']/type")
    mdev_uuid = root.findtext("capability[@type='mdev']/uuid")
    parent = root.findtext("parent")
    if type_elem is None or not mdev_uuid or not parent:
        raise libvirt_error(libvirt.VIR_ERR_XML_ERROR,
                            "XML error: mdev device needs parent, type and uuid")
    return parent, type_elem.get("id", ""), mdev_uuid.lower()
