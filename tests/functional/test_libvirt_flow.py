"""Whole flows on the libvirt driver (tiers 1 + 3), no tracker database.

    two-socket-t4-v100 host (libvirt test driver + pci_vgpu's seam)
      NUMA 0: V100 0000:06:00.0  nvidia-180 (V100-1Q) ...
      NUMA 1: T4   0000:41:00.0  nvidia-222 (T4-1B) ...

inventory -> PciDevice objects -> PciDeviceStats pools -> flavor with an
alias -> consume on the guest's NUMA node -> claim -> prepare_vgpu creates
the mdev -> spawn defines and starts the guest with the hostdev -> destroy
-> release_vgpu -> free: the host inventory and the pools are back to
where they started.  The same for an NVIDIA vendor-VFIO VF on a fake sysfs.
Tier 4 boots a guest on a real libvirtd + QEMU (tests.fixtures.libvirtd).
"""

from __future__ import annotations

import json

import libvirt
import pytest
from lxml import etree
from oslo_config import cfg

from pci_vgpu import conf as conf_mod
from pci_vgpu import devspec
from pci_vgpu import pool_errors
from pci_vgpu import request
from pci_vgpu import stats
from pci_vgpu.objects import pci_device
from pci_vgpu.virt import driver
from pci_vgpu.virt import exception
from pci_vgpu.virt.libvirt import driver as libvirt_driver
from pci_vgpu.virt.libvirt import hostdev
from pci_vgpu.virt.libvirt import testseam
from tests.fixtures import libvirtd as libvirtd_fixture
from tests.fixtures import sysfs as fake_sysfs

INSTANCE = "6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f"
ALIAS = json.dumps({"name": "vgpu-1q", "vgpu_types": ["nvidia-180", "nvidia-222"],
                    "numa_policy": "required"})
L40S_ALIAS = json.dumps({"name": "l40s-8q", "vgpu_types": "nvidia-1156"})
GPU_SPEC = '{"vendor_id": "10de"}'


@pytest.fixture
def conf(tmp_path):
    opts = cfg.ConfigOpts()
    conf_mod.register_opts(opts)
    opts([], project="pci_vgpu", default_config_files=[])
    opts.set_override("alias", [ALIAS, L40S_ALIAS], group="pci")
    opts.set_override("device_spec", [GPU_SPEC], group="pci")
    return opts


def _host(conf, name, sysfs=None):
    conn = testseam.TestDriverSeam(libvirt.open(libvirt_driver.host_uri(name)))
    return libvirt_driver.LibvirtDriver(
        conf=conf, dev_filter=devspec.Whitelist(conf.pci.device_spec),
        connection=conn, sysfs=sysfs.root if sysfs else None)


def _pools(drv):
    devices = [pci_device.PciDevice.create(None, d) for d in drv.get_pci_passthrough_devices()]
    pools = stats.PciDeviceStats()
    for dev in devices:
        pools.add_device(dev)
    return pools


def _counts(pools):
    return sorted(json.dumps(p, sort_keys=True, default=str) for p in pools)


def _requests(conf, alias):
    flavor = {"extra_specs": {"pci_passthrough:alias": "%s:1" % alias}}
    return request.get_pci_requests_from_flavor(flavor, conf).requests


@pytest.mark.parametrize("numa_node,gpu,vgpu_type", [
    (1, "0000:41:00.0", "nvidia-222"), (0, "0000:06:00.0", "nvidia-180")])
def test_mdev_flow_lands_on_the_guests_numa_node(conf, numa_node, gpu, vgpu_type):
    drv = _host(conf, "two-socket-t4-v100")
    start_inventory = drv.get_pci_passthrough_devices()
    pools = _pools(drv)
    start_pools = _counts(pools)

    [vgpu] = pools.consume_requests(_requests(conf, "vgpu-1q"), [{"id": numa_node}])
    assert (vgpu.dev_type, vgpu.parent_addr, vgpu.vgpu_type) == ("mdev", gpu, vgpu_type)
    vgpu.claim(INSTANCE)
    pools.update_device(vgpu)

    drv.prepare_vgpu(vgpu)
    [mdev] = [d for d in drv.get_pci_passthrough_devices() if d["dev_type"] == "mdev"]
    assert (mdev["mdev_uuid"], mdev["parent_addr"], mdev["numa_node"]) == (
        vgpu.mdev_uuid, gpu, numa_node)
    parent = next(d for d in drv.get_pci_passthrough_devices() if d["address"] == gpu)
    start_parent = next(d for d in start_inventory if d["address"] == gpu)
    assert parent["vgpu_types"][vgpu_type]["available"] == \
        start_parent["vgpu_types"][vgpu_type]["available"] - 1

    guest = driver.GuestSpec(uuid=INSTANCE, name="vm-%d" % numa_node, numa_node=numa_node)
    drv.spawn(guest, [vgpu])
    vgpu.allocate(INSTANCE)
    pools.update_device(vgpu)
    [info] = drv.list_guests()
    assert (info.running, info.mdev_uuids) == (True, (vgpu.mdev_uuid,))
    dom_xml = drv.conn.lookupByUUIDString(INSTANCE).XMLDesc(0)
    assert hostdev.parse_hostdevs(dom_xml) == [hostdev.mdev(vgpu.mdev_uuid)]
    nodeset = etree.fromstring(dom_xml.encode()).find("numatune/memory").get("nodeset")
    assert nodeset == str(numa_node)

    drv.destroy(INSTANCE)
    drv.release_vgpu(vgpu)
    vgpu.free(INSTANCE)
    pools.remove_device(vgpu)  # the mdev record goes with the mdev

    assert drv.get_pci_passthrough_devices() == start_inventory
    assert _counts(pools) == start_pools
    assert drv.list_guests() == [] and drv.list_vgpus() == []


