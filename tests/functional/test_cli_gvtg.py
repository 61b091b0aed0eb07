"""An Intel GVT-g host: budget sharing and a guest pci-vgpu does not track.

The bundled ``intel-gvtg`` test host::

     [ UHD 630 0000:00:02.0 8086:3e92 ]  i915-GVTg_V5_4 (max 4), i915-GVTg_V5_8 (max 8)
        mdev 7d3c5ae2-... (V5_4) used by domain gvt-guest, made outside pci-vgpu
"""

from __future__ import annotations

import typing as ty

import pytest

from pci_vgpu.virt.libvirt import driver as libvirt_driver
from tests.functional.cli_runner import Cli
from tests.functional.cli_runner import pools_by_type

CONF = "\n".join([
    "[libvirt]",
    "connection_uri = %s" % libvirt_driver.host_uri("intel-gvtg"),
    "[pci]",
    'device_spec = {"vendor_id": "8086", "product_id": "3e92"}',
    'alias = {"name": "gvt8", "vendor_id": "8086", "product_id": "3e92", '
    '"vgpu_types": "i915-GVTg_V5_8"}',
    'alias = {"name": "gvt4", "vendor_id": "8086", "product_id": "3e92", '
    '"vgpu_types": "i915-GVTg_V5_4"}',
    ""])
IGPU = "0000:00:02.0"
FOREIGN_MDEV = "7d3c5ae2-4f11-4b8e-9d55-2a1f0e6b7c90"


@pytest.fixture
def cli(tmp_path: ty.Any) -> ty.Iterator[Cli]:
    runner = Cli(tmp_path, extra_conf=CONF, bundled=False)
    yield runner
    runner.close()


def test_existing_mdev_is_listed_with_its_owner(cli):
    devices = {d["mdev_uuid"] or d["address"]: d for d in cli.json("host", "inventory")}
    assert devices[FOREIGN_MDEV]["parent_addr"] == IGPU
    assert devices[FOREIGN_MDEV]["instance_uuid"] == "0b6f1c1e-2d3a-4c5b-8e7f-9a0b1c2d3e4f"
    assert devices[IGPU]["vgpu_types"]["i915-GVTg_V5_8"]["available"] == 6


def test_budget_sharing_shrinks_every_type(cli):
    before = pools_by_type(cli.json("pool", "list"))
    cli("server", "create", "g1", "--flavor", "pci_passthrough:alias=gvt8:2")
    after = pools_by_type(cli.json("pool", "list"))
    assert after[(IGPU, "i915-GVTg_V5_8")] == before[(IGPU, "i915-GVTg_V5_8")] - 2
    assert after[(IGPU, "i915-GVTg_V5_4")] == before[(IGPU, "i915-GVTg_V5_4")] - 1
    cli("server", "delete", "g1")
    assert pools_by_type(cli.json("pool", "list")) == before


def test_reconcile_reports_the_untracked_guest_and_never_touches_it(cli):
    [finding] = cli.json("host", "reconcile", "--apply", expect=1)
    assert (finding["kind"], finding["subject"], finding["fixed"]) == (
        "untracked-guest", "0b6f1c1e-2d3a-4c5b-8e7f-9a0b1c2d3e4f", False)
    assert FOREIGN_MDEV in finding["detail"]
    assert FOREIGN_MDEV in {v.mdev_uuid for v in cli.driver("libvirt").list_vgpus()}


def test_a_vgpu_used_by_an_untracked_guest_is_never_given_away(cli):
    before = cli.json("pool", "list")
    # The foreign V5_4 mdev takes a quarter of the iGPU: three V5_4 remain,
    # all to be created (the foreign one is not a spare).
    assert pools_by_type(before)[(IGPU, "i915-GVTg_V5_4")] == 3
    server = cli.json("server", "create", "g4", "--flavor", "pci_passthrough:alias=gvt4:1")
    [vgpu] = server["devices"]
    assert vgpu["mdev_uuid"] != FOREIGN_MDEV
    drv = cli.driver("libvirt")
    assert {FOREIGN_MDEV, vgpu["mdev_uuid"]} <= {v.mdev_uuid for v in drv.list_vgpus()}
    guests = {g.name: g for g in drv.list_guests()}
    assert guests["gvt-guest"].mdev_uuids == (FOREIGN_MDEV,)
    assert guests["g4"].mdev_uuids == (vgpu["mdev_uuid"],)
    cli("server", "delete", "g4")
    assert cli.json("pool", "list") == before
    assert FOREIGN_MDEV in {v.mdev_uuid for v in drv.list_vgpus()}
