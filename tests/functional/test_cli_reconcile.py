"""``host reconcile`` finds and fixes drift between database and hypervisor."""

from __future__ import annotations

import typing as ty
import uuid

import pytest

from pci_vgpu.objects import pci_device
from tests.functional.cli_runner import Cli

LIBVIRT = ["--connection", "libvirt"]
XEN = ["--connection", "xenserver"]


@pytest.fixture
def cli(tmp_path: ty.Any) -> ty.Iterator[Cli]:
    runner = Cli(tmp_path)
    yield runner
    runner.close()


def stray_mdev(mdev_uuid: str) -> pci_device.PciDevice:
    """An mdev an operator made by hand (mdevctl), unknown to pci-vgpu."""
    dev = pci_device.PciDevice.create(None, {
        "dev_id": "mdev_x", "address": None, "parent_addr": "0000:06:00.0",
        "vendor_id": "10de", "product_id": "1db4", "numa_node": 0,
        "label": "label_10de_1db4", "dev_type": "mdev", "mdev_uuid": mdev_uuid})
    dev.set_vgpu_type("nvidia-181")
    return dev


def test_libvirt_orphan_mdev_and_leaked_claim(cli):
    cli("host", "inventory", *LIBVIRT)
    start = cli.json("pool", "list", *LIBVIRT)
    leaky = cli.json("server", "create", "leaky", "--flavor", "t4-small", *LIBVIRT)
    cli("server", "create", "healthy", "--flavor", "v100-medium", *LIBVIRT)
    drv = cli.driver("libvirt")
    orphan = str(uuid.uuid4())
    drv.prepare_vgpu(stray_mdev(orphan))
    drv.destroy(leaky["uuid"])

    report = cli.json("host", "reconcile", *LIBVIRT, expect=1)
    assert {(f["kind"], f["subject"], f["fixed"]) for f in report} == {
        ("leaked-claim", leaky["uuid"], False), ("orphan-vgpu", orphan, False)}
    fixed = cli.json("host", "reconcile", "--apply", *LIBVIRT)
    assert all(f["fixed"] for f in fixed) and len(fixed) == 2
    assert cli.json("host", "reconcile", *LIBVIRT) == []

    assert orphan not in {v.mdev_uuid for v in drv.list_vgpus()}
    assert [s["name"] for s in cli.json("server", "list", *LIBVIRT)] == ["healthy"]
    cli("server", "delete", "healthy", *LIBVIRT)
    assert cli.json("pool", "list", "--refresh", *LIBVIRT) == start


def test_libvirt_missing_mdev_is_recreated(cli):
    cli("host", "inventory", *LIBVIRT)
    server = cli.json("server", "create", "vm1", "--flavor", "t4-small", *LIBVIRT)
    mdev = server["devices"][0]["mdev_uuid"]
    drv = cli.driver("libvirt")
    [dev] = [d for d in drv.list_vgpus() if d.mdev_uuid == mdev]
    lost = stray_mdev(mdev)
    lost.parent_addr = dev.parent_addr
    drv.release_vgpu(lost)           # the host rebooted; transient mdev gone

    [finding] = cli.json("host", "reconcile", *LIBVIRT, expect=1)
    assert (finding["kind"], finding["subject"]) == ("missing-vgpu", mdev)
    cli("host", "reconcile", "--apply", *LIBVIRT)
    assert mdev in {v.mdev_uuid for v in drv.list_vgpus()}


def test_xenserver_leaked_claim(cli):
    cli("host", "inventory", *XEN)
    start = cli.json("pool", "list", *XEN)
    server = cli.json("server", "create", "vm1", "--flavor", "k2-medium", *XEN)
    cli.driver("xenserver").destroy(server["uuid"])
    [finding] = cli.json("host", "reconcile", *XEN, expect=1)
    assert (finding["kind"], finding["subject"]) == ("leaked-claim", server["uuid"])
    cli("host", "reconcile", "--apply", *XEN)
    assert cli.json("server", "list", *XEN) == []
    assert cli.json("pool", "list", *XEN) == start


def test_host_init_recreates_the_mdevs_a_reboot_lost(cli):
    server = cli.json("server", "create", "vm1", "--flavor", "t4-small", *LIBVIRT)
    mdev = server["devices"][0]["mdev_uuid"]
    drv = cli.driver("libvirt")
    lost = stray_mdev(mdev)
    lost.parent_addr = "0000:41:00.0"
    drv.release_vgpu(lost)
    assert mdev not in {v.mdev_uuid for v in drv.list_vgpus()}
    rows = cli.json("host", "init", *LIBVIRT)
    assert ("recreated", mdev) in {(r["action"], r["subject"]) for r in rows}
    assert mdev in {v.mdev_uuid for v in drv.list_vgpus()}
    assert cli.json("host", "reconcile", *LIBVIRT) == []
