"""Before the first guest reboot: two allocated mdevs and one orphan.

Runs last in boot 1 (file name).  The allocated mdevs are made by the
driver (persistent, autostart); the orphan is defined and set to autostart
through libvirt behind the project's back.  ``boot2/`` checks what the
reboot left and what ``init_host`` brings back.
"""

from __future__ import annotations

import os
import uuid

import pytest

from pci_vgpu.virt.libvirt import mdev as mdev_mod
from tests.kernel.debian import lab

pytestmark = pytest.mark.kernel

ALLOCATED = "allocated.json"
ORPHAN = "orphan.txt"


def test_prepare_mdevs_for_the_reboot():
    workaround = os.path.join(lab.guest_root(), "usr/sbin/mdevctl")
    if os.path.lexists(workaround):
        os.unlink(workaround)  # boot 2 sees Debian's mdevctl as shipped
    drv = lab.make_driver(lab.state_dir())
    allocated = [lab.AllocatedMdev(str(uuid.uuid4()), "mtty-1"),
                 lab.AllocatedMdev(str(uuid.uuid4()), "mtty-2")]
    for device in allocated:
        drv.prepare_vgpu(device)
    orphan = str(uuid.uuid4())
    xml = mdev_mod.mdev_device_xml(lab.MTTY_NODE, "mtty-1", orphan)
    drv.conn.nodeDeviceDefineXML(xml, 0).setAutostart(1)
    drv.conn.nodeDeviceLookupByName(lab.mdev_node_name(orphan)).create(0)
    lab.save_allocated(os.path.join(lab.state_dir(), ALLOCATED), allocated)
    with open(os.path.join(lab.state_dir(), ORPHAN), "w") as out:
        out.write(orphan)
    assert {m.mdev_uuid for m in drv.mdevs.list() if m.active} == {
        allocated[0].mdev_uuid, allocated[1].mdev_uuid, orphan}
    assert lab.defined_uuids() >= {allocated[0].mdev_uuid, allocated[1].mdev_uuid, orphan}
    drv.close()
