"""ComputeService: the real tracker on SQLite, the no-op driver as hypervisor.

Host drawn by the fixtures::

     NUMA 0                              NUMA 1
     +------------------------+          +------------------------+
     | V100 0000:06:00.0      |          | T4   0000:41:00.0      |
     | 10de:1db4 one-type     |          | 10de:1eb8 one-type     |
     |  nvidia-181 x8         |          |  nvidia-222 x2         |
     +------------------------+          +------------------------+

The no-op driver is pci_vgpu's reference driver (in-memory host); failures
are injected by subclasses that fail the way a hypervisor would, at one call.
"""

from __future__ import annotations

import json
import typing as ty
import uuid

import pytest
from oslo_config import cfg

from pci_vgpu import conf as pci_conf
from pci_vgpu import devspec
from pci_vgpu import manager
from pci_vgpu import reconcile
from pci_vgpu import request
from pci_vgpu import service as svc
from pci_vgpu import service_tracker
from pci_vgpu.db import api as db_api
from pci_vgpu.virt import exception as virt_exc
from pci_vgpu.virt import noop
from tests.fixtures.db import sqlite_db  # noqa: F401  (pytest fixture)


def gpu(address: str, product: str, node: int, type_id: str, name: str,
        count: int) -> dict[str, ty.Any]:
    return {
        "dev_id": "pci_" + address.replace(":", "_").replace(".", "_"),
        "address": address, "parent_addr": None, "vendor_id": "10de",
        "product_id": product, "numa_node": node,
        "label": "label_10de_%s" % product, "dev_type": "type-PCI",
        "vgpu_sharing": "one-type", "vgpu_backend": "mdev",
        "vgpu_types": {type_id: {"name": name, "description": "", "device_api": "vfio-pci",
                                 "available": count, "max": count, "identifier": None}},
    }


HOST = [gpu("0000:06:00.0", "1db4", 0, "nvidia-181", "GRID V100-2Q", 8),
        gpu("0000:41:00.0", "1eb8", 1, "nvidia-222", "GRID T4-1B", 2)]
ALIASES = [
    json.dumps({"name": "t4", "vendor_id": "10de", "product_id": "1eb8",
                "vgpu_types": "nvidia-222"}),
    json.dumps({"name": "v100", "vendor_id": "10de", "product_id": "1db4",
                "vgpu_types": "GRID V100-2Q", "numa_policy": "required"}),
]


class FailingSpawn(noop.NoopDriver):
    def spawn(self, guest: ty.Any, devices: ty.Any) -> None:
        raise virt_exc.GuestSpawnFailed(driver="noop", guest=guest.name,
                                        reason="domain XML rejected")


class FailingSecondVgpu(noop.NoopDriver):
    def prepare_vgpu(self, device: ty.Any) -> None:
        if len(self.list_vgpus()) == 1:
            raise virt_exc.VgpuCreateFailed(
                driver="noop", mdev_uuid=device.mdev_uuid, vgpu_type=device.vgpu_type,
                parent_addr=device.parent_addr, reason="write error")
        super().prepare_vgpu(device)


@pytest.fixture
def conf() -> cfg.ConfigOpts:
    c = cfg.ConfigOpts()
    pci_conf.register_opts(c)
    c([])
    c.set_override("alias", ALIASES, group="pci")
    c.set_override("device_spec", ['{"vendor_id": "10de"}'], group="pci")
    return c


@pytest.fixture
def database(sqlite_db: db_api.Database) -> db_api.Database:  # noqa: F811
    return sqlite_db


def make_service(database: db_api.Database, conf: cfg.ConfigOpts,
                 driver_cls: type[noop.NoopDriver] = noop.NoopDriver,
                 **kwargs: ty.Any) -> svc.ComputeService:
    tracker = manager.PciDevTracker(database, "host1",
                                    dev_filter=devspec.Whitelist(conf.pci.device_spec))
    service = svc.ComputeService(driver_cls(devices=HOST, **kwargs),
                                 service_tracker.ServiceTracker(tracker))
    service.sync_inventory()
    return service


def reqs(conf: cfg.ConfigOpts, spec: str) -> ty.Any:
    return request.get_pci_requests_from_flavor(
        {"extra_specs": {"pci_passthrough:alias": spec}}, conf)


def free_of(service: svc.ComputeService, vgpu_type: str) -> int:
    return sum(p["count"] for p in service.tracker.stats() if p.get("vgpu_type") == vgpu_type)


@pytest.fixture
def service(database: db_api.Database, conf: cfg.ConfigOpts) -> svc.ComputeService:
    return make_service(database, conf)


