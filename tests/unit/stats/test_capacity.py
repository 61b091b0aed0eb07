"""Unit and property tests of the pure capacity rules (pci_vgpu.capacity)."""

from __future__ import annotations

import fractions
import typing as ty

import hypothesis
from hypothesis import strategies as st
import pytest

from pci_vgpu import capacity
from pci_vgpu import pool_errors


def _nvidia() -> capacity.GpuState:
    return capacity.new_gpu_state(
        "0000:41:00.0", capacity.ONE_TYPE, {"nvidia-222": 4, "nvidia-223": 2},
        whole=capacity.WHOLE_FREE)


def _gvt() -> capacity.GpuState:
    return capacity.new_gpu_state(
        "0000:00:02.0", capacity.BUDGET,
        {"i915-GVTg_V5_2": 2, "i915-GVTg_V5_4": 4, "i915-GVTg_V5_8": 8})


class TestValidation:
    def test_unknown_sharing_names_value_and_allowed(self) -> None:
        with pytest.raises(pool_errors.InvalidVgpuSharing) as exc:
            capacity.new_gpu_state("0000:01:00.0", "mixed", {"t": 1})
        assert "'mixed'" in str(exc.value)
        assert "one-type, budget" in str(exc.value)

    @pytest.mark.parametrize("bad", [0, -1, "4", 2.0, True])
    def test_bad_max_rejected(self, bad: object) -> None:
        with pytest.raises(pool_errors.InvalidVgpuMaxInstances) as exc:
            capacity.new_gpu_state("0000:01:00.0", "budget", {"t": bad})
        assert repr(bad) in str(exc.value)

    def test_bad_policy(self) -> None:
        with pytest.raises(pool_errors.InvalidPlacementPolicy) as exc:
            capacity.validate_policy("random")
        assert "'random'" in str(exc.value) and "pack, spread" in str(exc.value)


class TestOneType:
    def test_empty_gpu_offers_every_type(self) -> None:
        gpu = _nvidia()
        assert capacity.free_instances(gpu, "nvidia-222") == 4
        assert capacity.free_instances(gpu, "nvidia-223") == 2
        assert capacity.free_instances(gpu, "nvidia-999") == 0

    def test_type_lock_until_empty(self) -> None:
        gpu = _nvidia()
        assert capacity.consume_instance(gpu, "nvidia-223") is False
        assert capacity.free_instances(gpu, "nvidia-222") == 0
        assert capacity.locking_type(gpu, "nvidia-222") == "nvidia-223"
        assert capacity.free_instances(gpu, "nvidia-223") == 1
        capacity.release_instance(gpu, "nvidia-223", destroy=True)
        assert capacity.free_instances(gpu, "nvidia-222") == 4

    def test_spare_mdev_keeps_lock_and_is_reused(self) -> None:
        gpu = _nvidia()
        capacity.consume_instance(gpu, "nvidia-222")
        capacity.release_instance(gpu, "nvidia-222", destroy=False)
        # the free mdev still exists: still locked, and reused first
        assert capacity.free_instances(gpu, "nvidia-223") == 0
        assert capacity.spare(gpu, "nvidia-222") == 1
        assert capacity.consume_instance(gpu, "nvidia-222") is True
        assert gpu.existing["nvidia-222"] == 1

    def test_capacity_exceeded_says_why(self) -> None:
        gpu = _nvidia()
        capacity.consume_instance(gpu, "nvidia-222")
        with pytest.raises(pool_errors.VgpuCapacityExceeded) as exc:
            capacity.consume_instance(gpu, "nvidia-223")
        assert "nvidia-222" in str(exc.value) and "0000:41:00.0" in str(exc.value)

    def test_unsupported_type(self) -> None:
        with pytest.raises(pool_errors.VgpuTypeNotSupported) as exc:
            capacity.consume_instance(_nvidia(), "nvidia-1")
        assert "nvidia-222, nvidia-223" in str(exc.value)

    def test_release_underflow(self) -> None:
        with pytest.raises(pool_errors.VgpuReleaseUnderflow):
            capacity.release_instance(_nvidia(), "nvidia-222", destroy=True)


