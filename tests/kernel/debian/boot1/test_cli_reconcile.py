"""``pci-vgpu host reconcile`` on the real host: mdevs changed behind its back.

The CLI runs in-process on ``--connection qemu:///system`` with its own
state directory.  An *orphan* is defined and started through libvirt (what
an operator's ``virsh nodedev-define`` + ``nodedev-start`` or ``mdevctl
define --auto`` + ``start`` does): ``--apply`` must remove it, definition
included.  A *missing* vGPU is one a server holds whose mdev is destroyed
and undefined through libvirt (``virsh nodedev-destroy`` +
``nodedev-undefine``): ``--apply`` must re-create it with its UUID, started
and defined again.
"""

from __future__ import annotations

import uuid

import pytest

from pci_vgpu.virt.libvirt import mdev as mdev_mod
from tests.functional.cli_runner import Cli
from tests.kernel.debian import lab

pytestmark = pytest.mark.kernel

# The orphan needs no device_spec: it is found from the host's mdevs, not
# from the pools.
CONF = """
[libvirt]
mdev_backend = nodedev
"""
#: mtty named by its kernel name (it has no PCI address); flavors ask for
#: its type by name alone (it has no vendor or product id either).
TRACKED_CONF = CONF + """
[pci]
device_spec = {"mdev_parent": "mtty", "vgpu_types": ["mtty-2"]}
alias = {"name": "mtty-2", "vgpu_types": "mtty-2"}
"""
REAL = ["--connection", lab.URI]


@pytest.fixture
def cli(tmp_path):
    runner = Cli(tmp_path, CONF, bundled=False)
    yield runner
    runner.close()


@pytest.fixture
def tracked_cli(tmp_path):
    runner = Cli(tmp_path, TRACKED_CONF, bundled=False)
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


def _libvirt_uuids(drv):
    return {m.mdev_uuid for m in drv.mdevs.list()}


def _kinds(findings, kind):
    return [(f["subject"], f["fixed"]) for f in findings if f["kind"] == kind]


def test_reconcile_apply_recreates_a_missing_mdev_with_its_uuid(tracked_cli, tmp_path):
    drv = lab.make_driver(str(tmp_path))
    server = tracked_cli.json("server", "create", "vm-missing",
                              "--flavor", "pci_passthrough:alias=mtty-2:1", *REAL)
    try:
        [vgpu] = server["devices"]
        mdev_uuid = vgpu["mdev_uuid"]
        assert (vgpu["parent_addr"], vgpu["vgpu_type"], vgpu["numa_node"]) == (
            lab.MTTY, "mtty-2", None)
        assert lab.sysfs_mdev_type(mdev_uuid) == "mtty-2"
        # Behind pci-vgpu's back: the guest stops (an mdev in use cannot be
        # removed), its mdev is destroyed and undefined through libvirt.
        drv.conn.lookupByUUIDString(server["uuid"]).destroy()
        node = drv.conn.nodeDeviceLookupByName(lab.mdev_node_name(mdev_uuid))
        node.destroy()
        node.undefine(0)
        assert mdev_uuid not in lab.defined_uuids()
        lab.wait_for(lambda: mdev_uuid not in _libvirt_uuids(drv), 60,
                     "libvirt forgets the undefined mdev")

        findings = tracked_cli.json("host", "reconcile", *REAL, expect=1)
        assert _kinds(findings, "missing-vgpu") == [(mdev_uuid, False)]
        fixed = tracked_cli.json("host", "reconcile", "--apply", *REAL)
        assert _kinds(fixed, "missing-vgpu") == [(mdev_uuid, True)]
        assert lab.sysfs_mdev_type(mdev_uuid) == "mtty-2"
        assert mdev_uuid in lab.defined_uuids()
        [again] = [m for m in drv.mdevs.list() if m.mdev_uuid == mdev_uuid]
        assert (again.parent_addr, again.mdev_type, again.active) == (lab.MTTY, "mtty-2", True)
        assert tracked_cli.json("host", "reconcile", *REAL) == []
    finally:
        # Later boot1 tests (test_zz_prepare_reboot) expect no mdev left.
        tracked_cli("server", "delete", "vm-missing", *REAL)
        created = {d["mdev_uuid"] for d in server["devices"]}
        assert not created & lab.defined_uuids()
        lab.wait_for(lambda: not created & _libvirt_uuids(drv), 60,
                     "libvirt forgets the deleted server's mdev")
        drv.close()
