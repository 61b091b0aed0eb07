"""The whole vGPU flow on a (simulated) XenServer host.

inventory (XenServerDriver over the real XenAPI client) -> PciDevice objects
-> PciDeviceStats pools -> [pci] alias + flavor -> InstancePCIRequests ->
consume (claim) -> prepare_vgpu -> spawn (VGPU created, VM started) ->
inventory shows the vGPU and the lower capacity -> destroy + free -> the
host and the pools are back where they started.  The tracker (database) is
not involved: the test does its claim/free bookkeeping as the stats tests do.
"""

from __future__ import annotations

import json
import typing as ty

import pytest

from pci_vgpu import devspec
from pci_vgpu import pool_errors
from pci_vgpu import request
from pci_vgpu import stats
from pci_vgpu.objects.pci_device import PciDevice
from pci_vgpu.virt.driver import GuestSpec
from pci_vgpu.virt.xenserver.driver import XenServerDriver
from pci_vgpu.virt.xenserver.simulator import Simulator
from tests.fixtures import xapi

INSTANCE = "8c6c3e34-6a0a-4b5c-9a51-8d3c2b1f0a11"
ALIASES = [
    json.dumps({"name": "k240q", "vendor_id": "10de", "product_id": "11bf",
                "vgpu_types": "GRID K240Q"}),
    json.dumps({"name": "k2-any-big", "vgpu_types": ["GRID K260Q", "GRID K280Q"]}),
    json.dumps({"name": "t4-8q", "vendor_id": "10de", "product_id": "1eb8",
                "vgpu_types": "0001:nvidia,0x1eb8,0x12a2,0x1eb8,0x130c"}),
    json.dumps({"name": "m60-8q", "vgpu_types": "GRID M60-8Q"}),
    json.dumps({"name": "k2-whole", "vendor_id": "10de", "product_id": "11bf",
                "device_type": "type-PCI"}),
]


class Host:
    """One compute host: simulator, driver, pools built from its inventory."""

    def __init__(self, sim: Simulator, device_spec: list[str]) -> None:
        self.sim = sim
        self.conf = xapi.make_conf(sim.url, numa=["0000:0=0", "0000:8=1"])
        self.conf.set_override("alias", ALIASES, group="pci")
        self.driver = XenServerDriver(conf=self.conf, dev_filter=devspec.Whitelist(device_spec))
        self.stats = stats.PciDeviceStats(placement_policy="pack")
        self.devices: dict[str, PciDevice] = {}
        self.sync()

    def sync(self) -> list[dict[str, ty.Any]]:
        """Inventory -> objects -> pools (new devices added, known ones updated)."""
        dicts = self.driver.get_pci_passthrough_devices()
        for dev_dict in dicts:
            key = dev_dict["address"] or dev_dict["mdev_uuid"]
            if key in self.devices:
                self.devices[key].update_device(dev_dict)
                self.stats.update_device(self.devices[key])
                continue
            dev = PciDevice.create(None, dev_dict)
            dev.compute_node_id = 1
            self.devices[key] = dev
            self.stats.add_device(dev)
        return dicts

    def counts(self) -> dict[tuple[ty.Any, ...], int]:
        return {(p["address"], p.get("vgpu_type") or p["dev_type"]): p["count"] for p in self.stats}

    def boot(self, flavor_alias: str) -> list[PciDevice]:
        """Claim the flavor's devices and spawn the guest with them."""
        flavor = {"extra_specs": {"pci_passthrough:alias": flavor_alias}}
        requests = request.get_pci_requests_from_flavor(flavor, self.conf).requests
        picked = self.stats.consume_requests(requests)
        for dev in picked:
            dev.status, dev.instance_uuid = "claimed", INSTANCE
            self.stats.update_device(dev)
            if dev.mdev_uuid:
                self.devices[str(dev.mdev_uuid)] = dev
        for dev in picked:
            self.driver.prepare_vgpu(dev)
        self.driver.spawn(GuestSpec(uuid=INSTANCE, name="flow"), picked)
        return picked

    def delete(self, picked: list[PciDevice]) -> None:
        """Destroy the guest, release and free its devices."""
        self.driver.destroy(INSTANCE)
        for dev in picked:
            self.driver.release_vgpu(dev)
            dev.status, dev.instance_uuid = "available", None
            if dev.mdev_uuid:
                self.stats.remove_device(dev)
                del self.devices[str(dev.mdev_uuid)]
            else:
                self.stats.update_device(dev)
        self.sync()