class TestBudget:
    def test_types_mix_by_fraction(self) -> None:
        gpu = _gvt()
        capacity.consume_instance(gpu, "i915-GVTg_V5_2")  # half the GPU
        assert capacity.free_instances(gpu, "i915-GVTg_V5_4") == 2
        assert capacity.free_instances(gpu, "i915-GVTg_V5_8") == 4
        capacity.consume_instance(gpu, "i915-GVTg_V5_4")  # +1/4
        assert capacity.free_instances(gpu, "i915-GVTg_V5_2") == 0
        assert capacity.free_instances(gpu, "i915-GVTg_V5_8") == 2
        assert capacity.occupied(gpu) == fractions.Fraction(3, 4)

    def test_exact_fractions_fill_to_one(self) -> None:
        gpu = capacity.new_gpu_state("0000:00:02.0", capacity.BUDGET,
                                     {"a": 3, "b": 6})
        for _ in range(2):
            capacity.consume_instance(gpu, "a")
        assert capacity.free_instances(gpu, "b") == 2  # 1/3 left of 6ths
        capacity.consume_instance(gpu, "b")
        capacity.consume_instance(gpu, "b")
        assert capacity.occupied(gpu) == 1
        assert capacity.free_instances(gpu, "a") == 0


def _mbochs(count_mb: int) -> capacity.GpuState:
    """The kernel's mbochs sample: 4/16/64 MB types, one ``count`` budget."""
    sizes = {"mbochs-small": 4, "mbochs-medium": 16, "mbochs-large": 64}
    return capacity.new_gpu_state(
        "mbochs", capacity.BUDGET, {t: count_mb // n for t, n in sizes.items()},
        sizes={t: {"video_mb": n} for t, n in sizes.items()},
        capacity={"video_mb": count_mb})


def _free(gpu: capacity.GpuState) -> dict[str, int]:
    return {t: capacity.free_instances(gpu, t) for t in sorted(gpu.max_instances)}


class TestSizedBudget:
    def test_sizes_that_divide_the_budget(self) -> None:
        # measured on the real driver: count=128 -> 32/8/2, one large -> 16/4/1
        gpu = _mbochs(128)
        assert _free(gpu) == {"mbochs-large": 2, "mbochs-medium": 8, "mbochs-small": 32}
        capacity.consume_instance(gpu, "mbochs-large")
        assert _free(gpu) == {"mbochs-large": 1, "mbochs-medium": 4, "mbochs-small": 16}
        capacity.consume_instance(gpu, "mbochs-large")
        assert _free(gpu) == {"mbochs-large": 0, "mbochs-medium": 0, "mbochs-small": 0}

    def test_sizes_that_do_not_divide_the_budget(self) -> None:
        gpu = _mbochs(100)
        assert _free(gpu) == {"mbochs-large": 1, "mbochs-medium": 6, "mbochs-small": 25}
        capacity.consume_instance(gpu, "mbochs-large")  # 36 MB left
        assert _free(gpu) == {"mbochs-large": 0, "mbochs-medium": 2, "mbochs-small": 9}
        # the 1/max rule would call the GPU full after one large (max 1)
        legacy = capacity.new_gpu_state("mbochs", capacity.BUDGET, gpu.max_instances)
        capacity.consume_instance(legacy, "mbochs-large")
        assert capacity.free_instances(legacy, "mbochs-small") == 0

    def test_shares_of_a_gpu(self) -> None:
        # a GPU-sharing scheduler's model: 1000 milli-GPU, any share
        gpu = capacity.new_gpu_state(
            "0000:41:00.0", capacity.BUDGET, {"s470": 2, "s320": 3, "s230": 4},
            sizes={"s470": {"gpu_milli": 470}, "s320": {"gpu_milli": 320},
                   "s230": {"gpu_milli": 230}},
            capacity={"gpu_milli": 1000})
        capacity.consume_instance(gpu, "s470")
        capacity.consume_instance(gpu, "s320")
        assert _free(gpu) == {"s230": 0, "s320": 0, "s470": 0}  # 210 left
        capacity.release_instance(gpu, "s320", destroy=True)
        assert _free(gpu) == {"s230": 2, "s320": 1, "s470": 1}
        assert capacity.occupied(gpu) == fractions.Fraction(47, 100)

    def test_max_caps_the_budget(self) -> None:
        gpu = capacity.new_gpu_state(
            "g", capacity.BUDGET, {"a": 2, "b": 8},
            sizes={"a": {"mem": 1}, "b": {"mem": 1}}, capacity={"mem": 8})
        assert _free(gpu) == {"a": 2, "b": 8}
        capacity.consume_instance(gpu, "a")
        capacity.consume_instance(gpu, "a")
        assert _free(gpu) == {"a": 0, "b": 6}

    def test_several_resources_the_scarcest_binds(self) -> None:
        # GVT-g: aperture, hidden memory and fences; here fences run out first
        sizes = {"V5_8": {"aperture_mb": 64, "hidden_mb": 384, "fences": 4},
                 "V5_4": {"aperture_mb": 128, "hidden_mb": 512, "fences": 4}}
        gpu = capacity.new_gpu_state(
            "0000:00:02.0", capacity.BUDGET, {"V5_8": 3, "V5_4": 2}, sizes=sizes,
            capacity={"aperture_mb": 448, "hidden_mb": 3072, "fences": 12})
        capacity.consume_instance(gpu, "V5_4")
        capacity.consume_instance(gpu, "V5_8")
        # aperture 256 left (room for 2 V5_4), but 4 fences: one more of either
        assert _free(gpu) == {"V5_4": 1, "V5_8": 1}
        assert "0 fences" in capacity.explain_no_capacity(
            _take(gpu, "V5_8"), "V5_4")

    def test_capacity_derived_from_max(self) -> None:
        gpu = capacity.new_gpu_state(
            "mbochs", capacity.BUDGET, {"s": 25, "m": 6, "l": 1},
            sizes={"s": {"video_mb": 4}, "m": {"video_mb": 16}, "l": {"video_mb": 64}})
        assert gpu.capacity == (100,)  # the budget the max values imply
        assert _free(gpu) == {"l": 1, "m": 6, "s": 25}

    def test_one_over_max_is_the_integer_rule(self) -> None:
        gpu = _gvt()
        assert (gpu.resources, gpu.capacity) == ((capacity.SHARE,), (8,))
        assert gpu.sizes == {"i915-GVTg_V5_2": (4,), "i915-GVTg_V5_4": (2,),
                             "i915-GVTg_V5_8": (1,)}

    @pytest.mark.parametrize("sizes,total,word", [
        ({"a": {"mem": 2}}, None, "type b"),            # a type without size
        ({"a": {"mem": -1}, "b": {"mem": 1}}, None, "integer >= 0"),
        ({"a": {"mem": 0}, "b": {"mem": 1}}, None, "not all 0"),
        ({"a": {"mem": 1.5}, "b": {"mem": 1}}, None, "integer >= 0"),
        ({"a": {"mem": 2}, "b": {"mem": 1}}, {"mem": 0}, "integer >= 1"),
        ({"a": {"mem": 2}, "b": {"mem": 1}}, {"disk": 4}, "resources the sizes name"),
        ({"a": {"mem": 9}, "b": {"mem": 1}}, {"mem": 8}, "larger than"),
    ])
    def test_bad_sizes_name_type_and_value(
            self, sizes: dict[str, ty.Any], total: ty.Any, word: str) -> None:
        with pytest.raises(pool_errors.InvalidVgpuSize) as exc:
            capacity.new_gpu_state("0000:01:00.0", capacity.BUDGET,
                                   {"a": 1, "b": 2}, sizes=sizes, capacity=total)
        assert "0000:01:00.0" in str(exc.value) and word in str(exc.value)

    def test_capacity_without_sizes_refused(self) -> None:
        with pytest.raises(pool_errors.InvalidVgpuSize):
            capacity.new_gpu_state("g", capacity.BUDGET, {"a": 1},
                                   capacity={"mem": 4})


def _take(gpu: capacity.GpuState, type_id: str) -> capacity.GpuState:
    capacity.consume_instance(gpu, type_id)
    return gpu


class TestWholeGpu:
    def test_whole_use_blocks_vgpus(self) -> None:
        gpu = _nvidia()
        gpu.whole = capacity.WHOLE_USED
        assert capacity.free_instances(gpu, "nvidia-222") == 0
        assert "whole" in capacity.explain_no_capacity(gpu, "nvidia-222")

    def test_vgpu_in_use_blocks_whole(self) -> None:
        gpu = _nvidia()
        assert capacity.whole_assignable(gpu)
        capacity.consume_instance(gpu, "nvidia-222")
        assert not capacity.whole_assignable(gpu)
        capacity.release_instance(gpu, "nvidia-222", destroy=False)
        assert capacity.whole_assignable(gpu)

    def test_blocked_gpu_still_hosts_vgpus(self) -> None:
        gpu = _nvidia()
        gpu.whole = capacity.WHOLE_BLOCKED
        assert not capacity.whole_assignable(gpu)
        assert capacity.free_instances(gpu, "nvidia-222") == 4


class TestPolicy:
    def _three(self) -> list[capacity.GpuState]:
        gpus = []
        for i, n in enumerate([1, 3, 0]):
            gpu = capacity.new_gpu_state("0000:%02x:00.0" % (0x41 + i),
                                         capacity.ONE_TYPE, {"t": 4})
            for _ in range(n):
                capacity.consume_instance(gpu, "t")
            gpus.append(gpu)
        return gpus

    def test_pack_fullest_first(self) -> None:
        order = capacity.order_for_policy(self._three(), capacity.PACK)
        assert [g.address for g in order] == [
            "0000:42:00.0", "0000:41:00.0", "0000:43:00.0"]

    def test_spread_emptiest_first(self) -> None:
        order = capacity.order_for_policy(self._three(), capacity.SPREAD)
        assert [g.address for g in order] == [
            "0000:43:00.0", "0000:41:00.0", "0000:42:00.0"]

    def test_ties_broken_by_address(self) -> None:
        gpus = self._three()
        for g in gpus:
            g.existing.clear()
            g.in_use.clear()
        for policy in capacity.PLACEMENT_POLICIES:
            order = capacity.order_for_policy(reversed(gpus), policy)
            assert [g.address for g in order] == sorted(g.address for g in gpus)


_types = st.dictionaries(st.sampled_from(["a", "b", "c"]),
                         st.integers(1, 8), min_size=1)


@hypothesis.given(sharing=st.sampled_from(capacity.SHARING_MODES),
                  maxes=_types,
                  ops=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]),
                                         st.booleans()), max_size=40))
