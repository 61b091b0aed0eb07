"""Unit tests of PciDeviceStats: one test (or a few) per rule of issue 4."""

from __future__ import annotations

import types
import typing as ty

import pytest

from pci_vgpu import pool_errors
from pci_vgpu import stats
from pci_vgpu.objects import pci_device_pool
from tests.fixtures import inventory as inv
from tests.unit.stats.conftest import build
from tests.unit.stats.conftest import counts

GPU0, GPU1, IGPU = "0000:41:00.0", "0000:81:00.0", "0000:00:02.0"
T4 = {"vendor_id": inv.NVIDIA, "product_id": inv.T4}


def claim(s: stats.PciDeviceStats, devs: list[ty.Any],
          status: str = "claimed") -> None:
    """What the tracker does after consume_requests: claim, then tell us."""
    for d in devs:
        d.status = status
        d.instance_uuid = "8c6c3e34-6a0a-4b5c-9a51-8d3c2b1f0a11"
        s.update_device(d)


class TestPools:
    def test_default_host_pools(self, host: ty.Any) -> None:
        c = counts(host[0])
        assert c[(GPU0, "nvidia-222")] == 4 and c[(GPU0, "type-PCI")] == 1
        assert c[("0000:42:00.0", "type-VF")] == 4
        assert c[(IGPU, "i915-GVTg_V5_8")] == 8
        assert c[("0000:c1:00.5", "nvidia-1156")] == 1

    def test_igpu_pools_have_no_numa_node(self, host: ty.Any) -> None:
        nodes = {p["numa_node"] for p in host[0] if p["address"] == IGPU}
        assert nodes == {None}

    def test_dev_filter_rejects_and_tags(self) -> None:
        from pci_vgpu import devspec
        wl = devspec.Whitelist(['{"vendor_id": "10de", "product_id": "1eb8",'
                                ' "physical_network": "gpu"}'])
        s, _ = build(inv.default_host(), dev_filter=wl)
        pools = list(s)
        assert pools and {p["address"] for p in pools} == {GPU0, GPU1}
        assert all(p["physical_network"] == "gpu" for p in pools)


class TestNuma:
    def _igpu_only(self) -> stats.PciDeviceStats:
        return build([inv.create_gpu(IGPU, None, inv.GVT_TYPES, "budget",
                                     inv.INTEL, inv.IGPU)])[0]

    @pytest.mark.parametrize("policy,ok", [("legacy", True),
                                           ("preferred", True),
                                           ("required", False),
                                           ("socket", False)])
    def test_igpu_without_numa_affinity(self, policy: str, ok: bool) -> None:
        s = self._igpu_only()
        req = inv.request(1, ["i915-GVTg_V5_4"], numa_policy=policy)
        cells = [types.SimpleNamespace(id=0)]
        assert s.support_requests([req], cells) is ok
        assert s.support_requests([req]) is True  # no guest NUMA: anywhere

    def test_required_stays_on_guest_node(self, host: ty.Any) -> None:
        s = host[0]
        req = inv.request(1, ["nvidia-222"], numa_policy="required", **T4)
        got = s.consume_requests([req], [{"id": 1}])
        assert got[0].parent_addr == GPU1

    def test_preferred_falls_back_to_other_node(self, host: ty.Any) -> None:
        s = host[0]
        s.consume_requests([inv.request(4, ["nvidia-222"], **T4)], [{"id": 0}])
        req = inv.request(1, ["nvidia-222"], numa_policy="preferred", **T4)
        assert not s.support_requests(
            [inv.request(1, ["nvidia-222"], numa_policy="required", **T4)],
            [{"id": 0}])
        assert s.consume_requests([req], [{"id": 0}])[0].parent_addr == GPU1

    def test_socket_policy_uses_host_sockets(self) -> None:
        dicts = [inv.create_gpu(GPU0, 0, inv.T4_TYPES),
                 inv.create_gpu(GPU1, 1, inv.T4_TYPES)]
        topo = {"cells": [{"id": 0, "socket": 0}, {"id": 1, "socket": 0}]}
        s, _ = build(dicts, numa_topology=topo)
        s.consume_requests([inv.request(4, ["nvidia-222"], **T4)], [{"id": 0}])
        req = inv.request(1, ["nvidia-222"], numa_policy="socket", **T4)
        assert s.support_requests([req], [{"id": 0}])
        other = {"cells": [{"id": 0, "socket": 0}, {"id": 1, "socket": 1}]}
        s.numa_topology = other
        assert not s.support_requests([req], [{"id": 0}])


