"""``pci-vgpu host reconcile`` on the real host: an mdev made behind its back.

The CLI runs in-process on ``--connection qemu:///system`` with its own
state directory; the orphan is defined and started through libvirt (what
an operator's ``virsh nodedev-define`` + ``nodedev-start`` or ``mdevctl
define --auto`` + ``start`` does).  ``--apply`` must remove it, definition
included.
"""

from __future__ import annotations

import uuid

import pytest

from pci_vgpu.virt.libvirt import mdev as mdev_mod
from tests.functional.cli_runner import Cli
from tests.kernel.debian import lab

pytestmark = pytest.mark.kernel

# No device_spec: [pci] device_spec cannot name a parent that has no PCI
# address (measured: "slot 'mtty' in 'mtty' is not a hex number"); an
# orphan is found from the host's mdevs, not from the pools.
CONF = """
[libvirt]
mdev_backend = nodedev
"""
REAL = ["--connection", lab.URI]


@pytest.fixture
def cli(tmp_path):
    runner = Cli(tmp_path, CONF, bundled=False)
    yield runner
    runner.close()


def test_reconcile_apply_removes_an_orphan_mdev(cli, tmp_path):
    drv = lab.make_driver(str(tmp_path))
    orphan = str(uuid.uuid4())
    dev = drv.conn.nodeDeviceDefineXML(
        mdev_mod.mdev_device_xml(lab.MTTY_NODE, "mtty-2", orphan), 0)
    dev.create(0)
    try:
        cli("host", "inventory", *REAL)
        findings = cli.json("host", "reconcile", *REAL, expect=1)
        assert [(f["kind"], f["subject"], f["fixed"]) for f in findings
                if f["kind"] == "orphan-vgpu"] == [("orphan-vgpu", orphan, False)]
        fixed = cli.json("host", "reconcile", "--apply", *REAL)
        assert ("orphan-vgpu", orphan, True) in {
            (f["kind"], f["subject"], f["fixed"]) for f in fixed}
        assert orphan not in lab.defined_uuids()
        assert orphan not in {m.mdev_uuid for m in drv.mdevs.list()}
    finally:
        for found in drv.mdevs.list():
            drv.mdevs.remove(found.mdev_uuid, found.parent_addr)
        drv.close()
