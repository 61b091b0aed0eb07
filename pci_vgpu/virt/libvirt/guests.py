"""Guest operations: define/start, destroy, hot-plug and unplug hostdevs.

Each operation either completes or puts the guest back as it was:
a spawn that fails undefines the guest; an attach that fails part-way
detaches what it attached; a detach reports exactly which devices are
still plugged so the tracker never records "free but plugged".
"""

from __future__ import annotations

import logging
import time
import typing as ty

import libvirt

from pci_vgpu.virt import driver
from pci_vgpu.virt import exception
from pci_vgpu.virt.libvirt import hostdev

LOG = logging.getLogger(__name__)

LIVE_AND_CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG


def _code(exc: libvirt.libvirtError) -> int | None:
    return ty.cast("int | None", exc.get_error_code())


def lookup(conn: ty.Any, guest_uuid: str) -> ty.Any | None:
    """The domain with ``guest_uuid``, None when there is none."""
    try:
        return conn.lookupByUUIDString(guest_uuid)
    except libvirt.libvirtError as exc:
        if _code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def spawn(conn: ty.Any, guest: driver.GuestSpec, devs: ty.Sequence[hostdev.Hostdev],
          virt_type: str) -> None:
    """Define and start; undefine again if the start fails.

    :raises: GuestSpawnFailed with libvirt's reason (and, if the undefine
        failed too, that the guest is still defined).
    """
    xml = hostdev.domain_xml(guest, devs, virt_type)
    try:
        dom = conn.defineXML(xml)
    except libvirt.libvirtError as exc:
        raise exception.GuestSpawnFailed(guest=guest.name, reason=str(exc))
    try:
        dom.create()
    except libvirt.libvirtError as exc:
        raise exception.GuestSpawnFailed(
            guest=guest.name, reason=str(exc) + _undefine_failed(dom))


def _undefine_failed(dom: ty.Any) -> str:
    """Undefine a guest that did not start; what went wrong, or "".

    A failed undefine must not hide why the start failed (the caller would
    get libvirt's undefine error alone), so it is reported after it.
    """
    try:
        dom.undefine()
    except libvirt.libvirtError as exc:
        LOG.error("Could not undefine guest %(uuid)s after its start failed: "
                  "%(err)s", {"uuid": dom.UUIDString(), "err": exc})
        return "; the guest is still defined (undefine failed: %s)" % exc
    return ""


def destroy(conn: ty.Any, guest_uuid: str) -> None:
    """Stop and undefine; a guest already gone is fine."""
    dom = lookup(conn, guest_uuid)
    if dom is None:
        return
    if dom.isActive():
        dom.destroy()
    dom.undefine()


def _flags(dom: ty.Any) -> int:
    return int(LIVE_AND_CONFIG if dom.isActive() else libvirt.VIR_DOMAIN_AFFECT_CONFIG)


def attach(conn: ty.Any, guest_uuid: str, devs: ty.Sequence[hostdev.Hostdev]) -> None:
    """Attach all of ``devs`` or none of them.

    :raises: DeviceAttachFailed; HotPlugNotSupported when libvirt says the
        connection cannot attach at all.
    """
    dom = lookup(conn, guest_uuid)
    if dom is None:
        raise exception.DeviceAttachFailed(device=", ".join(d.label for d in devs),
                                           guest=guest_uuid, reason="no such guest")
    flags = _flags(dom)
    done: list[hostdev.Hostdev] = []
    for dev in devs:
        try:
            dom.attachDeviceFlags(hostdev.hostdev_xml(dev), flags)
        except libvirt.libvirtError as exc:
            _undo_attach(dom, done, flags)
            if _code(exc) == libvirt.VIR_ERR_NO_SUPPORT:
                raise exception.HotPlugNotSupported(
                    driver="libvirt", device=dev.label, guest=guest_uuid, reason=str(exc))
            raise exception.DeviceAttachFailed(device=dev.label, guest=guest_uuid,
                                               reason=str(exc))
        done.append(dev)


def _undo_attach(dom: ty.Any, done: list[hostdev.Hostdev], flags: int) -> None:
    for dev in reversed(done):
        try:
            dom.detachDeviceFlags(hostdev.hostdev_xml(dev), flags)
        except libvirt.libvirtError as exc:
            LOG.error("Rollback could not detach %(dev)s: %(err)s",
                      {"dev": dev.label, "err": exc})


def plugged(dom: ty.Any) -> list[hostdev.Hostdev]:
    """Hostdevs in the guest's live (or, stopped, persistent) definition."""
    return hostdev.parse_hostdevs(dom.XMLDesc(0))


def detach(conn: ty.Any, guest_uuid: str, devs: ty.Sequence[hostdev.Hostdev],
           timeout: float) -> None:
    """Detach ``devs`` one by one, waiting until the guest releases each.

    :raises: DeviceDetachFailed naming the first device still plugged; its
        ``still_attached`` lists every device not detached.
    """
    dom = lookup(conn, guest_uuid)
    if dom is None:
        return
    flags = _flags(dom)
    for index, dev in enumerate(devs):
        try:
            dom.detachDeviceFlags(hostdev.hostdev_xml(dev), flags)
            _wait_released(dom, dev, timeout)
        except (libvirt.libvirtError, TimeoutError) as exc:
            if isinstance(exc, libvirt.libvirtError) and \
                    _code(exc) == libvirt.VIR_ERR_DEVICE_MISSING:
                continue
            failed = exception.DeviceDetachFailed(device=dev.label, guest=guest_uuid,
                                                  reason=str(exc))
            failed.still_attached = [d.label for d in devs[index:]]  # type: ignore[attr-defined]
            raise failed


def _wait_released(dom: ty.Any, dev: hostdev.Hostdev, timeout: float) -> None:
    # libvirt returns before a live guest has let the device go (Nova waits
    # for VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED); polling the XML is enough here.
    deadline = time.monotonic() + timeout
    while _is_plugged(dom, dev):
        if time.monotonic() >= deadline:
            raise TimeoutError("the guest did not release it within %.1f s" % timeout)
        time.sleep(0.05)


def _is_plugged(dom: ty.Any, dev: hostdev.Hostdev) -> bool:
    return any(p.kind == dev.kind and p.mdev_uuid == dev.mdev_uuid
               and p.address == dev.address for p in plugged(dom))


def list_guests(conn: ty.Any) -> list[driver.GuestInfo]:
    """Every domain with its hostdevs."""
    guests = []
    for dom in conn.listAllDomains(0):
        devs = plugged(dom)
        guests.append(driver.GuestInfo(
            uuid=dom.UUIDString(), name=dom.name(), running=bool(dom.isActive()),
            pci_addresses=tuple(d.address for d in devs if d.kind == "pci" and d.address),
            mdev_uuids=tuple(d.mdev_uuid for d in devs if d.kind == "mdev" and d.mdev_uuid)))
    return guests
