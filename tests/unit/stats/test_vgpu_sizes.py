"""Where type sizes come from: the driver's statement or its description."""

from __future__ import annotations

import typing as ty

import pytest

from pci_vgpu import capacity
from pci_vgpu import pool_devices as pd
from pci_vgpu import pool_errors
from pci_vgpu import vgpu_sizes
from tests.fixtures import inventory as inv

# What the real drivers write in mdev_supported_types/<type>/description.
GVTG_V5_4 = ("low_gm_size: 128MB\nhigh_gm_size: 512MB\nfence: 4\n"
             "resolution: 1920x1200\nweight: 4\n")
GVTG_V5_8 = ("low_gm_size: 64MB\nhigh_gm_size: 384MB\nfence: 4\n"
             "resolution: 1024x768\nweight: 2\n")
MBOCHS = "virtual display, %d MB video memory\n"


def _types(**descriptions: str) -> dict[str, dict[str, ty.Any]]:
    return {t: {"description": d, "max": 1} for t, d in descriptions.items()}


def test_gvtg_description() -> None:
    assert vgpu_sizes.gvtg_size(GVTG_V5_4) == {
        "aperture_mb": 128, "hidden_mb": 512, "fences": 4}
    assert vgpu_sizes.gvtg_size("low_gm_size: 128MB\n") is None


def test_mbochs_description() -> None:
    assert vgpu_sizes.mbochs_size(MBOCHS % 16) == {"video_mb": 16}
    assert vgpu_sizes.mbochs_size("virtual display, 1024x768 framebuffer") is None


def test_sizes_all_or_none() -> None:
    assert vgpu_sizes.sizes_of(_types(a=GVTG_V5_4, b=GVTG_V5_8)) == {
        "a": {"aperture_mb": 128, "hidden_mb": 512, "fences": 4},
        "b": {"aperture_mb": 64, "hidden_mb": 384, "fences": 4}}
    # one type the readers cannot measure: the 1/max rule for the GPU
    assert vgpu_sizes.sizes_of(_types(a=MBOCHS % 4, b="Dual-port serial")) is None
    assert vgpu_sizes.sizes_of({}) is None


def test_stated_sizes_win() -> None:
    types = _types(a=MBOCHS % 4, b=MBOCHS % 16)
    types["a"]["size"] = {"gpu_milli": 250}
    types["b"]["size"] = {"gpu_milli": 500}
    assert vgpu_sizes.sizes_of(types) == {"a": {"gpu_milli": 250},
                                          "b": {"gpu_milli": 500}}


def test_capacity_from_available() -> None:
    # mbochs count=100 with one large vGPU: 36 MB free -> 9 small, 2 medium
    sizes = {"s": {"video_mb": 4}, "m": {"video_mb": 16}, "l": {"video_mb": 64}}
    assert vgpu_sizes.capacity_from_available(
        sizes, {"s": 9, "m": 2, "l": 0}, {"l": 1}) == {"video_mb": 100}


def _mbochs_parent(count_mb: int) -> dict[str, ty.Any]:
    gpu = inv.create_gpu("0000:00:04.0", None, {"mbochs-small": count_mb // 4,
                                                "mbochs-large": count_mb // 64},
                         "budget", vendor="1234", product="1111")
    for t, mb in (("mbochs-small", 4), ("mbochs-large", 64)):
        gpu["vgpu_types"][t]["description"] = MBOCHS % mb
    return gpu


def test_device_sizes_from_description() -> None:
    state = pd.new_gpu_state(inv.to_devices([_mbochs_parent(100)])[0])
    assert (state.resources, state.capacity) == (("video_mb",), (100,))
    capacity.consume_instance(state, "mbochs-large")
    assert capacity.free_instances(state, "mbochs-small") == 9


def test_device_stated_capacity() -> None:
    gpu = _mbochs_parent(100)
    gpu["vgpu_capacity"] = {"video_mb": 130}
    state = pd.new_gpu_state(inv.to_devices([gpu])[0])
    assert state.capacity == (130,)


@pytest.mark.parametrize("value", ["[1, 2]", "not json", '"x"'])
def test_device_bad_capacity(value: str) -> None:
    dev = inv.to_devices([_mbochs_parent(100)])[0]
    dev.extra_info = dict(dev.extra_info, vgpu_capacity=value)
    with pytest.raises(pool_errors.InvalidVgpuSize) as exc:
        pd.new_gpu_state(dev)
    assert "0000:00:04.0" in str(exc.value) and value in str(exc.value)


def _pool_dicts() -> list[dict[str, ty.Any]]:
    from pci_vgpu import stats

    s = stats.PciDeviceStats()
    for dev in inv.to_devices([_mbochs_parent(100)]):
        s.add_device(dev)
    return [p for p in s if p.get("vgpu_type")]


def test_scheduler_rebuilds_the_budget() -> None:
    from pci_vgpu import pool

    gpu = pool.gpu_from_dicts("0000:00:04.0", _pool_dicts())
    assert (gpu.capacity, gpu.sizes) == ((100,), {"mbochs-large": (64,),
                                                  "mbochs-small": (4,)})


def test_pools_of_an_older_compute_use_one_over_max() -> None:
    from pci_vgpu import pool

    dicts = _pool_dicts()
    for d in dicts:
        del d["vgpu_size"], d["vgpu_capacity"]
    gpu = pool.gpu_from_dicts("0000:00:04.0", dicts)
    assert (gpu.resources, gpu.capacity) == ((capacity.SHARE,), (25,))


def test_bad_size_tag() -> None:
    from pci_vgpu import pool

    dicts = _pool_dicts()
    dicts[0]["vgpu_size"] = "video_mb:4"
    with pytest.raises(pool_errors.InvalidPoolTag) as exc:
        pool.gpu_from_dicts("0000:00:04.0", dicts)
    assert "vgpu_size" in str(exc.value) and "video_mb:4" in str(exc.value)
