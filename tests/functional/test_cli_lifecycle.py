"""The whole life of guests with vGPUs, through the CLI, on both drivers.

libvirt: the bundled test host (V100 on NUMA 0, T4 on NUMA 1).
XenServer: the bundled XAPI simulator (four GRID K2 pGPUs; the bundled
``[xenserver] pci_numa_nodes`` puts board A on NUMA 0 and board B on NUMA 1).
"""

from __future__ import annotations

import typing as ty

import libvirt
import pytest

from pci_vgpu.virt.libvirt import testseam
from tests.fixtures.db import db_url  # noqa: F401  (pytest fixture)
from tests.functional.cli_runner import Cli
from tests.functional.cli_runner import pools_by_type


@pytest.fixture
def cli(tmp_path: ty.Any) -> ty.Iterator[Cli]:
    runner = Cli(tmp_path)
    yield runner
    runner.close()


LIBVIRT = ["--connection", "libvirt"]
XEN = ["--connection", "xenserver"]


def test_libvirt_lifecycle(cli):
    inventory = cli.json("host", "inventory", *LIBVIRT)
    # the NIC 0000:05:00.0 is not offered: [pci] device_spec matches NVIDIA only
    assert {d["address"]: d["status"] for d in inventory} == {
        "0000:06:00.0": "available", "0000:41:00.0": "available"}
    start = cli.json("pool", "list", *LIBVIRT)
    assert pools_by_type(start)[("0000:41:00.0", "nvidia-222")] == 16

    # a flavor that cannot fit: explain names the NUMA rule, exit code 1
    rows = cli.json("flavor", "explain", "v100-medium", "--numa-node", "1", *LIBVIRT,
                    expect=1)
    verdicts = {r["pool"]: r["verdict"] for r in rows}
    assert verdicts["10de:1db4 mdev@0000:06:00.0 numa=0 type=nvidia-181"] == \
        "NUMA affinity policy"
    assert rows[-1]["verdict"] == "does not fit"
    # one that fits says which GPU it would use
    rows = cli.json("flavor", "explain", "t4-small", *LIBVIRT)
    assert rows[-1]["verdict"] == "picked" and "0000:41:00.0" in rows[-1]["detail"]

    t4 = cli.json("server", "create", "vm-t4", "--flavor", "t4-small", *LIBVIRT)
    v100 = cli.json("server", "create", "vm-v100", "--flavor", "v100-medium",
                    "--numa-node", "0", *LIBVIRT)
    assert (t4["numa_node"], v100["numa_node"]) == (1, 0)
    listed = {s["name"]: s for s in cli.json("server", "list", *LIBVIRT)}
    assert listed["vm-t4"]["running"] is True
    [dev] = listed["vm-t4"]["devices"]
    assert dev["vgpu_type"] == "nvidia-222" and dev["parent_addr"] == "0000:41:00.0"
    assert (dev["numa_node"], dev["status"], dev["address"]) == (1, "allocated", None)
    shrunk = pools_by_type(cli.json("pool", "list", *LIBVIRT))
    assert shrunk[("0000:41:00.0", "nvidia-222")] == 15
    assert shrunk[("0000:41:00.0", "nvidia-230")] == 0   # one type per GPU

    # capacity exhaustion: 15 more T4-1B fit, the 17th does not
    cli("server", "create", "vm-many", "--flavor", "pci_passthrough:alias=t4-1b:15", *LIBVIRT)
    cli("server", "create", "vm-extra", "--flavor", "t4-small", *LIBVIRT, expect=1)
    assert "vm-extra" in cli.stderr and "claiming devices" in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1
    assert "vm-extra" not in cli("server", "list", *LIBVIRT)

    cli("server", "delete", "vm-t4", "vm-v100", "vm-many", *LIBVIRT)
    assert cli.json("server", "list", *LIBVIRT) == []
    assert cli.json("pool", "list", *LIBVIRT) == start


def test_libvirt_attach_detach_and_failed_attach_rolled_back(cli):
    cli("host", "inventory", *LIBVIRT)
    cli("server", "create", "vm1", "--flavor", "t4-small", *LIBVIRT)
    [added] = cli.json("server", "attach", "vm1", "--flavor", "t4-small", *LIBVIRT)
    mdev = added["mdev_uuid"]
    assert len(cli.json("server", "list", *LIBVIRT)[0]["devices"]) == 2
    cli("server", "detach", "vm1", mdev, *LIBVIRT)
    assert len(cli.json("server", "list", *LIBVIRT)[0]["devices"]) == 1

    before = cli.json("pool", "list", *LIBVIRT)
    seam = cli.driver("libvirt").conn  # type: ignore[attr-defined]
    seam.fail_next("attachDeviceFlags", testseam.libvirt_error(
        libvirt.VIR_ERR_INTERNAL_ERROR, "internal error: QEMU refused the device"))
    cli("server", "attach", "vm1", "--flavor", "t4-small", *LIBVIRT, expect=1)
    assert "QEMU refused the device" in cli.stderr and "rolled back" in cli.stderr
    assert cli.json("pool", "list", *LIBVIRT) == before
    assert len(cli.json("server", "list", *LIBVIRT)[0]["devices"]) == 1
    assert cli.json("host", "reconcile", *LIBVIRT) == []


