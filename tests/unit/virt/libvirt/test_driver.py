"""LibvirtDriver on the real test driver with the seam (tiers 1 and 3)."""

from __future__ import annotations

import libvirt
import pytest
from stevedore import driver as stevedore_driver

from pci_vgpu.virt import driver
from pci_vgpu import exception as pci_exception
from pci_vgpu.virt import exception
from pci_vgpu.virt.libvirt import driver as libvirt_driver
from pci_vgpu.virt.libvirt import hostdev
from pci_vgpu.virt.libvirt import testseam
from tests.unit.virt.libvirt.conftest import (GUEST, T4, UUID1, UUID2, V100,
                                              mdev_device)

SPEC = driver.GuestSpec(uuid=GUEST, name="vm-1", numa_node=1)


def _mdevs(drv):
    return sorted((v.mdev_uuid, v.vgpu_type, v.instance_uuid) for v in drv.list_vgpus())


def _error(code, text):
    return testseam.libvirt_error(code, text)


def test_loaded_by_stevedore_with_the_bundled_host(conf):
    mgr = stevedore_driver.DriverManager("pci_vgpu.virt_drivers", "libvirt",
                                         invoke_on_load=True, invoke_kwds={"conf": conf})
    info = mgr.driver.describe()
    assert info.name == "libvirt" and "two-socket-t4-v100.xml" in info.connection
    assert {d["address"] for d in mgr.driver.get_pci_passthrough_devices()} >= {T4, V100}


def test_unreachable_hypervisor(conf):
    conf.set_override("connection_uri", "test:///nonexistent/host.xml", group="libvirt")
    with pytest.raises(exception.HypervisorUnavailable, match="nonexistent"):
        libvirt_driver.LibvirtDriver(conf=conf)


def test_spawn_with_mdev_then_destroy(make_driver):
    drv = make_driver()
    vgpu = mdev_device()
    drv.prepare_vgpu(vgpu)
    drv.prepare_vgpu(vgpu)  # idempotent
    drv.spawn(SPEC, [vgpu])
    [guest] = drv.list_guests()
    assert (guest.uuid, guest.running, guest.mdev_uuids) == (GUEST, True, (UUID1,))
    assert _mdevs(drv) == [(UUID1, "nvidia-222", GUEST)]
    drv.destroy(GUEST)
    drv.destroy(GUEST)  # already gone
    drv.release_vgpu(vgpu)
    drv.release_vgpu(vgpu)  # already gone
    assert drv.list_guests() == [] and _mdevs(drv) == []


def test_uuid_reused_with_another_type_is_refused(make_driver):
    drv = make_driver()
    drv.prepare_vgpu(mdev_device())
    with pytest.raises(exception.VgpuCreateFailed, match="already exists as type nvidia-222"):
        drv.prepare_vgpu(mdev_device(vgpu_type="nvidia-223"))


def test_libvirt_failing_to_list_devices_is_a_typed_vgpu_error(make_driver):
    drv = make_driver()
    vgpu = mdev_device()
    drv.conn.fail_next("listAllDevices", _error(libvirt.VIR_ERR_INTERNAL_ERROR, "udev gone"))
    with pytest.raises(exception.VgpuCreateFailed, match="%s.*udev gone" % UUID1):
        drv.prepare_vgpu(vgpu)
    drv.prepare_vgpu(vgpu)
    drv.conn.fail_next("listAllDevices", _error(libvirt.VIR_ERR_INTERNAL_ERROR, "udev gone"))
    with pytest.raises(exception.VgpuRemoveFailed, match="%s.*udev gone" % UUID1):
        drv.release_vgpu(vgpu)
    assert _mdevs(drv) == [(UUID1, "nvidia-222", None)]


def test_failed_start_leaves_no_guest(make_driver):
    drv = make_driver()
    drv.conn.fail_next("domainCreate", _error(libvirt.VIR_ERR_INTERNAL_ERROR, "qemu died"))
    with pytest.raises(exception.GuestSpawnFailed, match="vm-1.*qemu died"):
        drv.spawn(SPEC, [])
    assert drv.list_guests() == []