def test_random_consumption_never_exceeds_capacity(
        sharing: str, maxes: dict[str, int],
        ops: list[tuple[str, bool]]) -> None:
    """Consume (or release, keeping a spare) at random; invariants hold."""
    gpu = capacity.new_gpu_state("0000:41:00.0", sharing, maxes)
    for type_id, take in ops:
        if take and capacity.free_instances(gpu, type_id) > 0:
            capacity.consume_instance(gpu, type_id)
        elif not take and gpu.in_use.get(type_id, 0):
            capacity.release_instance(gpu, type_id, destroy=False)
        assert capacity.occupied(gpu) <= 1
        for t, n in gpu.existing.items():
            assert gpu.in_use.get(t, 0) <= n <= maxes[t]
        if sharing == capacity.ONE_TYPE:
            assert len([t for t, n in gpu.existing.items() if n]) <= 1


@hypothesis.given(maxes=_types)
def test_one_over_max_equals_the_fraction_rule(maxes: dict[str, int]) -> None:
    """The integer budget of the 1/max rule gives what fractions give."""
    gpu = capacity.new_gpu_state("0000:41:00.0", capacity.BUDGET, maxes)
    for type_id in sorted(maxes) * 8:
        left = 1 - sum((fractions.Fraction(n, maxes[t])
                        for t, n in gpu.existing.items()), fractions.Fraction(0))
        for t in maxes:
            assert capacity.free_instances(gpu, t) == int(left * maxes[t])
        if capacity.free_instances(gpu, type_id):
            capacity.consume_instance(gpu, type_id)


