"""After a guest reboot with Debian's mdevctl as shipped, then with the fix.

Debian's ``60-mdevctl.rules`` runs ``/usr/sbin/mdevctl``; the package
installs ``/usr/bin/mdevctl``, so no autostart mdev comes back.
``init_host`` (what ``pci-vgpu host init`` calls) must start every
allocated mdev with its UUID anyway, report the orphan, and remove it when
``[libvirt] remove_orphan_mdevs`` is set.  With a ``/usr/sbin/mdevctl``
link (the documented workaround) the same udev rule starts them when the
parent registers, which reloading the mtty driver replays without a third
boot.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.kernel.debian import lab
from tests.kernel.debian.boot1 import test_zz_prepare_reboot as before

pytestmark = pytest.mark.kernel


def _allocated():
    return lab.load_allocated(os.path.join(lab.state_dir(), before.ALLOCATED))


def _orphan():
    with open(os.path.join(lab.state_dir(), before.ORPHAN)) as src:
        return src.read().strip()


def test_0_autostart_brought_nothing_back():
    assert not os.path.lexists(os.path.join(lab.guest_root(), "usr/sbin/mdevctl"))
    drv = lab.make_driver(lab.state_dir())
    found = {m.mdev_uuid: m for m in drv.mdevs.list()}
    for device in _allocated():
        assert lab.sysfs_mdev_type(device.mdev_uuid) is None
        # Defined (mdevctl kept it) but stopped.
        assert found[device.mdev_uuid].active is False
    assert found[_orphan()].active is False
    drv.close()


def test_1_init_host_restores_every_allocated_mdev_with_its_uuid():
    drv = lab.make_driver(lab.state_dir())
    allocated = _allocated()
    report = drv.init_host(allocated)
    assert sorted(report.recreated) == sorted(d.mdev_uuid for d in allocated)
    for device in allocated:
        assert lab.sysfs_mdev_type(device.mdev_uuid) == device.vgpu_type
        dev = drv.conn.nodeDeviceLookupByName(lab.mdev_node_name(device.mdev_uuid))
        assert (dev.isActive(), dev.isPersistent(), dev.autostart()) == (1, 1, 1)
    assert [o.mdev_uuid for o in report.orphans] == [_orphan()]
    assert report.removed == []
    # Run again: nothing left to restore.
    assert drv.init_host(allocated).recreated == []
    drv.close()


def test_2_init_host_removes_the_orphan_when_configured():
    drv = lab.make_driver(lab.state_dir(), remove_orphans=True)
    report = drv.init_host(_allocated())
    assert report.removed == [_orphan()]
    assert _orphan() not in lab.defined_uuids()
    assert {m.mdev_uuid for m in drv.mdevs.list()} == {d.mdev_uuid for d in _allocated()}
    drv.close()


def _reload_mtty():
    """The mtty parent goes away and registers again, as at boot.

    Its udev "add"/"change" events are what ``60-mdevctl.rules`` acts on.
    """
    lab.reload_module("mtty")
    lab.wait_for(lambda: os.path.isdir("/sys/class/mdev_bus/mtty"), 30, "mtty registered")
    time.sleep(1)  # the uevents reach udevd's queue
    lab.wait_for(lab.udev_settled, 60, "udev ran the events of mtty")


def _stop_all(drv):
    for device in _allocated():  # destroy keeps the definition (persistent)
        drv.conn.nodeDeviceLookupByName(lab.mdev_node_name(device.mdev_uuid)).destroy()


def test_3_without_the_workaround_a_parent_registration_starts_nothing():
    drv = lab.make_driver(lab.state_dir())
    _stop_all(drv)
    _reload_mtty()
    assert [lab.sysfs_mdev_type(d.mdev_uuid) for d in _allocated()] == [None, None]
    drv.close()


def test_4_with_the_workaround_autostart_works_and_init_host_has_nothing_to_do():
    """The documented workaround: a link at the path the udev rule runs."""
    workaround = os.path.join(lab.guest_root(), "usr/sbin/mdevctl")
    os.symlink("/usr/bin/mdevctl", workaround)
    try:
        _reload_mtty()
        for device in _allocated():
            lab.wait_for(lambda: lab.sysfs_mdev_type(device.mdev_uuid) == device.vgpu_type,
                         30, "mdev %s started by udev + mdevctl" % device.mdev_uuid)
        drv = lab.make_driver(lab.state_dir())
        report = drv.init_host(_allocated())
        assert (report.recreated, report.orphans) == ([], [])
        for device in _allocated():
            drv.release_vgpu(device)
        assert not {d.mdev_uuid for d in _allocated()} & set(lab.defined_uuids())
        # libvirtd learns of mdevctl's undefine asynchronously (it listed one
        # as defined and inactive for a moment in a CI run).
        lab.wait_for(lambda: drv.mdevs.list() == [], 60, "libvirt forgets the released mdevs")
        drv.close()
    finally:
        os.unlink(workaround)