def test_xenserver_lifecycle(cli):
    inventory = cli.json("host", "inventory", *XEN)
    assert len(inventory) == 4 and all(d["dev_id"].startswith("OpaqueRef:") for d in inventory)
    start = cli.json("pool", "list", *XEN)

    rows = cli.json("flavor", "explain", "k2-k280q-x5", *XEN, expect=1)
    assert rows[-1]["detail"] == "5 wanted, 4 usable"
    cli("server", "create", "vm-a", "--flavor", "k2-medium", *XEN)
    # [xenserver] pci_numa_nodes (bundled defaults) puts board B on node 1
    vm_b = cli.json("server", "create", "vm-b", "--flavor", "k2-medium", "--numa-node", "1",
                    *XEN)
    assert vm_b["numa_node"] == 1
    assert vm_b["devices"][0]["parent_addr"] in ("0000:85:00.0", "0000:86:00.0")
    guests = {s["name"]: s for s in cli.json("server", "list", *XEN)}
    assert set(guests) == {"vm-a", "vm-b"} and all(g["running"] for g in guests.values())
    free = sum(v for (_, t), v in pools_by_type(cli.json("pool", "list", *XEN)).items()
               if t == "GRID K240Q")
    assert free == 4 * 4 - 2

    # XAPI adds vGPUs only to halted VMs: the attach fails and is undone
    cli("server", "attach", "vm-a", "--flavor", "k2-medium", *XEN, expect=1)
    assert "halted" in cli.stderr and "freed the new claim" in cli.stderr
    assert len(cli.json("server", "list", *XEN)[0]["devices"]) == 1

    # capacity: 14 K240Q left, 15 do not fit
    cli("server", "create", "vm-c", "--flavor", "pci_passthrough:alias=k2-k240q:15", *XEN,
        expect=1)
    cli("server", "delete", "vm-a", "vm-b", *XEN)
    assert cli.json("pool", "list", *XEN) == start


def test_errors_are_one_line(cli):
    cli("server", "create", "vm1", "--flavor", "no-such-flavor", *LIBVIRT, expect=1)
    assert cli.stderr.startswith("ERROR: Flavor 'no-such-flavor' is not valid")
    assert len(cli.stderr.strip().splitlines()) == 1
    cli("server", "delete", "ghost", *LIBVIRT, expect=1)
    assert "Server ghost not found" in cli.stderr
    cli("host", "inventory", "--connection", "banana", expect=1)
    assert "'banana'" in cli.stderr


def test_lifecycle_on_each_database(tmp_path, db_url):  # noqa: F811
    """The same commands on SQLite, MariaDB and PostgreSQL ([database] connection)."""
    cli = Cli(tmp_path, extra_conf="[database]\nconnection = %s\n" % db_url)
    try:
        start = cli.json("pool", "list", *LIBVIRT)
        server = cli.json("server", "create", "vm1", "--flavor", "t4-small", *LIBVIRT)
        assert server["numa_node"] == 1
        assert [s["name"] for s in cli.json("server", "list", *LIBVIRT)] == ["vm1"]
        assert cli.json("host", "reconcile", *LIBVIRT) == []
        cli("server", "delete", "vm1", *LIBVIRT)
        assert cli.json("pool", "list", *LIBVIRT) == start
    finally:
        cli.close()


def test_a_refused_create_says_why_in_operator_terms(cli):
    cli("server", "create", "vm1", "--flavor", "t4-small", *LIBVIRT)
    before = cli.json("pool", "list", *LIBVIRT)
    cli("server", "create", "vm2", "--flavor", "t4-16q-x2", *LIBVIRT, expect=1)
    [line] = [ln for ln in cli.stderr.splitlines() if ln.startswith("ERROR")]
    for words in ("server vm2", "host localhost:libvirt", "flavor t4-16q-x2",
                  "alias t4-16q x2", "vGPU type nvidia-230", "can use 0 of 2",
                  "mdev@0000:41:00.0 numa=1 type=nvidia-230: vGPU type locked by another "
                  "type on this one-type GPU", "type=nvidia-222: vGPU type not among the "
                  "requested vgpu_types, 15 free", "3 other pool(s): vendor_id/product_id",
                  "'pci-vgpu flavor explain t4-16q-x2'", "nothing had changed"):
        assert words in line, words
    assert "request " not in line.split("alias")[0]  # no bare request UUID up front
    assert cli.json("pool", "list", *LIBVIRT) == before


@pytest.mark.parametrize("name", ["a/b", "tab\there", "new\nline", " lead", "trail ",
                                  "back\\slash", "\u202eevil", "a" * 256,
                                  "7f1c7a0e-5d0b-4c3e-9d7e-0c9a3f1b2c4d"])
def test_a_bad_server_name_is_refused_before_any_claim(cli, name):
    start = cli.json("pool", "list", *LIBVIRT)
    cli("server", "create", name, "--flavor", "t4-small", *LIBVIRT, expect=1)
    assert "Server name %r is not valid" % name in cli.stderr
    assert cli.json("pool", "list", *LIBVIRT) == start
    assert cli.driver("libvirt").list_vgpus() == []
