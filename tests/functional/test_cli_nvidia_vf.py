"""An NVIDIA L40S with vendor-specific VFIO VFs, driven through the CLI.

The bundled ``nvidia-l40s-sriov`` test host has four VFs (0000:c1:00.4-7,
NUMA 1) and no mdev bus.  Each VF is typed by writing
``nvidia/current_vgpu_type``; the kernel side is the fake sysfs tree of
``tests.fixtures.sysfs`` (there is no such GPU here).  The libvirt driver is
the real one, installed for the CLI under the host's URI.
"""

from __future__ import annotations

import typing as ty

import libvirt
import pytest

from pci_vgpu import conf as pci_conf
from pci_vgpu import devspec
from pci_vgpu.cli import connection
from pci_vgpu.virt.libvirt import driver as libvirt_driver
from pci_vgpu.virt.libvirt import testseam
from tests.fixtures import sysfs as fake_sysfs
from tests.functional.cli_runner import Cli

URI = libvirt_driver.host_uri("nvidia-l40s-sriov")
VFS = ["0000:c1:00.%d" % fn for fn in range(4, 8)]
CONF = "\n".join([
    "[pci]",
    'device_spec = {"vendor_id": "10de", "product_id": "26b9"}',
    'alias = {"name": "l40s-8q", "vendor_id": "10de", "product_id": "26b9", '
    '"vgpu_types": "NVIDIA L40S-8Q", "numa_policy": "required"}',
    ""])


@pytest.fixture
def host(tmp_path: ty.Any) -> ty.Iterator[tuple[Cli, fake_sysfs.FakeSysfs]]:
    cli = Cli(tmp_path, extra_conf=CONF, bundled=False)
    sysfs = fake_sysfs.FakeSysfs(str(tmp_path / "sysfs"))
    for vf in VFS:
        sysfs.add_nvidia_vf(vf, {"1155": "NVIDIA L40S-4Q", "1156": "NVIDIA L40S-8Q"})
    cli.load_config()
    drv = libvirt_driver.LibvirtDriver(
        conf=pci_conf.CONF, dev_filter=devspec.Whitelist(pci_conf.CONF.pci.device_spec),
        connection=testseam.TestDriverSeam(libvirt.open(URI)), sysfs=sysfs.root)
    connection.register(("libvirt", URI), drv)
    yield cli, sysfs
    cli.close()


def test_vf_is_typed_for_the_guest_and_untyped_after(host):
    cli, sysfs = host
    start = cli.json("pool", "list", "--connection", URI)
    # one pool per (VF, type): a VF is typed for one guest at a time
    assert sorted((p["address"], p["free"]) for p in start
                  if p["vgpu_type"] == "nvidia-1156") == [(vf, 1) for vf in VFS]
    server = cli.json("server", "create", "vm1", "--flavor", "pci_passthrough:alias=l40s-8q:2",
                      "--numa-node", "1", "--connection", URI)
    typed = {d["address"] for d in server["devices"]}
    assert len(typed) == 2 and typed <= set(VFS)
    assert all(d["dev_type"] == "type-VF" and d["vgpu_type"] == "nvidia-1156"
               for d in server["devices"])
    assert {vf: sysfs.current_type(vf) for vf in typed} == dict.fromkeys(typed, "1156")

    # required NUMA policy: a guest on node 0 cannot have an L40S vGPU
    cli("server", "create", "vm0", "--flavor", "pci_passthrough:alias=l40s-8q:1",
        "--numa-node", "0", "--connection", URI, expect=1)

    cli("server", "delete", "vm1", "--connection", URI)
    assert {vf: sysfs.current_type(vf) for vf in VFS} == dict.fromkeys(VFS, "0")
    assert cli.json("server", "list", "--connection", URI) == []
    # the four VFs serve 8Q guests again
    again = cli.json("server", "create", "vm2", "--flavor", "pci_passthrough:alias=l40s-8q:4",
                     "--connection", URI)
    assert {d["address"] for d in again["devices"]} == set(VFS)


def test_freed_vf_can_take_any_type_again(host):
    """A VF typed 8Q for a guest serves 4Q after the guest is deleted."""
    cli, sysfs = host
    start = cli.json("pool", "list", "--connection", URI)
    cli("server", "create", "vm1", "--flavor", "pci_passthrough:alias=l40s-8q:4",
        "--connection", URI)
    cli("server", "delete", "vm1", "--connection", URI)
    assert cli.json("pool", "list", "--connection", URI) == start
    assert {vf: sysfs.current_type(vf) for vf in VFS} == dict.fromkeys(VFS, "0")


def test_a_vf_typed_by_hand_is_an_orphan_and_is_untyped(host):
    cli, sysfs = host
    start = cli.json("pool", "list", "--connection", URI)
    sysfs.write(sysfs.base + "/sys/bus/pci/devices/%s/nvidia/current_vgpu_type" % VFS[0],
                "1155")  # typed outside pci-vgpu, used by nobody
    report = cli.json("host", "reconcile", "--connection", URI, expect=1)
    assert ("orphan-vgpu", VFS[0]) in {(f["kind"], f["subject"]) for f in report}
    assert all(f["fixed"] for f in cli.json("host", "reconcile", "--apply", "--connection", URI))
    assert sysfs.current_type(VFS[0]) == "0"
    assert cli.json("host", "reconcile", "--connection", URI) == []
    assert cli.json("pool", "list", "--refresh", "--connection", URI) == start