@hypothesis.given(sizes=st.dictionaries(st.sampled_from(["a", "b", "c"]),
                                        st.integers(1, 9), min_size=1),
                  total=st.integers(9, 40),
                  ops=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]),
                                         st.booleans()), max_size=40))
def test_random_sized_budget(sizes: dict[str, int], total: int,
                             ops: list[tuple[str, bool]]) -> None:
    """Free instances are exactly what fits in what is left, never more."""
    gpu = capacity.new_gpu_state(
        "0000:41:00.0", capacity.BUDGET, {t: total // n for t, n in sizes.items()},
        sizes={t: {"mem": n} for t, n in sizes.items()}, capacity={"mem": total})
    for type_id, take in ops:
        if type_id not in sizes:
            continue
        if take and capacity.free_instances(gpu, type_id) > 0:
            capacity.consume_instance(gpu, type_id)
        elif not take and gpu.in_use.get(type_id, 0):
            capacity.release_instance(gpu, type_id, destroy=True)
        left = total - sum(n * sizes[t] for t, n in gpu.existing.items())
        assert left >= 0
        for t, n in sizes.items():
            assert capacity.free_instances(gpu, t) == left // n


def test_foreign_vgpus_stop_creation_but_not_reuse() -> None:
    gpu = _gvt()
    capacity.consume_instance(gpu, "i915-GVTg_V5_8")
    capacity.release_instance(gpu, "i915-GVTg_V5_8", destroy=False)
    gpu.foreign = 1
    assert capacity.free_instances(gpu, "i915-GVTg_V5_8") == 1  # the spare
    assert capacity.free_instances(gpu, "i915-GVTg_V5_2") == 0
    assert "not offered" in capacity.explain_no_capacity(gpu, "i915-GVTg_V5_2")
    assert gpu.copy() == gpu
