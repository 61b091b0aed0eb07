"""Unit and property tests of the pure capacity rules (pci_vgpu.capacity)."""

from __future__ import annotations

import fractions

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


def test_foreign_vgpus_stop_creation_but_not_reuse() -> None:
    gpu = _gvt()
    capacity.consume_instance(gpu, "i915-GVTg_V5_8")
    capacity.release_instance(gpu, "i915-GVTg_V5_8", destroy=False)
    gpu.foreign = 1
    assert capacity.free_instances(gpu, "i915-GVTg_V5_8") == 1  # the spare
    assert capacity.free_instances(gpu, "i915-GVTg_V5_2") == 0
    assert "not offered" in capacity.explain_no_capacity(gpu, "i915-GVTg_V5_2")
    assert gpu.copy() == gpu