@pytest.fixture
def k2_host() -> ty.Iterator[Host]:
    sim = xapi.start_simulator("grid-k2")
    host = Host(sim, ['{"vendor_id": "10de", "product_id": "11bf"}'])
    yield host
    host.driver.close()
    sim.stop()


@pytest.fixture
def mixed() -> ty.Iterator[Host]:
    sim = xapi.start_simulator("m60-t4")
    host = Host(sim, ['{"vendor_id": "10de"}'])
    yield host
    host.driver.close()
    sim.stop()


def test_vgpu_flow_returns_to_start(k2_host: Host) -> None:
    start_inventory, start_counts = k2_host.sync(), k2_host.counts()
    assert start_counts[("0000:08:00.0", "GRID K240Q")] == 4
    picked = k2_host.boot("k240q:1")
    [dev] = picked
    assert (dev.dev_type, dev.vgpu_type) == ("mdev", "GRID K240Q")
    # XAPI placed the VGPU on the pGPU the claim chose and the VM runs.
    assert xapi.resident_on(k2_host.sim, str(dev.mdev_uuid)) == dev.parent_addr
    [guest] = k2_host.driver.list_guests()
    assert guest.running and guest.mdev_uuids == (dev.mdev_uuid,)
    # The hypervisor's inventory agrees with the pools.
    inventory = k2_host.sync()
    [vgpu] = [d for d in inventory if d["dev_type"] == "mdev"]
    assert (vgpu["mdev_uuid"], vgpu["parent_addr"], vgpu["instance_uuid"]) == (
        dev.mdev_uuid, dev.parent_addr, INSTANCE)
    assert k2_host.counts()[(dev.parent_addr, "GRID K240Q")] == 3
    assert k2_host.counts()[(dev.parent_addr, "GRID K260Q")] == 0, "type lock"
    k2_host.delete(picked)
    assert k2_host.sync() == start_inventory
    assert k2_host.counts() == start_counts
    assert k2_host.sim.db.tables["VM"] == {} and k2_host.sim.db.tables["VGPU"] == {}


def test_request_by_type_list_and_identifier(k2_host: Host, mixed: Host) -> None:
    [big] = k2_host.boot("k2-any-big:1")
    assert big.vgpu_type in ("GRID K260Q", "GRID K280Q")
    assert xapi.resident_on(k2_host.sim, str(big.mdev_uuid)) == big.parent_addr
    picked = mixed.boot("t4-8q:2")
    assert {d.vgpu_type for d in picked} == {"GRID T4-8Q"}, "pools are keyed by model name"
    vgpus = {v.mdev_uuid: v for v in mixed.driver.list_vgpus()}
    assert set(vgpus) == {str(d.mdev_uuid) for d in picked}
    assert {v.vgpu_type for v in vgpus.values()} == {"GRID T4-8Q"}


def test_whole_gpu_flow(k2_host: Host) -> None:
    start = k2_host.counts()
    picked = k2_host.boot("k2-whole:1")
    [gpu] = picked
    assert gpu.address in [g.pci_addresses[0] for g in k2_host.driver.list_guests()]
    k2_host.sync()
    assert k2_host.counts()[(gpu.address, "GRID K200")] == 0
    k2_host.delete(picked)
    assert k2_host.counts() == start


def test_exhausted_host_is_refused_before_xapi_is_touched(mixed: Host) -> None:
    with pytest.raises(pool_errors.PciDeviceRequestFailed):
        mixed.boot("m60-8q:3")
    assert mixed.sim.db.tables["VM"] == {}
    assert not [m for m, _ in mixed.sim.calls if m.endswith(".create")]