def test_required_numa_policy_refuses_a_node_without_the_gpu(conf):
    pools = _pools(_host(conf, "two-socket-t4-v100"))
    before = _counts(pools)
    with pytest.raises(pool_errors.PciDeviceRequestFailed):
        pools.consume_requests(_requests(conf, "vgpu-1q"), [{"id": 7}])
    assert _counts(pools) == before


def test_nvidia_vf_flow_types_the_vf_and_untypes_it(conf, tmp_path):
    sysfs = fake_sysfs.FakeSysfs(str(tmp_path))
    for fn in range(4, 8):
        sysfs.add_nvidia_vf("0000:c1:00.%d" % fn, {"1155": "NVIDIA L40S-4Q",
                                                    "1156": "NVIDIA L40S-8Q"})
    drv = _host(conf, "nvidia-l40s-sriov", sysfs)
    start_inventory = drv.get_pci_passthrough_devices()
    pools = _pools(drv)
    start_pools = _counts(pools)

    [vf] = pools.consume_requests(_requests(conf, "l40s-8q"), [{"id": 1}])
    assert vf.dev_type == "type-VF" and vf.vgpu_type == "nvidia-1156"
    vf.claim(INSTANCE)
    pools.update_device(vf)
    drv.prepare_vgpu(vf)
    assert sysfs.current_type(vf.address) == "1156"

    drv.spawn(driver.GuestSpec(uuid=INSTANCE, name="vm-vf", numa_node=1), [vf])
    dom_xml = drv.conn.lookupByUUIDString(INSTANCE).XMLDesc(0)
    assert hostdev.parse_hostdevs(dom_xml) == [hostdev.pci(vf.address, managed=False)]
    sysfs.in_use.add(vf.address)
    with pytest.raises(exception.VgpuRemoveFailed, match="still in use"):
        drv.release_vgpu(vf)  # the kernel refuses while the guest runs
    assert sysfs.current_type(vf.address) == "1156"

    drv.destroy(INSTANCE)
    sysfs.in_use.discard(vf.address)
    drv.release_vgpu(vf)
    vf.free(INSTANCE)
    vf.set_vgpu_type(None)
    pools.update_device(vf)
    assert sysfs.current_type(vf.address) == "0"
    assert drv.get_pci_passthrough_devices() == start_inventory
    assert _counts(pools) == start_pools


# -- tier 4: a real libvirtd + QEMU ------------------------------------------------


@pytest.fixture(scope="module")
def libvirtd_uri():
    with libvirtd_fixture.running_libvirtd() as uri:
        yield uri


@pytest.mark.libvirtd
@pytest.mark.slow
def test_real_qemu_refuses_the_mdev_and_everything_rolls_back(conf, tmp_path, libvirtd_uri):
    """Boot a tiny guest on real QEMU; the mdev attach fails (no VFIO here)."""
    sysfs = fake_sysfs.FakeSysfs(str(tmp_path))
    sysfs.populate_parent("0000:41:00.0", "nvidia-222", 16, name="GRID T4-1B")
    pools = _pools(_host(conf, "two-socket-t4-v100"))  # the T4/V100 inventory
    start_pools = _counts(pools)
    conf.set_override("connection_uri", libvirtd_uri, group="libvirt")
    conf.set_override("mdev_backend", "sysfs", group="libvirt")
    drv = libvirt_driver.LibvirtDriver(conf=conf, sysfs=sysfs.root)
    guest = driver.GuestSpec(uuid=INSTANCE, name="pci-vgpu-tier4", memory_mb=64)
    drv.spawn(guest, [])
    try:
        assert [(g.name, g.running) for g in drv.list_guests()] == [("pci-vgpu-tier4", True)]
        [vgpu] = pools.consume_requests(_requests(conf, "vgpu-1q"), [{"id": 1}])
        vgpu.claim(INSTANCE)
        pools.update_device(vgpu)
        drv.prepare_vgpu(vgpu)
        assert list(sysfs.mdevs()) == [vgpu.mdev_uuid]
        with pytest.raises(exception.DeviceAttachFailed) as err:
            drv.attach_devices(INSTANCE, [vgpu])
        # The tracker's rollback, in reverse order: remove the mdev, free the claim.
        drv.release_vgpu(vgpu)
        vgpu.free(INSTANCE)
        pools.remove_device(vgpu)
        assert "requires VFIO support" in str(err.value)
        assert vgpu.mdev_uuid in str(err.value) and INSTANCE in str(err.value)
        assert sysfs.mdevs() == {}
        assert _counts(pools) == start_pools
        dom = drv.conn.lookupByUUIDString(INSTANCE)
        assert hostdev.parse_hostdevs(dom.XMLDesc(0)) == []
        assert hostdev.parse_hostdevs(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) == []
        assert drv.list_guests()[0].running
    finally:
        drv.destroy(INSTANCE)
    assert drv.list_guests() == []
