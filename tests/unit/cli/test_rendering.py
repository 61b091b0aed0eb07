"""Pure pieces of the CLI: columns, pool rows, explain rows, config checks."""

from __future__ import annotations

import json

from pci_vgpu.cli import check
from pci_vgpu.cli import columns
from pci_vgpu.cli import flavor
from pci_vgpu.cli import pool
from pci_vgpu.objects import pci_device
from pci_vgpu.pool_filters import PoolVerdict
from pci_vgpu.pool_filters import RequestExplanation

TYPES = {"nvidia-222": {"name": "GRID T4-1B", "description": "", "device_api": "vfio-pci",
                        "available": 15, "max": 16, "identifier": None}}
T4 = {"dev_id": "pci_0000_41_00_0", "address": "0000:41:00.0", "vendor_id": "10de",
      "product_id": "1eb8", "numa_node": 1, "label": "label_10de_1eb8",
      "dev_type": "type-PCI", "vgpu_types": TYPES}


def test_vgpu_types_column_is_readable_and_structured():
    col = columns.VgpuTypesColumn(TYPES)
    assert col.human_readable() == "nvidia-222 GRID T4-1B 15/16"
    assert col.machine_readable() == {"nvidia-222": {
        "available": 15, "max": 16, "name": "GRID T4-1B", "device_api": "vfio-pci"}}


def test_device_column_of_an_mdev():
    dev = pci_device.PciDevice.create(None, {
        "dev_id": "m", "address": None, "parent_addr": "0000:41:00.0", "vendor_id": "10de",
        "product_id": "1eb8", "numa_node": 1, "label": "l", "dev_type": "mdev",
        "mdev_uuid": "0b7a2f3c-1111-4222-8333-444455556666"})
    dev.set_vgpu_type("nvidia-222")
    col = columns.DevicesColumn([dev])
    assert col.human_readable() == ("0b7a2f3c-1111-4222-8333-444455556666 "
                                    "(nvidia-222, on 0000:41:00.0, NUMA 1)")
    [obj] = col.machine_readable()
    assert obj["address"] is None and obj["status"] == "available"


def test_whole_gpu_pool_row_counts_members():
    gpu = pci_device.PciDevice.create(None, dict(T4, vgpu_types=json.dumps(TYPES)))
    gpu.status = "unavailable"
    row = pool.pool_row({"vendor_id": "10de", "product_id": "1eb8", "numa_node": 1,
                         "dev_type": "type-PCI", "address": "0000:41:00.0", "count": 0,
                         "vgpu_gpu": "0000:41:00.0"}, [gpu])
    free, used, total = row[7:10]
    assert (free, used, total) == (0, 0, 1)


def test_explain_rows_end_with_the_outcome():
    exp = RequestExplanation("r1", 2, 1, False, [
        PoolVerdict("pool-a", 1, None), PoolVerdict("pool-b", 4, "NUMA affinity policy")])

    class Req:
        request_id, alias_name, count = "r1", "t4", 2

    class Result:
        requests = [exp]

    rows = flavor.explain_rows([Req()], Result(), [])
    assert [r[3] for r in rows] == ["usable", "NUMA affinity policy", "does not fit"]
    assert rows[-1][4] == "2 wanted, 1 usable" and rows[0][0] == "t4 x2"


def test_alias_with_types_the_gpu_lacks_is_an_error():
    spec = {"vendor_id": "10de", "product_id": "1eb8", "vgpu_types": '["nvidia-999"]'}
    [row] = check.check_alias("bad", [spec], [T4])
    assert row[0] == "error" and "nvidia-999" in row[3] and "GRID T4-1B" in row[3]


def test_alias_by_type_name_is_fine_and_unknown_device_is_a_warning():
    by_name = {"vendor_id": "10de", "product_id": "1eb8", "vgpu_types": '["GRID T4-1B"]'}
    assert check.check_alias("ok", [by_name], [T4]) == []
    [row] = check.check_alias("amd", [{"vendor_id": "1002", "product_id": "6860"}], [T4])
    assert row[0] == "warning"
