"""PciDevice 1.8: construction from device dicts, vGPU accessors, versions."""

import copy

import pytest
from oslo_serialization import jsonutils

from pci_vgpu import exception
from pci_vgpu import objects
from pci_vgpu.objects import fields

MDEV_UUID = "4b20d080-1b54-4048-85b3-a6a62d165c01"

fake_gpu = {
    "dev_id": "pci_0000_41_00_0",
    "address": "0000:41:00.0",
    "vendor_id": "10de",
    "product_id": "1eb8",
    "numa_node": 1,
    "label": "label_10de_1eb8",
    "dev_type": "type-PCI",
    "vgpu_types": {"nvidia-222": {"name": "GRID T4-1B", "description": "",
                                  "device_api": "vfio-pci", "available": 16,
                                  "max": 16, "identifier": None}},
    "vgpu_sharing": "one-type",
    "vgpu_backend": "mdev",
    "iommu_group": 42,
}

fake_mdev = {
    "dev_id": "mdev_4b20d080_1b54_4048_85b3_a6a62d165c01_0000_41_00_0",
    "address": None,
    "vendor_id": "10de",
    "product_id": "1eb8",
    "numa_node": 1,
    "label": "label_10de_1eb8",
    "dev_type": "mdev",
    "parent_addr": "0000:41:00.0",
    "mdev_uuid": MDEV_UUID,
    "mdev_type": "nvidia-222",
    "instance_uuid": None,
}

fake_vf = {
    "address": "0000:81:00.1", "vendor_id": "8086", "product_id": "1515",
    "dev_type": "type-VF", "parent_addr": "0000:81:00.0", "numa_node": 0,
    "label": "label_8086_1515", "dev_id": "pci_0000_81_00_1",
}


def _create(dev_dict):
    return objects.PciDevice.create(None, copy.deepcopy(dev_dict))


def test_create_puts_non_field_keys_in_extra_info_as_strings():
    gpu = _create(fake_gpu)
    assert gpu.status == fields.PciDeviceStatus.AVAILABLE
    assert gpu.extra_info["vgpu_sharing"] == "one-type"
    assert gpu.extra_info["iommu_group"] == "42"
    assert jsonutils.loads(gpu.extra_info["vgpu_types"]) == \
        fake_gpu["vgpu_types"]
    assert gpu.parent_addr is None
    assert gpu.mdev_uuid is None


def test_create_gives_each_record_its_own_uuid_distinct_from_mdev_uuid():
    a, b = _create(fake_mdev), _create(fake_mdev)
    assert a.uuid != b.uuid
    assert a.mdev_uuid == b.mdev_uuid == MDEV_UUID
    assert a.uuid != a.mdev_uuid


def test_create_ignores_status_and_owner_from_the_hypervisor():
    dev = _create(dict(fake_mdev, status="allocated", instance_uuid="x",
                       id=7))
    assert dev.status == "available"
    assert dev.instance_uuid is None
    assert not dev.obj_attr_is_set("id")


def test_mdev_uuid_is_canonicalised():
    dev = _create(dict(fake_mdev, mdev_uuid=MDEV_UUID.upper()))
    assert dev.mdev_uuid == MDEV_UUID


@pytest.mark.parametrize("key,value,words", [
    ("mdev_uuid", "not-a-uuid", "mdev_uuid"),
    ("dev_type", "type-GPU", "type-GPU"),
    ("status", None, None),
])
def test_bad_field_value_is_a_typed_error(key, value, words):
    if words is None:
        # status from the hypervisor is dropped, never an error
        assert _create(dict(fake_mdev, **{key: value})).status == "available"
        return
    with pytest.raises(exception.PciDeviceInvalidField) as err:
        _create(dict(fake_mdev, **{key: value}))
    assert words in str(err.value)
    assert repr(value) in str(err.value)


def test_update_device_drops_managed_tag_no_longer_reported():
    dev = _create(dict(fake_vf, managed="yes"))
    assert dev.extra_info["managed"] == "yes"
    dev.obj_reset_changes()
    dev.update_device(dict(fake_vf))
    assert "managed" not in dev.extra_info
    assert "extra_info" in dev.obj_what_changed()


def test_update_device_without_change_marks_nothing_changed():
    dev = _create(fake_gpu)
    dev.obj_reset_changes()
    dev.update_device(copy.deepcopy(fake_gpu))
    assert dev.obj_what_changed() == set()


def test_vgpu_accessors():
    gpu, mdev, vf = _create(fake_gpu), _create(fake_mdev), _create(fake_vf)
    assert gpu.is_vgpu_capable and not mdev.is_vgpu_capable
    assert not vf.is_vgpu_capable
    assert gpu.vgpu_types == fake_gpu["vgpu_types"]
    assert (gpu.vgpu_sharing, gpu.vgpu_backend) == ("one-type", "mdev")
    assert mdev.vgpu_type == "nvidia-222"
    assert vf.vgpu_type is None and vf.vgpu_types == {}
    vf.obj_reset_changes()
    vf.set_vgpu_type("nvidia-556")
    assert vf.vgpu_type == "nvidia-556"
    assert "extra_info" in vf.obj_what_changed()
    vf.set_vgpu_type(None)
    assert vf.vgpu_type is None


