"""Smoke test of the cluster replay on a small synthetic workload."""

from __future__ import annotations

import pathlib

import pytest

from benchmarks import bench_cluster
from benchmarks import cluster_mixes
from benchmarks import cluster_sim as cs
from benchmarks import cluster_workload as cw
from pci_vgpu import capacity


def _small() -> tuple[list[cw.NodeSpec], list[cw.Task]]:
    return cw.synthetic_cluster(12), cw.synthetic_tasks(400, seed=1)


def test_arrivals_reach_the_target_and_no_more():
    nodes, tasks = _small()
    cap = sum(n.gpus for n in nodes) * cw.MILLI
    order = cw.arrivals(tasks, cap, seed=42, arrive_max=1.3)
    total = sum(t.total_milli for t in order)
    assert total <= 1.3 * cap
    assert cw.arrivals(tasks, cap, seed=42) == order  # seeded
    assert cw.arrivals(tasks, cap, seed=43) != order


@pytest.mark.parametrize("policy", sorted(cs.POLICIES))
def test_replay_allocates_what_the_pools_hold(policy):
    nodes, tasks = _small()
    p = cs.POLICIES[policy]
    setting = cs.Setting.of(nodes, tasks, capacity.BUDGET, p)
    cluster = cs.build_nodes(nodes, setting.catalog, p, setting.mix)
    cap = sum(n.capacity_milli for n in cluster)
    curve = cs.replay(cluster, cw.arrivals(tasks, cap, 42), setting.flavors,
                      p.weigher(setting.mix, tasks), 42)
    # the harness's count agrees with the GPUs' own budgets
    held = sum(round(1000 * (1 - cs.frag.free_share(g.state)))
               for n in cluster for g in n.gpus)
    assert held == curve.used[-1]
    assert 0 < curve.ratio_at(100) <= 100
    assert all(n.cpu_free >= 0 and n.ram_free >= 0 for n in cluster)


def test_candidates_agree_with_filtering_every_host():
    nodes, tasks = _small()
    p = cs.POLICIES["bestfit"]
    setting = cs.Setting.of(nodes, tasks, capacity.BUDGET, p)
    mix, flavors = setting.mix, setting.flavors
    cluster = cs.build_nodes(nodes, setting.catalog, p, mix)
    cap = sum(n.capacity_milli for n in cluster)
    candidates = cs.Candidates(cluster)
    probes = tasks[:40]
    for i, task in enumerate(cw.arrivals(tasks, cap, 42, 0.9)):
        key, reqs = flavors.key(task), flavors.requests(task)
        able = candidates.able(task, key, reqs)
        if i % 7 == 0:  # a shape asked again after hosts changed
            probe = probes[i % len(probes)]
            pk, pr = flavors.key(probe), flavors.requests(probe)
            # the same hosts as fresh filters over the reported pools
            assert candidates.able(probe, pk, pr) == [
                n for n in cluster
                if probe.cpu_milli <= n.cpu_free
                and probe.memory_mib <= n.ram_free and (
                    not pr or cs.stats.PciDeviceStats(
                        stats=n.pools).support_requests(pr))]
        if able:
            node = p.weigher(mix, tasks)(able, task, key, None)
            node.claim(task, reqs)
            candidates.changed(node)


def test_fgd_places_a_share_on_the_gpu_it_scored():
    nodes, tasks = _small()
    p = cs.POLICIES["fgd"]
    setting = cs.Setting.of(nodes, tasks, capacity.BUDGET, p)
    mix, flavors = setting.mix, setting.flavors
    cluster = cs.build_nodes(nodes, setting.catalog, p, mix)
    weigher = p.weigher(mix, tasks)
    share = next(t for t in tasks if t.is_share)
    node = cluster[0]
    cs.replay([node], [t for t in tasks if t.is_share][:3], flavors,
              weigher, 42)
    address = weigher.gpu_address(node, share, None)
    before = {g.state.address: cs.frag.free_share(g.state) for g in node.gpus}
    node.claim(share, cs.pin_gpu(node, flavors.requests(share), address))
    after = {g.state.address: cs.frag.free_share(g.state) for g in node.gpus}
    changed = [a for a in before if before[a] != after[a]]
    assert changed == [address]


def test_nvidia_rounding():
    assert [cs.nvidia_size(m) for m in (50, 125, 126, 300, 500, 501)] == [
        125, 125, 250, 500, 500, 1000]


def test_mixes_resample_the_property():
    nodes, tasks = _small()
    share = cluster_mixes.resample(tasks, nodes, "gpushare100", 42)
    assert all(t.is_share for t in share if t.num_gpu)
    spec = cluster_mixes.resample(tasks, nodes, "gpuspec33", 42)
    assert any(t.models for t in spec)
    assert len(share) == len(spec) == len(tasks)


def test_cli_prints_the_cluster_line(capsys, tmp_path: pathlib.Path):
    rc = bench_cluster.main(["--synthetic", "--nodes", "12", "--seeds", "1",
                             "--policies", "random,bestfit,ours",
                             "--plot", str(tmp_path / "c.png")])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert out[-1].startswith("CLUSTER trace=synthetic seeds=1 random=")
    assert "ours=" in out[-1]


def test_cli_refuses_an_unknown_policy(capsys):
    with pytest.raises(SystemExit):
        bench_cluster.main(["--policies", "firstfit"])
    assert "unknown policy firstfit (allowed: " in capsys.readouterr().err


def test_trace_errors_name_the_file(tmp_path: pathlib.Path):
    (tmp_path / cw.NODE_FILE).write_text("sn,cpu_milli\nx,1\n")
    with pytest.raises(cw.TraceError, match="missing column"):
        cw.read_cluster(tmp_path)
