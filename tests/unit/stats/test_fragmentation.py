"""The fragmentation-aware placement policy (pci_vgpu.fragmentation)."""

from __future__ import annotations

import pytest

from pci_vgpu import capacity
from pci_vgpu import fragmentation as frag
from pci_vgpu import stats
from tests.fixtures import inventory as inv

SMALL, BIG = "share-0300", "share-0700"
SIZES = {SMALL: 300, BIG: 700}


def budget_gpu(address: str, *existing: str) -> capacity.GpuState:
    """A GPU of 1000 milli offering shares of 300 and 700, with vGPUs."""
    gpu = capacity.new_gpu_state(
        address, capacity.BUDGET, {t: 1000 // m for t, m in SIZES.items()},
        whole=capacity.WHOLE_FREE,
        sizes={t: {"gpu_milli": m} for t, m in SIZES.items()},
        capacity={"gpu_milli": 1000})
    for t in existing:
        capacity.consume_instance(gpu, t)
    gpu.whole = capacity.WHOLE_BLOCKED if existing else capacity.WHOLE_FREE
    return gpu


def host(*gpus: capacity.GpuState) -> list[frag.HostGpu]:
    return [frag.HostGpu(g, "1eb8") for g in gpus]


MIX = frag.TaskMix((frag.TaskKind(SMALL), frag.TaskKind(BIG),
                    frag.TaskKind(None)))


def test_free_share():
    assert frag.free_share(budget_gpu("a")) == 1.0
    assert frag.free_share(budget_gpu("a", SMALL)) == pytest.approx(0.7)
    given = budget_gpu("a")
    given.whole = capacity.WHOLE_USED
    assert frag.free_share(given) == 0.0


def test_partly_used_gpu_is_lost_to_kinds_that_cannot_use_it():
    # 0.4 free after 300 + 300: BIG (700) and a whole GPU cannot use it.
    gpus = host(budget_gpu("a", SMALL, SMALL))
    assert frag.host_fragmentation(gpus, MIX) == pytest.approx(0.4 * 2 / 3)


def test_empty_gpu_is_not_fragmented():
    assert frag.host_fragmentation(host(budget_gpu("a")), MIX) == 0.0


def test_one_type_lock_fragments_the_other_type():
    gpu = capacity.new_gpu_state("a", capacity.ONE_TYPE, {SMALL: 4, BIG: 2},
                                 whole=capacity.WHOLE_BLOCKED)
    capacity.consume_instance(gpu, SMALL)
    mix = frag.TaskMix((frag.TaskKind(SMALL), frag.TaskKind(BIG)))
    # 3/4 free; SMALL can use it, BIG is locked out.
    assert frag.host_fragmentation(host(gpu), mix) == pytest.approx(0.75 / 2)


def test_multi_gpu_kind_needs_enough_whole_gpus():
    mix = frag.TaskMix((frag.TaskKind(None, gpus=2),))
    one_free = host(budget_gpu("a"), budget_gpu("b", BIG))
    assert frag.host_fragmentation(one_free, mix) == pytest.approx(1.3)
    two_free = host(budget_gpu("a"), budget_gpu("b"))
    assert frag.host_fragmentation(two_free, mix) == 0.0


def test_model_constraint_loses_the_whole_host():
    mix = frag.TaskMix((frag.TaskKind(None, products=frozenset({"ffff"})),))
    assert frag.host_fragmentation(host(budget_gpu("a")), mix) == 1.0


def test_cpu_the_host_lacks_loses_its_free_gpus():
    mix = frag.TaskMix((frag.TaskKind(None, cpu_milli=8000),))
    gpus = host(budget_gpu("a"))
    assert frag.host_fragmentation(gpus, mix, cpu_free=4000) == 1.0
    assert frag.host_fragmentation(gpus, mix, cpu_free=8000) == 0.0


def test_choose_gpu_keeps_the_empty_gpu_whole():
    used, empty = host(budget_gpu("0000:41:00.0", SMALL),
                       budget_gpu("0000:40:00.0"))
    assert frag.choose_gpu([empty, used], SMALL, MIX) is used


def test_choose_gpu_fills_the_gap_a_big_share_leaves():
    # 300 free next to a BIG: a SMALL there loses nothing, elsewhere it
    # breaks a GPU that could still take a BIG.
    tight, roomy = host(budget_gpu("0000:41:00.0", BIG),
                        budget_gpu("0000:42:00.0", SMALL))
    assert frag.choose_gpu([roomy, tight], SMALL, MIX) is tight


def test_choose_gpu_none_when_nothing_fits():
    assert frag.choose_gpu(host(budget_gpu("a", BIG, SMALL)), SMALL,
                           MIX) is None


def test_host_delta():
    mix = MIX
    empty = host(budget_gpu("a"), budget_gpu("b"))
    partly = host(budget_gpu("a", BIG), budget_gpu("b"))
    assert frag.host_delta(partly, SMALL, 1, mix) < \
        frag.host_delta(empty, SMALL, 1, mix)
    assert frag.host_delta(host(budget_gpu("a", BIG)), None, 1, mix) is None
    assert frag.host_delta(empty, None, 2, mix) == 0.0


def test_place_does_not_change_its_input():
    gpus = host(budget_gpu("a"))
    after = frag.place(gpus, SMALL, 2, MIX)
    assert after is not None and gpus[0].state.existing == {}
    assert after[0].state.in_use[SMALL] == 2


def test_task_mix_is_checked():
    with pytest.raises(ValueError):
        frag.TaskMix(())
    with pytest.raises(ValueError, match="weight"):
        frag.TaskMix((frag.TaskKind(SMALL, weight=0),))


def test_mix_of_types():
    mix = frag.mix_of_types([BIG, SMALL, BIG])
    assert [k.vgpu_type for k in mix.kinds] == [SMALL, BIG, None]


def test_policy_is_accepted():
    assert capacity.validate_policy(frag.FRAGMENTATION) == "fragmentation"
    # without a type it orders as pack
    order = capacity.order_for_policy(
        [budget_gpu("b"), budget_gpu("a", SMALL)], frag.FRAGMENTATION)
    assert [g.address for g in order] == ["a", "b"]


def _budget_host() -> list[dict]:
    devs = []
    for i in range(3):
        gpu = inv.create_gpu("0000:%02x:00.0" % (0x41 + i), 0,
                             {t: 1000 // m for t, m in SIZES.items()},
                             "budget")
        for t, m in SIZES.items():
            gpu["vgpu_types"][t]["size"] = {"gpu_milli": m}
        gpu["vgpu_capacity"] = {"gpu_milli": 1000}
        devs.append(gpu)
    return devs


def _share(vgpu_type: str):
    from pci_vgpu.objects import instance_pci_requests as ipr
    return ipr.InstancePCIRequest(
        count=1, request_id="5f6c1b1e-8a0b-4c7e-9b59-2d7f8e9e8a01",
        spec=[{"vendor_id": inv.NVIDIA, "product_id": inv.T4,
               "vgpu_types": '["%s"]' % vgpu_type}])


def _claim(s: stats.PciDeviceStats, vgpu_type: str) -> str:
    picked = s.consume_requests([_share(vgpu_type)])
    for d in picked:
        d.status = "claimed"
        s.update_device(d)
    return str(picked[0].parent_addr)


@pytest.mark.parametrize("policy,expected", [
    ("fragmentation", "0000:41:00.0"),  # fills the 300 left next to BIG
    ("pack", "0000:41:00.0"),
    ("spread", "0000:42:00.0")])
def test_stats_in_host_choice(policy, expected):
    s = stats.PciDeviceStats(placement_policy=policy)
    for dev in inv.to_devices(_budget_host()):
        s.add_device(dev)
    assert _claim(s, BIG) == "0000:41:00.0"  # all empty: address order
    assert _claim(s, SMALL) == expected


@pytest.mark.parametrize("policy,expected", [
    ("fragmentation", "0000:43:00.0"), ("pack", "0000:42:00.0")])
def test_stats_fragmentation_keeps_room_for_the_big_share(policy, expected):
    # With only shares to come, a second SMALL on 42 (700 left) would leave
    # 400 that fits no BIG; on the empty 43 it leaves 700 that does.  Pack
    # takes the fuller 42.
    mix = frag.TaskMix((frag.TaskKind(SMALL), frag.TaskKind(BIG)))
    s = stats.PciDeviceStats(placement_policy=policy, task_mix=mix)
    for dev in inv.to_devices(_budget_host()):
        s.add_device(dev)
    assert _claim(s, SMALL) == "0000:41:00.0"
    assert _claim(s, BIG) == "0000:41:00.0"  # the exact gap
    assert _claim(s, SMALL) == "0000:42:00.0"
    assert _claim(s, SMALL) == expected


def test_host_gpus_from_pools():
    s = stats.PciDeviceStats()
    for dev in inv.to_devices(_budget_host()):
        s.add_device(dev)
    gpus = frag.host_gpus(list(s))
    assert [g.state.address for g in gpus] == [
        "0000:41:00.0", "0000:42:00.0", "0000:43:00.0"]
    assert all(g.product == inv.T4 for g in gpus)
    assert gpus[0].state.capacity == (1000,)


# -- CPU and RAM per kind, shapes, kept profiles --------------------------------


def _reference(gpus, mix, cpu_free=None, ram_free=None):
    """host_fragmentation written the slow, plain way: each kind over each
    GPU through the capacity rules."""
    free = [frag.free_share(g.state) for g in gpus]
    lost = 0.0
    for kind in mix.kinds:
        if (cpu_free is not None and kind.cpu_milli > cpu_free) or (
                ram_free is not None and kind.memory_mib > ram_free):
            lost += kind.weight * sum(free)
            continue
        ok = []
        for g in gpus:
            if kind.products is not None and g.product not in kind.products:
                ok.append(False)
            elif kind.vgpu_type is None:
                ok.append(capacity.whole_assignable(g.state))
            else:
                ok.append(capacity.free_instances(g.state, kind.vgpu_type) > 0)
        if kind.vgpu_type is None and sum(ok) < kind.gpus:
            ok = [False] * len(gpus)
        lost += kind.weight * sum(f for f, o in zip(free, ok) if not o)
    return lost / mix.total


CPU_MIX = frag.TaskMix((
    frag.TaskKind(SMALL, weight=3, cpu_milli=2000, memory_mib=100),
    frag.TaskKind(SMALL, weight=1, cpu_milli=9000),
    frag.TaskKind(BIG, weight=2, cpu_milli=4000, memory_mib=4000),
    frag.TaskKind(None, weight=2, cpu_milli=8000),
    frag.TaskKind(None, gpus=2, weight=1, cpu_milli=16000),
    frag.TaskKind(None, weight=1, products=frozenset({"ffff"}))))


@pytest.mark.parametrize("cpu,ram", [
    (None, None), (0, 0), (2000, None), (4000, 3999), (8999, 10 ** 6),
    (20000, 4000)])
def test_host_fragmentation_matches_the_plain_rule(cpu, ram):
    hosts = [host(budget_gpu("a"), budget_gpu("b")),
             host(budget_gpu("a", SMALL), budget_gpu("b")),
             host(budget_gpu("a", BIG), budget_gpu("b", SMALL, SMALL)),
             host(budget_gpu("a", BIG, SMALL)),
             host(budget_gpu("a", SMALL), budget_gpu("b", BIG),
                  budget_gpu("c"))]
    for gpus in hosts:
        assert frag.host_fragmentation(gpus, CPU_MIX, cpu, ram) == \
            pytest.approx(_reference(gpus, CPU_MIX, cpu, ram))


def test_shapes_group_the_kinds_by_the_gpus_they_want():
    shapes = {(s.vgpu_type, s.gpus, s.products): s for s in CPU_MIX.shapes}
    assert len(shapes) == 5
    small = shapes[(SMALL, 1, None)]
    assert small.cpus == [2000, 9000] and small.weight == 4
    assert small.able_weight(8999, None) == 3
    assert shapes[(BIG, 1, None)].able_weight(10 ** 6, 3999) == 0


def test_copies_count_the_tasks_the_cpu_admits():
    # Two empty GPUs and CPU for one 8-CPU whole-GPU task: by FGD's rule
    # both GPUs are usable, counting copies only one is.
    mix = frag.TaskMix((frag.TaskKind(None, cpu_milli=8000),))
    gpus = host(budget_gpu("a"), budget_gpu("b"))
    assert frag.host_fragmentation(gpus, mix, cpu_free=8000) == 0.0
    assert frag.host_fragmentation(gpus, mix, cpu_free=8000,
                                   copies=True) == pytest.approx(1.0)
    assert frag.host_fragmentation(gpus, mix, cpu_free=16000,
                                   copies=True) == 0.0
    # shares: 0.3 of a GPU each, CPU for two of them on 2 GPUs
    mix = frag.TaskMix((frag.TaskKind(SMALL, cpu_milli=1000),))
    assert frag.host_fragmentation(gpus, mix, cpu_free=2000,
                                   copies=True) == pytest.approx(2 - 0.6)
    # no CPU judged: copies change nothing
    assert frag.host_fragmentation(gpus, mix, copies=True) == 0.0


def test_host_delta_with_copies_sees_gpus_the_cpu_strands():
    # B has a GPU more than its CPU can feed 8-CPU tasks: a 4-CPU whole-GPU
    # task there leaves no GPU stranded.  FGD's one-task rule sees no
    # difference between the hosts.
    mix = frag.TaskMix((frag.TaskKind(None, cpu_milli=8000),))
    a = host(budget_gpu("a"), budget_gpu("b"))
    b = host(budget_gpu("a"), budget_gpu("b"), budget_gpu("c"))
    on_a = frag.host_delta(a, None, 1, mix, cpu=(16000, 4000), copies=True)
    on_b = frag.host_delta(b, None, 1, mix, cpu=(20000, 4000), copies=True)
    assert on_a == 0.0 and on_b == pytest.approx(-1.0)
    assert frag.host_delta(a, None, 1, mix, cpu=(16000, 4000)) == \
        frag.host_delta(b, None, 1, mix, cpu=(20000, 4000)) == 0.0


def test_profiles_follow_the_state():
    gpu = host(budget_gpu("a"))[0]
    mix = frag.TaskMix((frag.TaskKind(BIG), frag.TaskKind(None)))
    assert mix.profile(gpu)[0] == 1.0
    capacity.consume_instance(gpu.state, SMALL)
    found = mix.profile(gpu)
    assert found.free == pytest.approx(0.7)
    assert found.unserved == 1.0  # the whole GPU is lost
    assert found.served == (True, False)
    assert found.units[0] == pytest.approx(0.7)
    other = host(budget_gpu("b", SMALL))[0]
    other.product = "ffff"
    assert mix.profile(other)[0] == pytest.approx(0.7)


def test_accepted_only_judges_a_kind_on_the_models_it_accepts():
    # A whole-GPU kind for another model: by FGD's rule all of this host's
    # free share is lost to it, so any task here "reduces" fragmentation.
    # Judged among the kinds that accept the host, only the local kinds
    # count, and their weights are renormalised.
    mix = frag.TaskMix((frag.TaskKind(None, weight=3,
                                      products=frozenset({"ffff"})),
                        frag.TaskKind(BIG)))
    gpus = host(budget_gpu("a", SMALL))
    assert frag.host_fragmentation(gpus, mix) == pytest.approx(0.7 * 3 / 4)
    assert frag.host_fragmentation(gpus, mix, accepted_only=True) == 0.0
    split = host(budget_gpu("a", SMALL, SMALL))  # 0.4 left: no BIG
    assert frag.host_fragmentation(split, mix, accepted_only=True) == \
        pytest.approx(0.4)
    only_foreign = frag.TaskMix((frag.TaskKind(
        None, products=frozenset({"ffff"})),))
    assert frag.host_fragmentation(gpus, only_foreign,
                                   accepted_only=True) == 0.0
