"""PciDevicePool(List): flat dicts at the boundary, tags for extra keys."""

from pci_vgpu import objects
from pci_vgpu.objects import pci_device_pool

fake_pool = {"vendor_id": "10de", "product_id": "1eb8", "numa_node": 1,
             "count": 4, "dev_type": "mdev", "vgpu_type": "nvidia-222",
             "address": "0000:41:00.0"}


def test_from_dict_to_dict_round_trip_keeps_extra_keys_as_tags():
    pool = objects.PciDevicePool.from_dict(fake_pool)
    assert pool.tags == {"dev_type": "mdev", "vgpu_type": "nvidia-222",
                         "address": "0000:41:00.0"}
    assert pool.to_dict() == fake_pool


def test_numa_node_defaults_to_none():
    pool = objects.PciDevicePool.from_dict(
        {"vendor_id": "v", "product_id": "p", "count": 1})
    assert pool.numa_node is None and pool.tags == {}


def test_downgrade_1_0_drops_numa_node():
    pool = objects.PciDevicePool.from_dict(fake_pool)
    data = pool.obj_to_primitive(target_version="1.0")["pci_vgpu_object.data"]
    assert "numa_node" not in data
    assert "numa_node" in pool.obj_to_primitive()["pci_vgpu_object.data"]


def test_from_pci_stats_accepts_every_stored_shape():
    pools = objects.PciDevicePoolList(
        objects=[objects.PciDevicePool.from_dict(fake_pool)])
    as_primitive = pools.obj_to_primitive()
    for stored in (as_primitive, [fake_pool], fake_pool,
                   '[{"vendor_id": "10de", "product_id": "1eb8", '
                   '"numa_node": 1, "count": 4, "dev_type": "mdev", '
                   '"vgpu_type": "nvidia-222", "address": "0000:41:00.0"}]'):
        result = pci_device_pool.from_pci_stats(stored)
        assert [p.to_dict() for p in result] == [fake_pool]


def test_from_pci_stats_unparsable_or_empty_gives_no_pools():
    for stored in ("not json", None, "", [], {}):
        assert list(pci_device_pool.from_pci_stats(stored)) == []