class TestTypeLockAndBudget:
    def test_type_lock_is_dynamic(self, host: ty.Any) -> None:
        s = host[0]
        s.consume_requests([inv.request(1, ["nvidia-223"], **T4)])
        c = counts(s)
        assert c[(GPU0, "nvidia-222")] == 0 and c[(GPU0, "nvidia-223")] == 1
        assert c[(GPU1, "nvidia-222")] == 4

    def test_budget_mixes_types(self, host: ty.Any) -> None:
        s = host[0]
        s.consume_requests([inv.request(1, ["i915-GVTg_V5_2"])])
        c = counts(s)
        assert (c[(IGPU, "i915-GVTg_V5_4")], c[(IGPU, "i915-GVTg_V5_8")]) == (2, 4)

    def test_count_from_several_gpus_and_types(self, host: ty.Any) -> None:
        s = host[0]
        got = s.consume_requests([inv.request(6, ["nvidia-222", "nvidia-223"],
                                              **T4)])
        assert sorted(d.parent_addr for d in got) == [GPU0] * 4 + [GPU1] * 2
        assert {d.extra_info["vgpu_type"] for d in got} == {"nvidia-222"}

    def test_requests_in_one_call_do_not_double_count(self, host: ty.Any) -> None:
        s = host[0]
        r = [inv.request(4, ["nvidia-222"], **T4) for _ in range(3)]
        assert s.support_requests(r[:2]) and not s.support_requests(r)
        with pytest.raises(pool_errors.PciDeviceRequestFailed):
            s.consume_requests(r)
        assert counts(s)[(GPU0, "nvidia-222")] == 4  # all-or-nothing


class TestWholeGpu:
    def test_whole_gpu_hides_its_vgpus(self, host: ty.Any) -> None:
        s = host[0]
        got = s.consume_requests([inv.request(1, numa_policy="required", **T4)],
                                 [{"id": 0}])
        assert [d.address for d in got] == [GPU0]
        assert counts(s)[(GPU0, "nvidia-222")] == 0
        claim(s, got, "allocated")
        assert counts(s)[(GPU0, "nvidia-224")] == 0

    def test_vgpu_in_use_blocks_whole(self, host: ty.Any) -> None:
        s = host[0]
        got = s.consume_requests([inv.request(1, ["nvidia-224"], **T4)])
        assert counts(s)[(got[0].parent_addr, "type-PCI")] == 0
        claim(s, got)
        assert counts(s)[(got[0].parent_addr, "type-PCI")] == 0

    def test_add_device_of_any_status(self) -> None:
        gpu = inv.create_gpu(GPU0, 0, inv.T4_TYPES)
        busy = inv.to_device(inv.create_mdev(gpu, "nvidia-223"), "allocated",
                             "8c6c3e34-6a0a-4b5c-9a51-8d3c2b1f0a11")
        s = stats.PciDeviceStats()
        s.add_device(busy)  # before its GPU: waits for it
        s.add_device(inv.to_device(gpu, "unavailable"))
        c = counts(s)
        assert c[(GPU0, "nvidia-223")] == 1 and c[(GPU0, "nvidia-222")] == 0
        assert c[(GPU0, "type-PCI")] == 0
        s2 = stats.PciDeviceStats()
        s2.add_device(inv.to_device(gpu, "claimed"))
        assert counts(s2)[(GPU0, "nvidia-222")] == 0


