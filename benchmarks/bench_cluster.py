"""Cluster replay: GPU allocation ratio per placement policy on a trace.

Replays a task list onto a cluster's nodes through pci_vgpu's real
scheduling code (see :mod:`benchmarks.cluster_sim`) with the methodology of
Weng et al., "Beware of Fragmentation" (USENIX ATC '23): tasks arrive until
their GPU request reaches ``--arrive-max`` (1.3) x the cluster's GPU
capacity, no departures, failed tasks dropped, ``--seeds`` seeds (42, 43,
...); the figure is the GPU allocation ratio (allocated GPU share in % of
all GPUs) when 100 % has arrived, mean over seeds.

Usage::

    .venv/bin/python benchmarks/bench_cluster.py [--trace DIR]
        [--tasks openb_pod_list_default.csv] [--seeds 10]
        [--policies random,bestfit,ours] [--nvidia] [--mix gpushare80]
        [--plot benchmarks/results/cluster.png] [--arrive-max 1.3]
        [--scale] [--scale-only] [--scale-factors 1,10]
        [--scale-policy ours] [--nodes N]

The trace folder defaults to ``../shared/traces/alibaba-gpu-v2023`` next to
the repository when present; otherwise a synthetic workload of the same
shape is used (``--synthetic`` forces it).  Last lines::

    CLUSTER trace=<name> seeds=<n> random=<x> bestfit=<y> ours=<z> ...
    SCALE nodes=<n> request_ms=<t> per_node_us=<u> cpu_ms=<c> filter_cpu_ms=<f>
        weigh_cpu_ms=<w> views=<v> load=<l>
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time
import typing as ty
import warnings

warnings.filterwarnings("ignore")  # eventlet/oslo deprecation noise

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import cluster_mixes  # noqa: E402
from benchmarks import cluster_scale  # noqa: E402
from benchmarks import cluster_sim as cs  # noqa: E402
from benchmarks import cluster_workload as cw  # noqa: E402
from pci_vgpu import capacity  # noqa: E402

DEFAULT_TRACE = ROOT.parent / "shared" / "traces" / "alibaba-gpu-v2023"
FIRST_SEED = 42
PERCENTS = tuple(range(0, 131))


def _policies(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in cs.POLICIES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            "unknown policy %s (allowed: %s)" % (
                ", ".join(bad) or "''", ", ".join(cs.POLICIES)))
    return names


def _factors(value: str) -> list[int]:
    try:
        factors = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        factors = []
    if not factors or min(factors) < 1:
        raise argparse.ArgumentTypeError(
            "scale factors %r: allowed: integers >= 1 joined by commas"
            % value)
    return factors


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    policies = "\n".join("  %-8s %s" % (p.name, p.doc)
                         for p in cs.POLICIES.values())
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="policies:\n" + policies + "\nmixes: " + ", ".join(
            cluster_mixes.MIXES),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", type=pathlib.Path, default=None,
                        help="folder with %s and task lists (default: %s "
                             "when present)" % (cw.NODE_FILE, DEFAULT_TRACE))
    parser.add_argument("--tasks", default=cw.DEFAULT_TASKS,
                        help="task list in the trace folder, or a path")
    parser.add_argument("--synthetic", action="store_true",
                        help="use the synthetic workload even if a trace "
                             "is present")
    parser.add_argument("--nodes", type=int, default=1213,
                        help="synthetic cluster size (default 1213)")
    parser.add_argument("--node-sample", type=int, default=1, metavar="K",
                        help="keep every K-th node of the cluster (a "
                             "K times smaller, faster replay; default 1)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--policies", type=_policies,
                        default=["random", "bestfit", "ours"],
                        help="comma-separated, from: " + ", ".join(
                            cs.POLICIES))
    parser.add_argument("--nvidia", action="store_true",
                        help="round shares up to 1/8, 1/4, 1/2 on one-type "
                             "(time-sliced) GPUs; default policies then: "
                             "ours, pack, spread, nova")
    parser.add_argument("--mix", default=None,
                        choices=sorted(cluster_mixes.MIXES),
                        help="resample the task list first (paper's mixes)")
    parser.add_argument("--arrive-max", type=float, default=1.3)
    parser.add_argument("--plot", type=pathlib.Path, default=None,
                        help="write allocation ratio vs arrived (PNG)")
    parser.add_argument("--scale", action="store_true",
                        help="also time one request over all nodes at 1x "
                             "and 10x the cluster")
    parser.add_argument("--scale-only", action="store_true",
                        help="only the SCALE measurement (no replay)")
    parser.add_argument("--scale-factors", type=_factors, default=[1, 10],
                        metavar="F,F", help="cluster sizes of the SCALE "
                        "measurement, as multiples of the cluster "
                        "(default 1,10)")
    parser.add_argument("--scale-policy", default="ours",
                        choices=sorted(cs.POLICIES),
                        help="weigher timed by the SCALE measurement "
                             "(default ours)")
    args = parser.parse_args(argv)
    if args.node_sample < 1:
        parser.error("--node-sample %d: allowed: an integer >= 1"
                     % args.node_sample)
    if args.seeds < 1:
        parser.error("--seeds %d: allowed: an integer >= 1" % args.seeds)
    if not 0.1 <= args.arrive_max <= 3.0:
        parser.error("--arrive-max %s: allowed: 0.1 to 3.0" % args.arrive_max)
    if args.nvidia and "--policies" not in " ".join(argv or sys.argv):
        args.policies = ["ours", "pack", "spread", "nova"]
    return args


def load(args: argparse.Namespace
         ) -> tuple[str, list[cw.NodeSpec], list[cw.Task]]:
    """(workload name, nodes, tasks).

    :raises: TraceError.
    """
    folder = args.trace or (DEFAULT_TRACE if DEFAULT_TRACE.is_dir() else None)
    if args.synthetic or folder is None:
        return ("synthetic", cw.synthetic_cluster(args.nodes),
                cw.synthetic_tasks(seed=0))
    tasks_path = pathlib.Path(args.tasks)
    if not tasks_path.is_absolute() and not tasks_path.exists():
        tasks_path = folder / args.tasks
    return (tasks_path.stem, cw.read_cluster(folder),
            cw.read_tasks(tasks_path))


def run_policy(name: str, nodes: list[cw.NodeSpec], tasks: list[cw.Task],
               seeds: int, arrive_max: float, sharing: str,
               log: ty.Callable[[str], None] = print) -> list[cs.Curve]:
    """One curve per seed for policy ``name``."""
    policy = cs.POLICIES[name]
    setting = cs.Setting.of(nodes, tasks, sharing, policy)
    curves = []
    for seed in range(FIRST_SEED, FIRST_SEED + seeds):
        start = time.perf_counter()
        cluster = cs.build_nodes(nodes, setting.catalog, policy, setting.mix)
        arrived = cw.arrivals(tasks, sum(n.capacity_milli for n in cluster),
                              seed, arrive_max)
        curve = cs.replay(cluster, arrived, setting.flavors,
                          policy.weigher(setting.mix, tasks), seed)
        curves.append(curve)
        log("  %-8s seed %d: %5.2f %% at 100 %% arrived, %d tasks, %d "
            "failed, %.1f s" % (name, seed, curve.ratio_at(100) or 0.0,
                                len(arrived), curve.failed,
                                time.perf_counter() - start))
    return curves


def mean_at(curves: list[cs.Curve], percent: int) -> float | None:
    values = [v for v in (c.ratio_at(percent) for c in curves)
              if v is not None]
    return statistics.mean(values) if values else None


def table(results: dict[str, list[cs.Curve]]) -> str:
    lines = ["%-8s %8s %8s %8s %8s  (GPU allocation %% at arrived %%)"
             % ("policy", "80", "90", "100", "110")]
    for name, curves in results.items():
        cells = []
        for p in (80, 90, 100, 110):
            v = mean_at(curves, p)
            cells.append("%8s" % ("-" if v is None else "%.2f" % v))
        sd = [c.ratio_at(100) for c in curves if c.ratio_at(100) is not None]
        lines.append("%-8s %s  sd@100=%.2f" % (
            name, " ".join(cells),
            statistics.stdev(sd) if len(sd) > 1 else 0.0))
    return "\n".join(lines)


def plot(results: dict[str, list[cs.Curve]], path: pathlib.Path,
         title: str) -> str:
    """Write the Fig. 9-like plot; returns what was done, in words."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install " \
               "'pci_vgpu[bench]')"
    fig, ax = pyplot.subplots(figsize=(6, 4))
    for name, curves in results.items():
        xs, ys = [], []
        for p in PERCENTS:
            v = mean_at(curves, p)
            if v is not None:
                xs.append(p)
                ys.append(v)
        ax.plot(xs, ys, label=name)
    ax.plot([0, 130], [0, 130], color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlim(0, 130)
    ax.set_ylim(0, 100)
    ax.set_xlabel("arrived GPU workload (% of cluster GPU capacity)")
    ax.set_ylabel("GPU allocation ratio (%)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(True, linewidth=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return "plot written: %s" % path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        name, nodes, tasks = load(args)
    except cw.TraceError as exc:
        print("bench_cluster: %s" % exc, file=sys.stderr)
        return 2
    if args.node_sample > 1:
        nodes = nodes[::args.node_sample]
        name += "/%d" % args.node_sample
    if args.mix:
        tasks = cluster_mixes.resample(tasks, nodes, args.mix, FIRST_SEED)
        name += "+" + args.mix
    sharing = capacity.BUDGET
    if args.nvidia:
        tasks, sharing, name = cs.to_nvidia(tasks), capacity.ONE_TYPE, \
            name + "+nvidia"
    print("workload %s: %d nodes, %d GPUs, %d tasks; load %s" % (
        name, len(nodes), sum(n.gpus for n in nodes), len(tasks),
        " ".join("%.2f" % x for x in os.getloadavg())))
    if args.scale_only:
        return _print_scale(nodes, tasks, sharing, args)
    results = {p: run_policy(p, nodes, tasks, args.seeds, args.arrive_max,
                             sharing) for p in args.policies}
    print(table(results))
    if args.plot:
        print(plot(results, args.plot, "%s, %d seed(s)" % (name, args.seeds)))
    print("CLUSTER trace=%s seeds=%d %s" % (name, args.seeds, " ".join(
        "%s=%.2f" % (p, mean_at(c, 100) or 0.0) for p, c in results.items())))
    if args.scale:
        return _print_scale(nodes, tasks, sharing, args)
    return 0


def _print_scale(nodes: list[cw.NodeSpec], tasks: list[cw.Task],
                 sharing: str, args: argparse.Namespace) -> int:
    """Time requests over each size: a table, then the SCALE lines."""
    cluster = cluster_scale.filled_cluster(nodes, tasks, sharing)
    print("scale: %d nodes built and filled to 50 %% by BestFit in %.1f s "
          "CPU; weigher: %s; medians of 3" % (
              len(nodes), cluster.setup_cpu_s, args.scale_policy))
    print("%7s %-7s %7s %7s %9s %9s %9s %9s %9s" % (
        "hosts", "request", "cpu/ram", "pci", "wall ms", "cpu ms",
        "filter ms", "weigh ms", "pci us/h"))
    lines = []
    for factor in args.scale_factors:
        result = cluster_scale.measure(cluster, factor, args.scale_policy)
        for probe in result.probes():
            def med(what: ty.Callable[[cluster_scale.Timing], float],
                    probe: str = probe) -> float:
                return result.median(what, probe)
            print("%7d %-7s %7d %7d %9.1f %9.1f %9.1f %9.1f %9.1f" % (
                result.hosts, probe, med(lambda t: t.fit_cpu_ram),
                med(lambda t: t.fit_pci), 1e3 * med(lambda t: t.wall_s),
                1e3 * med(lambda t: t.cpu_s),
                1e3 * med(lambda t: t.cpu_ram_s + t.pci_s),
                1e3 * med(lambda t: t.weigh_s),
                1e6 * med(lambda t: t.pci_per_host_s)))
        sys.stdout.flush()
        lines.append(
            "SCALE nodes=%d request_ms=%.1f per_node_us=%.1f cpu_ms=%.1f "
            "filter_cpu_ms=%.1f weigh_cpu_ms=%.1f views=%d load=%s" % (
                result.hosts, 1e3 * result.median(lambda t: t.wall_s),
                1e6 * result.median(lambda t: t.pci_per_host_s),
                1e3 * result.median(lambda t: t.cpu_s),
                1e3 * result.median(lambda t: t.cpu_ram_s + t.pci_s),
                1e3 * result.median(lambda t: t.weigh_s), result.views,
                "/".join("%.1f" % x for x in os.getloadavg())))
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
