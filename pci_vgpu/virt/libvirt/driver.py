"""The libvirt virt driver (stevedore name ``libvirt``).

Construct it as ``LibvirtDriver(conf=CONF, dev_filter=Whitelist|None)``;
tests may inject ``connection`` (any libvirt connection, e.g. a
:class:`~pci_vgpu.virt.libvirt.testseam.TestDriverSeam`) and ``sysfs`` (a
:class:`~pci_vgpu.sysfs.SysfsRoot` over a fake tree).

An empty ``[libvirt] connection_uri`` opens the bundled 2-socket T4/V100
host with the libvirt test driver; any ``test://`` connection is wrapped in
the test seam so mdevs and hot-plug work on it, and a ``test:///<file>``
host keeps its state (mdevs, guests) in ``[host] state_dir`` between
processes (:mod:`.teststore`).
"""

from __future__ import annotations

import logging
import os
import threading
import typing as ty

import libvirt
from lxml import etree
from oslo_config import cfg

from pci_vgpu import redact
from pci_vgpu import sysfs as sysfs_mod
from pci_vgpu.virt import driver
from pci_vgpu.virt import exception
from pci_vgpu.virt.libvirt import devices as devices_mod
from pci_vgpu.virt.libvirt import guests
from pci_vgpu.virt.libvirt import hostinit
from pci_vgpu.virt.libvirt import inventory
from pci_vgpu.virt.libvirt import mdev as mdev_mod
from pci_vgpu.virt.libvirt import nvidia_vf
from pci_vgpu.virt.libvirt import sharing
from pci_vgpu.virt.libvirt import testseam
from pci_vgpu.virt.libvirt import teststore

LOG = logging.getLogger(__name__)

HOSTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hosts")
DEFAULT_HOST = os.path.join(HOSTS_DIR, "two-socket-t4-v100.xml")

#: Seconds a detach waits for the guest to release the device.
DETACH_TIMEOUT = 10.0


def host_uri(name: str) -> str:
    """``test:///`` URI of a bundled host file (``"intel-gvtg"``)."""
    return "test://" + os.path.join(HOSTS_DIR, name + ".xml")


def safe_uri(uri: str) -> str:
    """``uri`` without the credentials it may carry (qemu+tls://user:pw@h),
    and without secret query parameters (``?password=``)."""
    scheme, sep, rest = uri.partition("://")
    return redact.mask(scheme + sep + rest.rpartition("@")[2])


def _log_libvirt_error(_ctx: ty.Any, error: ty.Any) -> None:
    """Route libvirt's own error printing to the log.

    libvirt prints every error to stderr by default, even one the caller
    catches and handles (``isActive`` on the test driver); the exception the
    caller gets carries the same text.
    """
    LOG.debug("libvirt: %(error)s", {"error": error})


class TestHostInvalid(exception.HypervisorUnavailable):
    """A libvirt test host file that libvirt cannot load (not an outage)."""

    __test__ = False  # not a pytest class
    msg_fmt = ("libvirt test host file %(path)s cannot be used: %(reason)s.  Fix the "
               "file, or give another --connection / [libvirt] connection_uri.")


#: libvirt error codes that mean "this XML is wrong", not "cannot connect".
_XML_ERRORS = (libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_DETAIL,
               libvirt.VIR_ERR_XML_INVALID_SCHEMA)


def _store_for(uri: str, conf: cfg.ConfigOpts) -> teststore.HostStore | None:
    """Where a ``test:///<file>`` host keeps its state; None for other URIs.

    :raises: TestHostInvalid for a host file that is missing or not XML;
        StateDirUnusable when it cannot be read.
    """
    if not uri.startswith("test://") or uri == "test:///default":
        return None  # test:///default is libvirt's own per-process host
    path = uri[len("test://"):]
    if not os.path.isfile(path):
        raise TestHostInvalid(path=path, reason="no such file")
    try:
        etree.parse(path)
    except (etree.XMLSyntaxError, OSError) as exc:
        raise TestHostInvalid(path=path, reason="not valid XML (%s)" % exc) from exc
    state_dir = str(conf.host.state_dir)
    return teststore.HostStore(teststore.store_dir(state_dir, path), path)