@pytest.mark.parametrize("raw", ['{"nvidia-222": ', '["nvidia-222"]'])
def test_malformed_vgpu_types_is_a_typed_error_naming_it(raw):
    from pci_vgpu import pool_errors

    gpu = _create(dict(fake_gpu, vgpu_types=raw))
    with pytest.raises(pool_errors.InvalidVgpuTypes) as err:
        gpu.vgpu_types
    assert "0000:41:00.0" in str(err.value) and repr(raw) in str(err.value)


def test_vgpu_type_prefers_assigned_type_over_mdev_type():
    mdev = _create(dict(fake_mdev, vgpu_type="nvidia-223"))
    assert mdev.vgpu_type == "nvidia-223"


def test_mdev_without_address_round_trips_through_primitive():
    mdev = _create(fake_mdev)
    mdev.id = 3
    mdev.compute_node_id = 1
    primitive = mdev.obj_to_primitive()
    assert primitive["pci_vgpu_object.data"]["address"] is None
    back = objects.PciDevice.obj_from_primitive(primitive)
    assert back == mdev
    assert back.address is None
    assert back.mdev_uuid == MDEV_UUID
    assert back.dev_type == "mdev"
    assert back.uuid == mdev.uuid


def test_equality_ignores_timestamps_but_not_fields():
    a = _create(fake_gpu)
    b = objects.PciDevice.obj_from_primitive(a.obj_to_primitive())
    b.created_at = None
    assert a == b
    b.numa_node = 0
    assert a != b


def test_ident_names_mdev_by_uuid_and_parent():
    assert _create(fake_gpu).ident == "0000:41:00.0"
    assert _create(fake_mdev).ident == "mdev %s on 0000:41:00.0" % MDEV_UUID


# -- obj_make_compatible ---------------------------------------------------


def _downgrade(dev, version):
    return dev.obj_to_primitive(target_version=version)[
        "pci_vgpu_object.data"]


def test_mdev_downgrade_to_1_7_raises_naming_the_device():
    mdev = _create(fake_mdev)
    with pytest.raises(exception.ObjectDowngradeRefused) as err:
        mdev.obj_to_primitive(target_version="1.7")
    assert MDEV_UUID in str(err.value)
    assert "1.7" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_addressless_device_downgrade_raises_even_if_not_mdev():
    dev = _create(dict(fake_mdev, dev_type="type-PCI"))
    with pytest.raises(exception.ObjectDowngradeRefused, match="no PCI"):
        dev.obj_to_primitive(target_version="1.7")


def test_mdev_uuid_on_a_pci_device_refuses_downgrade():
    dev = _create(dict(fake_gpu, mdev_uuid=MDEV_UUID))
    with pytest.raises(exception.ObjectDowngradeRefused, match=MDEV_UUID):
        dev.obj_to_primitive(target_version="1.7")


def test_plain_device_downgrades_to_1_7_losslessly():
    gpu = _create(fake_gpu)
    data = _downgrade(gpu, "1.7")
    assert "mdev_uuid" not in data
    full = gpu.obj_to_primitive()["pci_vgpu_object.data"]
    del full["mdev_uuid"]
    assert data == full


def test_downgrade_1_5_drops_uuid():
    assert "uuid" in _downgrade(_create(fake_gpu), "1.6")
    data = _downgrade(_create(fake_gpu), "1.5")
    assert "uuid" not in data and data["address"] == "0000:41:00.0"


def test_vdpa_downgrade_to_1_6_raises():
    dev = _create(dict(fake_vf, dev_type="vdpa"))
    assert _downgrade(dev, "1.7")["dev_type"] == "vdpa"
    with pytest.raises(exception.ObjectDowngradeRefused, match="vdpa"):
        _downgrade(dev, "1.6")


@pytest.mark.parametrize("status", ["unclaimable", "unavailable"])
def test_new_statuses_downgrade_to_1_4_raise(status):
    dev = _create(fake_vf)
    dev.status = status
    assert _downgrade(dev, "1.5")["status"] == status
    with pytest.raises(exception.ObjectDowngradeRefused, match=status):
        _downgrade(dev, "1.4")


def test_downgrade_1_3_moves_parent_addr_to_phys_function():
    data = _downgrade(_create(fake_vf), "1.3")
    assert "parent_addr" not in data
    assert data["extra_info"]["phys_function"] == "0000:81:00.0"


def test_downgrade_1_3_without_parent_leaves_extra_info_alone():
    data = _downgrade(_create(fake_gpu), "1.3")
    assert "parent_addr" not in data
    assert "phys_function" not in data["extra_info"]


def test_downgrade_1_1_drops_request_id():
    dev = _create(fake_vf)
    dev.request_id = "6bd38ba2-3b5c-4a3f-9ac3-42c8a2a7c5b7"
    assert "request_id" in _downgrade(dev, "1.2")
    assert "request_id" not in _downgrade(dev, "1.1")


def test_list_downgrade_goes_through_each_device():
    devices = objects.PciDeviceList(objects=[_create(fake_gpu)])
    primitive = devices.obj_to_primitive(target_version="1.3")
    child = primitive["pci_vgpu_object.data"]["objects"][0]
    assert child["pci_vgpu_object.version"] == "1.7"
    with_mdev = objects.PciDeviceList(objects=[_create(fake_mdev)])
    with pytest.raises(exception.ObjectDowngradeRefused):
        with_mdev.obj_to_primitive(target_version="1.3")


def test_empty_list_defaults_to_no_objects():
    assert list(objects.PciDeviceList()) == []