def test_create_places_guest_on_the_devices_numa_node(service, conf):
    server = service.create_server("vm1", reqs(conf, "t4:1"))
    assert server.numa_node == 1 and server.running is True
    [dev] = server.devices
    assert (dev.status, dev.vgpu_type, dev.parent_addr) == ("allocated", "nvidia-222",
                                                           "0000:41:00.0")
    assert [v.mdev_uuid for v in service.driver.list_vgpus()] == [dev.mdev_uuid]
    assert service.driver.list_guests()[0].mdev_uuids == (dev.mdev_uuid,)
    assert free_of(service, "nvidia-222") == 1


def test_required_numa_policy_refuses_the_other_node(service, conf):
    with pytest.raises(svc.ServerOperationFailed, match="claiming devices"):
        service.create_server("vm1", reqs(conf, "v100:1"), numa_node=1)
    server = service.create_server("vm1", reqs(conf, "v100:1"), numa_node=0)
    assert server.numa_node == 0


def test_capacity_exhaustion_changes_nothing(service, conf):
    service.create_server("vm1", reqs(conf, "t4:2"))
    with pytest.raises(svc.ServerOperationFailed) as err:
        service.create_server("vm2", reqs(conf, "t4:1"))
    assert "vm2" in str(err.value) and "nothing had changed" in str(err.value)
    assert [s.name for s in service.list_servers()] == ["vm1"]
    assert len(service.driver.list_vgpus()) == 2


def test_failed_spawn_rolls_back_vgpus_and_claim(database, conf):
    service = make_service(database, conf, FailingSpawn)
    with pytest.raises(svc.ServerOperationFailed) as err:
        service.create_server("vm1", reqs(conf, "t4:2"))
    message = str(err.value)
    assert "starting the guest" in message and "domain XML rejected" in message
    assert "freed the claim" in message
    assert isinstance(err.value.__cause__, virt_exc.GuestSpawnFailed)
    assert service.driver.list_vgpus() == [] and service.list_servers() == []
    assert free_of(service, "nvidia-222") == 2


def test_failed_second_vgpu_removes_the_first(database, conf):
    service = make_service(database, conf, FailingSecondVgpu)
    with pytest.raises(svc.ServerOperationFailed, match="creating vGPUs"):
        service.create_server("vm1", reqs(conf, "t4:2"))
    assert service.driver.list_vgpus() == []
    assert service.list_servers() == []


def test_name_in_use_and_bad_numa_node(service, conf):
    service.create_server("vm1", reqs(conf, "t4:1"))
    with pytest.raises(svc.ServerNameInUse, match="vm1"):
        service.create_server("vm1", reqs(conf, "t4:1"))
    with pytest.raises(svc.InvalidNumaNode, match="-1"):
        service.create_server("vm2", reqs(conf, "t4:1"), numa_node=-1)


def test_delete_restores_everything(service, conf):
    before = sorted(json.dumps(p, sort_keys=True) for p in service.tracker.stats())
    service.create_server("vm1", reqs(conf, "t4:1"))
    service.delete_server("vm1")
    after = sorted(json.dumps(p, sort_keys=True) for p in service.tracker.stats())
    assert after == before
    assert service.driver.list_guests() == [] and service.driver.list_vgpus() == []
    with pytest.raises(svc.ServerNotFound, match="vm1"):
        service.get_server("vm1")


def test_attach_then_detach(service, conf):
    service.create_server("vm1", reqs(conf, "t4:1"))
    [added] = service.attach("vm1", reqs(conf, "t4:1"))
    server = service.get_server("vm1")
    assert {d.mdev_uuid for d in server.devices} >= {added.mdev_uuid}
    assert len(service.driver.list_guests()[0].mdev_uuids) == 2
    service.detach("vm1", added.mdev_uuid)
    assert len(service.get_server("vm1").devices) == 1
    assert free_of(service, "nvidia-222") == 1


def test_attach_to_a_server_deleted_meanwhile_names_it(service, conf):
    # Another process deleted the server between get_server and the claim.
    service.create_server("vm1", reqs(conf, "t4:1"))
    gone = "0b5a3b4e-5c0e-4f3e-9a63-1d2c3b4a5f60"
    with pytest.raises(svc.ServerNotFound, match="%s.*known: vm1" % gone):
        service.tracker.claim_more(gone, reqs(conf, "t4:1"), None)
    assert free_of(service, "nvidia-222") == 1