def _open(uri: str, conf: cfg.ConfigOpts) -> ty.Any:
    """Open ``uri``; a test-driver host file gets the seam and its store.

    :raises: HypervisorUnavailable; StateDirUnusable naming [host] state_dir.
    """
    libvirt.registerErrorHandler(_log_libvirt_error, None)
    store = _store_for(uri, conf)
    try:
        if store is not None:
            LOG.info("Using the libvirt test driver at %(uri)s with pci_vgpu's test seam, "
                     "state kept in %(dir)s", {"uri": uri, "dir": store.directory})
            return testseam.TestDriverSeam.open_stored(store)
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        reason = redact.mask(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        if store is not None or exc.get_error_code() in _XML_ERRORS:
            raise TestHostInvalid(path=uri[len("test://"):], reason=reason) from exc
        raise exception.HypervisorUnavailable(connection=safe_uri(uri), reason=reason)
    if uri.startswith("test://"):
        return testseam.TestDriverSeam(conn)
    return conn


class LibvirtDriver(driver.VirtDriver):
    """GPUs, mdevs and NVIDIA vendor-VFIO VFs on a libvirt/KVM host."""

    def __init__(self, conf: cfg.ConfigOpts | None = None,
                 dev_filter: inventory.DeviceFilter | None = None,
                 connection: ty.Any | None = None,
                 sysfs: sysfs_mod.SysfsRoot | None = None) -> None:
        if conf is None:
            from pci_vgpu.conf import CONF
            conf = CONF
        self.conf: cfg.ConfigOpts = conf
        self.dev_filter = dev_filter
        self.uri = conf.libvirt.connection_uri or "test://" + DEFAULT_HOST
        self.conn = connection if connection is not None else _open(self.uri, conf)
        self.sysfs = sysfs or sysfs_mod.SysfsRoot(conf.libvirt.sysfs_root)
        self.mdevs: mdev_mod.MdevBackend = (
            mdev_mod.SysfsBackend(self.sysfs) if conf.libvirt.mdev_backend == "sysfs"
            else mdev_mod.NodedevBackend(self.conn))
        self.max_memory = sharing.MaxMemory()
        # One vGPU change at a time: availability is read then acted upon.
        self._lock = threading.Lock()

    def describe(self) -> driver.DriverInfo:
        return driver.DriverInfo(
            name="libvirt", hot_plug=True,
            vgpu_backends=(devices_mod.MDEV, devices_mod.NVIDIA_VF),
            connection="%s (mdev backend %s, sysfs %s)" % (
                safe_uri(self.uri),
                self.mdevs.name, self.sysfs.root))

    def _virt_type(self) -> str:
        if str(self.conn.getType()).lower() == "test":
            return "test"
        return "kvm" if os.path.exists("/dev/kvm") else "qemu"

    # -- inventory ---------------------------------------------------------
    def get_pci_passthrough_devices(self) -> list[dict[str, ty.Any]]:
        """:raises: VirtDriverError when libvirt fails (not for a vanished device)."""
        return self._inventory(self._mdev_owners())

    def _inventory(self, owners: dict[str, str]) -> list[dict[str, ty.Any]]:
        """The device dicts, with guest owners already read by the caller."""
        try:
            nodes = inventory.read_nodes(self.conn)
        except libvirt.libvirtError as exc:
            raise exception.VirtDriverError(driver="libvirt", reason=str(exc))
        return inventory.build(nodes, self.sysfs, self.max_memory, owners, self.dev_filter)

    def _mdev_owners(self) -> dict[str, str]:
        """mdev UUID / PCI address -> UUID of the guest using it.

        :raises: VirtDriverError when libvirt fails.
        """
        owners: dict[str, str] = {}
        try:
            found = guests.list_guests(self.conn)
        except libvirt.libvirtError as exc:
            raise exception.VirtDriverError(driver="libvirt", reason=str(exc))
        for guest in found:
            owners.update({u: guest.uuid for u in guest.mdev_uuids})
            owners.update({a: guest.uuid for a in guest.pci_addresses})
        return owners

    def list_guests(self) -> list[driver.GuestInfo]:
        return guests.list_guests(self.conn)

    def list_vgpus(self) -> list[driver.VgpuInfo]:
        """Every mdev (from the configured backend) and every typed VF."""
        owners = self._mdev_owners()
        found = [driver.VgpuInfo(mdev_uuid=m.mdev_uuid, parent_addr=m.parent_addr,
                                 vgpu_type=m.mdev_type, backend=devices_mod.MDEV,
                                 instance_uuid=owners.get(m.mdev_uuid))
                 for m in self.mdevs.list()]
        for dev in self._inventory(owners):  # guests are read once per call
            if dev.get("vgpu_backend") == devices_mod.NVIDIA_VF and dev.get("vgpu_current_type"):
                found.append(driver.VgpuInfo(
                    mdev_uuid=None, parent_addr=dev["address"],
                    vgpu_type=dev["vgpu_current_type"], backend=devices_mod.NVIDIA_VF,
                    instance_uuid=owners.get(dev["address"])))
        return found

    # -- vGPU lifecycle ----------------------------------------------------
    def prepare_vgpu(self, device: ty.Any) -> None:
        """:raises: VgpuCreateFailed; InvalidVgpuName for a bad UUID/type."""
        view = devices_mod.view(device)
        with self._lock:
            if view.kind == devices_mod.MDEV:
                try:
                    self._create_mdev(view)
                except libvirt.libvirtError as exc:  # listing devices (nodedev)
                    raise exception.VgpuCreateFailed(
                        mdev_uuid=view.mdev_uuid, vgpu_type=view.vgpu_type,
                        parent_addr=view.parent_addr, reason=str(exc)) from exc
            elif view.kind == devices_mod.NVIDIA_VF:
                nvidia_vf.set_type(self.sysfs, ty.cast(str, view.address),
                                   ty.cast(str, view.vgpu_type))

    def _create_mdev(self, view: devices_mod.DeviceView) -> None:
        for existing in self.mdevs.list():
            if existing.mdev_uuid != view.mdev_uuid or not existing.active:
                continue
            if (existing.mdev_type, existing.parent_addr) == (view.vgpu_type, view.parent_addr):
                return
            raise exception.VgpuCreateFailed(
                mdev_uuid=view.mdev_uuid, vgpu_type=view.vgpu_type,
                parent_addr=view.parent_addr,
                reason="that UUID already exists as type %s on %s" % (
                    existing.mdev_type, existing.parent_addr))
        self.mdevs.create(ty.cast(str, view.parent_addr), ty.cast(str, view.vgpu_type),
                          ty.cast(str, view.mdev_uuid))

    def release_vgpu(self, device: ty.Any) -> None:
        """:raises: VgpuRemoveFailed (the vGPU is still there)."""
        view = devices_mod.view(device)
        with self._lock:
            if view.kind == devices_mod.MDEV:
                try:
                    self.mdevs.remove(ty.cast(str, view.mdev_uuid), view.parent_addr)
                except libvirt.libvirtError as exc:  # listing devices (nodedev)
                    raise exception.VgpuRemoveFailed(
                        mdev_uuid=view.mdev_uuid, parent_addr=view.parent_addr,
                        reason=str(exc)) from exc
            elif view.kind == devices_mod.NVIDIA_VF:
                nvidia_vf.release(self.sysfs, ty.cast(str, view.address))

    def init_host(self, allocated: ty.Sequence[ty.Any]) -> driver.HostInitReport:
        return hostinit.restore(self, allocated)

    # -- guests ------------------------------------------------------------
    def spawn(self, guest: driver.GuestSpec, devices: ty.Sequence[ty.Any]) -> None:
        """:raises: GuestSpawnFailed; nothing of the guest is left defined
            unless undefining it failed too (the message then says so)."""
        devs = [devices_mod.view(d).hostdev() for d in devices]
        guests.spawn(self.conn, guest, devs, self._virt_type())

    def destroy(self, guest_uuid: str) -> None:
        guests.destroy(self.conn, guest_uuid)

    def attach_devices(self, guest_uuid: str, devices: ty.Sequence[ty.Any]) -> None:
        """:raises: DeviceAttachFailed, HotPlugNotSupported (nothing attached)."""
        guests.attach(self.conn, guest_uuid, [devices_mod.view(d).hostdev() for d in devices])

    def detach_devices(self, guest_uuid: str, devices: ty.Sequence[ty.Any]) -> None:
        """:raises: DeviceDetachFailed with ``still_attached``."""
        guests.detach(self.conn, guest_uuid,
                      [devices_mod.view(d).hostdev() for d in devices], DETACH_TIMEOUT)

    def close(self) -> None:
        try:
            self.conn.close()
        except libvirt.libvirtError as exc:
            LOG.warning("Closing %(uri)s failed: %(err)s", {"uri": self.uri, "err": exc})