class TestConsume:
    def test_existing_free_mdev_is_reused(self) -> None:
        gpu = inv.create_gpu(GPU0, 0, inv.T4_TYPES)
        mdev = inv.create_mdev(gpu, "nvidia-223")
        s, devs = build([gpu, mdev])
        assert counts(s)[(GPU0, "nvidia-222")] == 0  # the free mdev locks
        got = s.consume_requests([inv.request(1, ["nvidia-223"])])
        assert got == [devs[1]] and got[0].request_id is not None

    def test_new_mdev_device(self, host: ty.Any) -> None:
        s = host[0]
        req = inv.request(1, ["nvidia-224"], **T4)
        dev = s.consume_requests([req])[0]
        assert (dev.dev_type, dev.address, dev.parent_addr) == ("mdev", None, GPU0)
        assert dev.mdev_uuid and dev.request_id == req.request_id
        assert dev.vgpu_type == "nvidia-224"

    def test_nvidia_vf_is_its_own_vgpu(self, host: ty.Any) -> None:
        s = host[0]
        got = s.consume_requests([inv.request(1, ["nvidia-1156"])])
        assert got[0].address == "0000:c1:00.4"
        assert got[0].extra_info["vgpu_type"] == "nvidia-1156"
        c = counts(s)
        assert c[("0000:c1:00.4", "nvidia-1155")] == 0
        assert c[("0000:c1:00.4", "type-VF")] == 0
        s.undo_consume(got)
        assert "vgpu_type" not in got[0].extra_info
        assert counts(s)[("0000:c1:00.4", "type-VF")] == 1

    def test_current_vf_type_locks(self) -> None:
        vf = inv.create_nvidia_vf("0000:c1:00.4", "0000:c1:00.0",
                                  current="nvidia-1155")
        s, _ = build([vf])
        c = counts(s)
        assert (c[("0000:c1:00.4", "nvidia-1155")],
                c[("0000:c1:00.4", "nvidia-1156")]) == (1, 0)

    def test_claim_then_free_round_trip(self, host: ty.Any) -> None:
        s, devs = host
        before = list(s)
        got = s.consume_requests([inv.request(2, ["nvidia-222"], **T4),
                                  inv.request(1, **T4)])
        claim(s, got)
        assert counts(s)[(GPU0, "nvidia-222")] == 2
        for d in got:
            d.status, d.instance_uuid, d.request_id = "available", None, None
            if d.dev_type == "mdev":
                s.remove_device(d)  # the tracker deletes freed new mdevs
            else:
                s.update_device(d)
        assert list(s) == before

    def test_unrequested_pf_not_used(self, host: ty.Any) -> None:
        s = host[0]
        pf_req = inv.request(1, vendor_id=inv.AMD, product_id=inv.MXGPU_PF)
        assert not s.support_requests([pf_req])
        typed = inv.request(1, vendor_id=inv.AMD, product_id=inv.MXGPU_PF,
                            dev_type="type-PF")
        assert s.consume_requests([typed])[0].address == "0000:42:00.0"
        # the PF in use: its VFs cannot be given
        vf_req = inv.request(1, vendor_id=inv.AMD, product_id=inv.MXGPU_VF)
        assert not s.support_requests([vf_req])


class TestPolicy:
    def _two_gpus(self, policy: str) -> stats.PciDeviceStats:
        s, _ = build([inv.create_gpu(GPU0, 0, {"t": 4}),
                      inv.create_gpu(GPU1, 0, {"t": 4})], policy)
        s.consume_requests([inv.request(1, ["t"])])  # lands on GPU0 (tie)
        return s

    def test_pack_fills_fullest(self) -> None:
        s = self._two_gpus("pack")
        got = s.consume_requests([inv.request(3, ["t"])])
        assert [d.parent_addr for d in got] == [GPU0] * 3

    def test_spread_uses_emptiest(self) -> None:
        s = self._two_gpus("spread")
        got = s.consume_requests([inv.request(3, ["t"])])
        assert [d.parent_addr for d in got] == [GPU1, GPU0, GPU1]


class TestSchedulerSide:
    def test_round_trip_and_agreement(self, host: ty.Any) -> None:
        s = host[0]
        s.consume_requests([inv.request(1, ["nvidia-223"], **T4)])
        obj = s.to_device_pools_obj()
        assert isinstance(obj, pci_device_pool.PciDevicePoolList)
        sched = stats.PciDeviceStats(stats=obj)
        assert list(sched) == list(s)
        for req in ([inv.request(4, ["nvidia-222"], **T4)],
                    [inv.request(5, ["nvidia-222"], **T4)],
                    [inv.request(1, **T4), inv.request(2, ["nvidia-223"])]):
            assert sched.support_requests(req) == s.support_requests(req)

    def test_apply_requests_counts(self, host: ty.Any) -> None:
        sched = stats.PciDeviceStats(stats=host[0].to_device_pools_obj())
        sched.apply_requests([inv.request(1, ["nvidia-223"], **T4)])
        c = counts(sched)
        assert c[(GPU0, "nvidia-222")] == 0 and c[(GPU0, "type-PCI")] == 0
        sched.apply_requests([inv.request(1, **T4)])
        assert counts(sched)[(GPU1, "nvidia-222")] == 0
        with pytest.raises(pool_errors.PciDeviceRequestFailed) as exc:
            sched.apply_requests([inv.request(9, ["nvidia-222"], **T4)])
        assert "wants 9" in str(exc.value)

    def test_bad_pool_tag(self, host: ty.Any) -> None:
        pools = list(host[0])
        pools[0]["vgpu_max"] = "many"
        with pytest.raises(pool_errors.InvalidPoolTag) as exc:
            stats.PciDeviceStats(stats=pools)
        assert "'many'" in str(exc.value)


