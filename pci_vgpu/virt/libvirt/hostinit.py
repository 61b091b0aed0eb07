"""Host start-up: bring back vGPUs a reboot lost, find those nobody owns.

After a reboot, sysfs-created mdevs are gone, nodedev mdevs whose autostart
failed are inactive, and every NVIDIA VF is back to type 0.  The tracker
knows which devices are allocated; :func:`restore` re-creates their mdevs
with the recorded UUID and re-types their VFs, then lists the vGPUs that
no allocated device owns and removes them when ``[libvirt]
remove_orphan_mdevs`` is set -- unless a guest still uses them.
"""

from __future__ import annotations

import logging
import typing as ty

from pci_vgpu.virt import driver
from pci_vgpu.virt import exception
from pci_vgpu.virt.libvirt import devices as devices_mod
from pci_vgpu.virt.libvirt import nvidia_vf

if ty.TYPE_CHECKING:
    from pci_vgpu.virt.libvirt.driver import LibvirtDriver

LOG = logging.getLogger(__name__)


def _restore_one(drv: LibvirtDriver, view: devices_mod.DeviceView,
                 existing: set[str]) -> str | None:
    if view.kind == devices_mod.MDEV and view.mdev_uuid not in existing:
        drv.mdevs.create(ty.cast(str, view.parent_addr), ty.cast(str, view.vgpu_type),
                         ty.cast(str, view.mdev_uuid))
        return view.mdev_uuid
    if view.kind == devices_mod.NVIDIA_VF:
        state = nvidia_vf.read_vf(drv.sysfs, ty.cast(str, view.address))
        if state is not None and state.current is None:
            nvidia_vf.set_type(drv.sysfs, ty.cast(str, view.address),
                               ty.cast(str, view.vgpu_type))
            return view.address
    return None


def _restore(drv: LibvirtDriver, views: list[devices_mod.DeviceView]) -> list[str]:
    existing = {m.mdev_uuid for m in drv.mdevs.list() if m.active}
    recreated = []
    for view in views:
        try:
            done = _restore_one(drv, view, existing)
        except exception.VirtDriverError as exc:
            # One lost vGPU must not keep the host from starting; the
            # guest that needs it fails to start with this reason logged.
            LOG.error("Could not restore %(dev)s: %(err)s",
                      {"dev": view.label, "err": exc.format_message()})
            continue
        if done is not None:
            LOG.info("Restored %(dev)s after a host restart", {"dev": view.label})
            recreated.append(done)
    return recreated


def _owned(views: list[devices_mod.DeviceView]) -> set[str]:
    return {ty.cast(str, v.mdev_uuid if v.kind == devices_mod.MDEV else v.address)
            for v in views}


def restore(drv: LibvirtDriver, allocated: ty.Sequence[ty.Any]) -> driver.HostInitReport:
    """Re-create, report orphans, and remove them if configured."""
    views = [devices_mod.view(d) for d in allocated]
    report = driver.HostInitReport(recreated=_restore(drv, views))
    owned = _owned(views)
    for vgpu in drv.list_vgpus():
        key = vgpu.mdev_uuid or vgpu.parent_addr
        if key in owned:
            continue
        report.orphans.append(vgpu)
        LOG.warning("vGPU %(key)s (type %(type)s) belongs to no allocated device%(user)s",
                    {"key": key, "type": vgpu.vgpu_type,
                     "user": " but guest %s uses it" % vgpu.instance_uuid
                     if vgpu.instance_uuid else ""})
    if drv.conf.libvirt.remove_orphan_mdevs:
        report.removed = _remove_orphans(drv, report.orphans)
    return report


def _remove_orphans(drv: LibvirtDriver, orphans: list[driver.VgpuInfo]) -> list[str]:
    removed = []
    for vgpu in orphans:
        if vgpu.instance_uuid is not None:
            continue  # a guest holds it: removing would break the guest
        try:
            if vgpu.backend == devices_mod.MDEV and vgpu.mdev_uuid:
                drv.mdevs.remove(vgpu.mdev_uuid, vgpu.parent_addr)
                removed.append(vgpu.mdev_uuid)
            elif vgpu.parent_addr:
                nvidia_vf.release(drv.sysfs, vgpu.parent_addr)
                removed.append(vgpu.parent_addr)
        except exception.VirtDriverError as exc:
            LOG.error("Could not remove orphan vGPU: %(err)s", {"err": exc.format_message()})
    return removed
