"""Hosts as they are met in production: already full, or reporting nonsense.

``full-t4-host.xml`` starts with two T4-1B mdevs (one used by a guest
pci-vgpu did not make), so the other T4 types read 0 available and their
maximum cannot be derived; ``hostile-host.xml`` reports refused type ids,
NUMA node 999999, a duplicate PCI address and an mdev without a parent.
Both drawn in their files (``tests/data/cli``).
"""

from __future__ import annotations

import pathlib
import typing as ty

import pytest

from tests.functional.cli_runner import Cli

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "cli"
FULL = ["--connection", "test://%s" % (DATA / "full-t4-host.xml")]
HOSTILE = ["--connection", "test://%s" % (DATA / "hostile-host.xml")]
LEGACY_MDEV = "5a1e6f3c-0c6e-4f2b-9a55-1d2e3f4a5b61"
SPARE_MDEV = "5a1e6f3c-0c6e-4f2b-9a55-1d2e3f4a5b62"
LEGACY_GUEST = "2c1b0a99-8877-4665-9443-3221100ffeed"


@pytest.fixture
def cli(tmp_path: ty.Any) -> ty.Iterator[Cli]:
    runner = Cli(tmp_path)
    yield runner
    runner.close()


def test_a_host_that_starts_full_works_for_every_command(cli):
    [gpu, *mdevs] = cli.json("host", "inventory", *FULL)
    # T4-1B: 14 available + 2 existing = 16 x 1 GiB; the types it locks out
    # read 0 available, their maximum scaled by framebuffer (2 GiB, 16 GiB)
    assert {t: (e["available"], e["max"]) for t, e in gpu["vgpu_types"].items()} == {
        "nvidia-222": (14, 16), "nvidia-223": (0, 8), "nvidia-230": (0, 1)}
    assert {m["mdev_uuid"]: m["status"] for m in mdevs} == {
        LEGACY_MDEV: "unavailable", SPARE_MDEV: "available"}
    # nothing allocated owns either mdev (the guest's is listed, never removed)
    assert sorted(r["subject"] for r in cli.json("host", "init", *FULL)) == [
        LEGACY_MDEV, SPARE_MDEV]
    cli("config", "check", *FULL)
    cli("flavor", "explain", "t4-small", *FULL)
    pools = {p["vgpu_type"]: p["free"] for p in cli.json("pool", "list", "--refresh", *FULL)}
    assert (pools["nvidia-222"], pools["nvidia-223"]) == (15, 0)  # 14 + the spare mdev
    server = cli.json("server", "create", "vm1", "--flavor", "t4-small", *FULL)
    assert server["devices"][0]["mdev_uuid"] == SPARE_MDEV  # a free mdev is reused first
    report = cli.json("host", "reconcile", *FULL, expect=1)
    assert [(f["kind"], f["subject"]) for f in report] == [("untracked-guest", LEGACY_GUEST)]
    cli("server", "delete", "vm1", *FULL)


def test_types_of_a_full_gpu_come_back_once_it_is_empty(cli):
    cli("host", "inventory", *FULL)
    drv = cli.driver(FULL[1])
    drv.destroy(LEGACY_GUEST)
    cli.json("host", "reconcile", "--apply", *FULL)  # removes both mdevs
    [gpu] = cli.json("host", "inventory", *FULL)
    assert gpu["vgpu_types"]["nvidia-222"] == {"available": 16, "max": 16,
                                               "name": "GRID T4-1B", "device_api": "vfio-pci"}


def test_a_hostile_inventory_is_cleaned_with_a_warning_per_entry(cli):
    devices = cli.json("host", "inventory", *HOSTILE)
    assert [(d["address"], d["numa_node"], sorted(d["vgpu_types"])) for d in devices] == [
        ("0000:41:00.0", 1, ["nvidia-222"])]
    warnings = cli.stderr
    for words in (repr("nvidia-2<22&'"), repr("../../../etc/passwd"), "999999",
                  "pci_0000_41_00_0_dup", "0c0ffee0-0000-4000-8000-000000000001"):
        assert words in warnings, words
    assert "Traceback" not in warnings
    assert warnings.count("999999") == 1  # the inventory is read once
    assert [p["vgpu_type"] for p in cli.json("pool", "list", *HOSTILE)] == [None, "nvidia-222"]