class TestExplain:
    def test_first_rejecting_rule_per_pool(self, host: ty.Any) -> None:
        s = host[0]
        s.consume_requests([inv.request(2, ["nvidia-223"], **T4)])
        s.consume_requests([inv.request(1, **T4)])  # GPU1 whole
        ex = s.explain([inv.request(1, ["nvidia-222"], **T4)])
        assert not ex.satisfied
        by = {v.pool: v.rejected_by for v in ex.requests[0].pools}
        assert "locked" in by["10de:1eb8 mdev@0000:41:00.0 numa=0 type=nvidia-222"]
        assert "given whole" in by["10de:1eb8 mdev@0000:81:00.0 numa=1 type=nvidia-222"]
        assert "vgpu_types" in by["10de:1eb8 mdev@0000:41:00.0 numa=0 type=nvidia-223"]
        assert "product_id" in by["8086:3e92 mdev@0000:00:02.0 numa=None type=i915-GVTg_V5_2"]
        assert "nvidia-223 and can host one type" in str(ex)

    def test_explain_has_no_side_effect(self, host: ty.Any) -> None:
        s = host[0]
        before = list(s)
        assert s.explain([inv.request(3, ["nvidia-222"])]).satisfied
        assert list(s) == before


class TestBadInput:
    @pytest.mark.parametrize("count", [0, -1])
    def test_bad_count(self, host: ty.Any, count: int) -> None:
        req = inv.request(1, ["nvidia-222"])
        req.count = count
        with pytest.raises(pool_errors.InvalidPciRequest) as exc:
            host[0].support_requests([req])
        assert repr(count) in str(exc.value)

    def test_bad_policy(self) -> None:
        with pytest.raises(pool_errors.InvalidPlacementPolicy):
            stats.PciDeviceStats(placement_policy="first-fit")

    def test_bad_inventory_tracks_nothing(self) -> None:
        gpu = inv.create_gpu(GPU0, 0, {"t": 2}, sharing="mixed")
        s = stats.PciDeviceStats()
        with pytest.raises(pool_errors.InvalidVgpuSharing) as exc:
            s.add_device(inv.to_device(gpu))
        assert "'mixed'" in str(exc.value) and list(s) == []
        # Not half-tracked either: the same address comes back as new.
        good = inv.to_device(inv.create_gpu(GPU0, 0, {"t": 2}))
        s.add_device(good)
        assert {p["address"] for p in s} == {GPU0}

    def test_remove_unknown(self, host: ty.Any) -> None:
        with pytest.raises(pool_errors.PciDevicePoolEmpty) as exc:
            host[0].remove_device(inv.to_device(inv.create_gpu("0000:99:00.0")))
        assert "0000:99:00.0" in str(exc.value)

    def test_remove_gpu_then_readd(self, host: ty.Any) -> None:
        s, devs = host
        before = list(s)
        s.remove_device(devs[0])
        assert GPU0 not in {p["address"] for p in s}
        s.add_device(devs[0])
        assert sorted(map(str, s)) == sorted(map(str, before))


def test_deepcopy_is_independent(host: ty.Any) -> None:
    """A deep copy (what callers use for what-if picks) shares no state."""
    import copy

    s = host[0]
    before = list(s)
    twin = copy.deepcopy(s)
    got = twin.consume_requests([inv.request(4, ["nvidia-222"], **T4),
                                 inv.request(1, vendor_id=inv.AMD,
                                             product_id=inv.MXGPU_VF)])
    twin.add_device(inv.to_device(inv.create_gpu("0000:99:00.0", 1,
                                                 inv.T4_TYPES)))
    assert len(got) == 5 and list(s) == before
    assert counts(twin)[(GPU0, "nvidia-222")] == 0
    assert counts(twin)[("0000:99:00.0", "nvidia-222")] == 4


def test_mdev_of_a_type_not_offered_still_occupies_its_gpu() -> None:
    """device_spec narrowed the GPU to nvidia-222; an nvidia-223 mdev exists."""
    gpu = inv.create_gpu(GPU0, 0, {"nvidia-222": 4})
    other = inv.create_mdev(gpu, "nvidia-223")
    s, devs = build([gpu, other])
    assert counts(s)[(GPU0, "nvidia-222")] == 0
    sched = stats.PciDeviceStats(stats=s.to_device_pools_obj())
    assert counts(sched)[(GPU0, "nvidia-222")] == 0
    verdict = s.explain([inv.request(1, ["nvidia-222"])]).requests[0].pools[0]
    assert "not offered" in verdict.detail
    s.remove_device(devs[1])
    assert counts(s)[(GPU0, "nvidia-222")] == 4


def test_update_with_a_fresh_copy_of_the_device(host: ty.Any) -> None:
    """The tracker may re-read devices: the copy replaces the old object."""
    import copy

    s, devs = host
    vf = next(d for d in devs if d.address == "0000:42:00.1")
    fresh = copy.copy(vf)
    s.update_device(fresh)
    got = s.consume_requests([inv.request(4, vendor_id=inv.AMD,
                                          product_id=inv.MXGPU_VF)])
    assert any(d is fresh for d in got) and not any(d is vf for d in got)