def test_failed_start_and_failed_undefine_keeps_the_start_error(make_driver):
    drv = make_driver()
    drv.conn.fail_next("domainCreate", _error(libvirt.VIR_ERR_INTERNAL_ERROR, "qemu died"))
    drv.conn.fail_next("domainUndefine", _error(libvirt.VIR_ERR_INTERNAL_ERROR, "disk busy"))
    with pytest.raises(exception.GuestSpawnFailed,
                       match="vm-1: .*qemu died.*still defined.*disk busy"):
        drv.spawn(SPEC, [])
    assert [g.uuid for g in drv.list_guests()] == [GUEST]


def test_hot_attach_and_detach_live_and_config(make_driver):
    drv = make_driver()
    vgpus = [mdev_device(), mdev_device(parent=V100, vgpu_type="nvidia-180", mdev_uuid=UUID2)]
    for vgpu in vgpus:
        drv.prepare_vgpu(vgpu)
    drv.spawn(SPEC, [])
    drv.attach_devices(GUEST, vgpus)
    assert drv.list_guests()[0].mdev_uuids == (UUID1, UUID2)
    dom = drv.conn.lookupByUUIDString(GUEST)
    assert len(hostdev.parse_hostdevs(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))) == 2
    drv.detach_devices(GUEST, vgpus)
    assert drv.list_guests()[0].mdev_uuids == ()
    assert "mdev" not in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def test_attach_failing_part_way_detaches_what_it_attached(make_driver):
    drv = make_driver()
    vgpus = [mdev_device(), mdev_device(parent=V100, vgpu_type="nvidia-180", mdev_uuid=UUID2)]
    for vgpu in vgpus:
        drv.prepare_vgpu(vgpu)
    drv.spawn(SPEC, [])
    drv.conn.fail_next("attachDeviceFlags", _error(
        libvirt.VIR_ERR_CONFIG_UNSUPPORTED, "unsupported configuration: no VFIO"), after=1)
    with pytest.raises(exception.DeviceAttachFailed) as err:
        drv.attach_devices(GUEST, vgpus)
    assert UUID2 in str(err.value) and "no VFIO" in str(err.value)
    assert drv.list_guests()[0].mdev_uuids == ()
    dom = drv.conn.lookupByUUIDString(GUEST)
    assert "mdev" not in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def test_attach_of_a_missing_mdev_fails(make_driver):
    drv = make_driver()
    drv.spawn(SPEC, [])
    with pytest.raises(exception.DeviceAttachFailed, match="not found"):
        drv.attach_devices(GUEST, [mdev_device()])


def test_hot_plug_without_seam_is_not_supported(conf):
    conn = libvirt.open(libvirt_driver.host_uri("two-socket-t4-v100"))
    drv = libvirt_driver.LibvirtDriver(conf=conf, connection=conn)
    drv.spawn(SPEC, [])
    with pytest.raises(exception.HotPlugNotSupported, match="not supported"):
        drv.attach_devices(GUEST, [mdev_device()])


def test_detach_failure_reports_what_is_still_attached(make_driver):
    drv = make_driver()
    vgpus = [mdev_device(), mdev_device(parent=V100, vgpu_type="nvidia-180", mdev_uuid=UUID2)]
    for vgpu in vgpus:
        drv.prepare_vgpu(vgpu)
    drv.spawn(SPEC, vgpus)
    drv.conn.fail_next("detachDeviceFlags", _error(
        libvirt.VIR_ERR_OPERATION_FAILED, "guest refused"), after=1)
    with pytest.raises(exception.DeviceDetachFailed) as err:
        drv.detach_devices(GUEST, vgpus)
    assert err.value.still_attached == ["mdev %s" % UUID2]
    assert drv.list_guests()[0].mdev_uuids == (UUID2,)


def test_bad_uuid_is_refused_before_any_libvirt_call(make_driver):
    drv = make_driver()
    vgpu = mdev_device()
    vgpu.extra_info = {"vgpu_type": "../etc"}
    with pytest.raises(pci_exception.InvalidVgpuTypeName):
        drv.prepare_vgpu(vgpu)
    assert _mdevs(drv) == []


def test_credentials_never_appear_in_messages():
    assert libvirt_driver.safe_uri("qemu+tls://admin:s3cret@host/system") == \
        "qemu+tls://host/system"