def test_detach_of_a_flavor_device_is_refused_before_touching_the_guest(service, conf):
    [dev] = service.create_server("vm1", reqs(conf, "t4:1")).devices
    with pytest.raises(service_tracker.DeviceNotDetachable, match=dev.mdev_uuid):
        service.detach("vm1", dev.mdev_uuid)
    assert service.driver.list_guests()[0].mdev_uuids == (dev.mdev_uuid,)


def test_failed_attach_is_rolled_back(database, conf):
    service = make_service(database, conf, hot_plug=False)
    service.create_server("vm1", reqs(conf, "t4:1"))
    with pytest.raises(svc.ServerOperationFailed) as err:
        service.attach("vm1", reqs(conf, "t4:1"))
    assert "attaching devices" in str(err.value) and "freed the new claim" in str(err.value)
    assert len(service.get_server("vm1").devices) == 1
    assert len(service.driver.list_vgpus()) == 1
    assert free_of(service, "nvidia-222") == 1


def test_reconcile_finds_and_fixes_leak_orphan_and_missing(service, conf):
    leaked = service.create_server("leaky", reqs(conf, "t4:1"))
    kept = service.create_server("kept", reqs(conf, "v100:1"), numa_node=0)
    service.driver.destroy(leaked.uuid)                  # guest vanished
    orphan = service_tracker.attachment_uuid(kept.uuid, str(uuid.uuid4()))
    service.driver.prepare_vgpu(reconcile.vgpu_device(noop.driver.VgpuInfo(
        mdev_uuid=orphan, parent_addr="0000:06:00.0", vgpu_type="nvidia-181", backend="mdev")))
    service.driver.release_vgpu(kept.devices[0])        # mdev lost (host reboot)

    report = {(f.kind, f.subject) for f in service.reconcile()}
    assert report == {("leaked-claim", leaked.uuid), ("orphan-vgpu", orphan),
                      ("missing-vgpu", kept.devices[0].mdev_uuid)}
    fixed = service.reconcile(apply=True)
    assert all(f.fixed for f in fixed)
    assert service.reconcile() == []
    assert [s.name for s in service.list_servers()] == ["kept"]
    assert {v.mdev_uuid for v in service.driver.list_vgpus()} == {kept.devices[0].mdev_uuid}


@pytest.mark.parametrize("name", ["", "   ", "a" * 256, "tab\there"])
def test_bad_server_name_is_refused_before_any_claim(service, conf, name):
    with pytest.raises(svc.InvalidServerName) as err:
        service.create_server(name, reqs(conf, "t4:1"))
    assert repr(name) in str(err.value)
    assert service.list_servers() == [] and free_of(service, "nvidia-222") == 2


@pytest.mark.parametrize("kwargs, what", [({"memory_mb": 0}, "memory_mb"),
                                          ({"vcpus": -1}, "vcpus")])
def test_bad_guest_size_is_refused(service, conf, kwargs, what):
    with pytest.raises(svc.InvalidGuestSize, match=what):
        service.create_server("vm1", reqs(conf, "t4:1"), **kwargs)
    assert service.list_servers() == []


def test_a_flavor_without_devices_is_refused(service, conf):
    no_devices = request.get_pci_requests_from_flavor({"extra_specs": {}}, conf)
    with pytest.raises(svc.NoDevicesRequested, match="pci_passthrough:alias"):
        service.create_server("vm1", no_devices)
    service.create_server("vm1", reqs(conf, "t4:1"))
    with pytest.raises(svc.NoDevicesRequested, match="vm1"):
        service.attach("vm1", no_devices)
    assert service.driver.list_guests()[0].name == "vm1"


class StuckVgpu(noop.NoopDriver):
    """The kernel refuses to remove an mdev (still open by QEMU)."""

    def release_vgpu(self, device: ty.Any) -> None:
        raise virt_exc.VgpuRemoveFailed(driver="noop", mdev_uuid=device.mdev_uuid,
                                        parent_addr=device.parent_addr, reason="device busy")


def test_failed_vgpu_removal_keeps_the_devices_recorded(database, conf):
    service = make_service(database, conf, StuckVgpu)
    server = service.create_server("vm1", reqs(conf, "t4:1"))
    with pytest.raises(svc.ServerOperationFailed) as err:
        service.delete_server("vm1")
    assert "removing vGPUs" in str(err.value) and "device busy" in str(err.value)
    assert "still records" in str(err.value)
    # the guest is gone, the vGPU is not: the database must not hand it out
    assert service.driver.list_guests() == []
    assert [d.mdev_uuid for d in service.get_server("vm1").devices] == \
        [server.devices[0].mdev_uuid]
    assert free_of(service, "nvidia-222") == 1
    [finding] = service.reconcile()
    assert finding.kind == "leaked-claim"
