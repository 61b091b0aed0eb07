"""The SCALE measurement on a small synthetic cluster."""

from __future__ import annotations

import re

import pytest

from benchmarks import bench_cluster
from benchmarks import cluster_scale
from benchmarks import cluster_sim as cs
from benchmarks import cluster_workload as cw
from pci_vgpu import capacity


@pytest.fixture(scope="module")
def cluster() -> cluster_scale.FilledCluster:
    return cluster_scale.filled_cluster(
        cw.synthetic_cluster(12), cw.synthetic_tasks(400, seed=1),
        capacity.BUDGET)


def test_replicas_report_the_same_and_share_one_view_per_report(
        cluster: cluster_scale.FilledCluster) -> None:
    hosts, views = cluster_scale.scaled_hosts(cluster.nodes, 3)
    assert len(hosts) == 3 * len(cluster.nodes)
    assert hosts[:len(cluster.nodes)] == cluster.nodes
    distinct = {repr(n.pools) for n in cluster.nodes}
    assert views == len(distinct)
    for i, n in enumerate(cluster.nodes):
        twin = hosts[len(cluster.nodes) + i]
        assert twin is not n and twin.pools is n.pools
        assert twin.sched is n.sched and twin.cache is not n.cache
        assert (twin.cpu_free, twin.ram_free, twin.used_milli) == (
            n.cpu_free, n.ram_free, n.used_milli)
    # nodes with equal reports hold one view; different reports do not
    by_report: dict[str, object] = {}
    for n in cluster.nodes:
        assert by_report.setdefault(repr(n.pools), n.sched) is n.sched
    with pytest.raises(ValueError, match="allowed: an integer >= 1"):
        cluster_scale.scaled_hosts(cluster.nodes, 0)


def test_a_timed_request_filters_as_the_replay_does(
        cluster: cluster_scale.FilledCluster) -> None:
    """The hosts the timed filter passes are those Node.fits passes (the
    replay's filter), and the weigher is asked of them."""
    hosts, _ = cluster_scale.scaled_hosts(cluster.nodes, 2)
    asked: list[list[cs.Node]] = []

    def weigher(able: list[cs.Node], task: cw.Task, key: str,
                rng: object) -> cs.Node:
        asked.append(able)
        return able[0]

    for name, task in cluster_scale.probes(cluster.tasks):
        t = cluster_scale.time_request(hosts, name, task, cluster.flavors,
                                       weigher)
        key, reqs = cluster.flavors.key(task), cluster.flavors.requests(task)
        fits = [n for n in hosts if n.fits(task, key, reqs)]
        assert t.hosts == len(hosts) and t.fit_pci == len(fits)
        assert t.fit_cpu_ram >= t.fit_pci
        assert t.wall_s > 0 and min(t.cpu_ram_s, t.pci_s, t.weigh_s) >= 0
        if fits:
            assert asked[-1] == fits
    assert asked


def test_measure_times_every_probe_and_refuses_bad_input(
        cluster: cluster_scale.FilledCluster) -> None:
    result = cluster_scale.measure(cluster, 2, "bestfit", repeats=2)
    probes = [name for name, _ in cluster_scale.probes(cluster.tasks)]
    assert result.probes() == probes
    assert len(result.timings) == 2 * len(probes)
    assert result.hosts == 2 * len(cluster.nodes)
    assert result.median(lambda t: t.cpu_s) > 0
    with pytest.raises(ValueError, match="policy 'firstfit': allowed: "):
        cluster_scale.measure(cluster, 1, "firstfit")


def test_cli_prints_a_scale_line_per_factor(capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    rc = bench_cluster.main(["--synthetic", "--nodes", "12", "--scale-only",
                             "--scale-factors", "1,2", "--scale-policy",
                             "bestfit"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    pattern = (r"SCALE nodes=(\d+) request_ms=[\d.]+ per_node_us=[\d.]+ "
               r"cpu_ms=[\d.]+ filter_cpu_ms=[\d.]+ weigh_cpu_ms=[\d.]+ "
               r"views=\d+ load=")
    found = [re.match(pattern, line) for line in out[-2:]]
    assert all(found), out[-2:]
    assert [int(m.group(1)) for m in found if m] == [12, 24]


def test_cli_refuses_bad_scale_factors(capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    with pytest.raises(SystemExit):
        bench_cluster.main(["--scale-only", "--scale-factors", "1,0"])
    assert "scale factors '1,0': allowed: integers >= 1" in \
        capsys.readouterr().err
