"""The SCALE figure: what one scheduling request costs over every node.

Nova's scheduler runs each filter over the whole host list in turn, then
the weighers over the hosts that passed, for every request; nothing is
kept from one request to the next.  So a request is timed here as that:

1. the cluster is filled to half its GPU capacity by BestFit (seed 42),
   so hosts hold mixed states, and each node reports its pools;
2. ``factor`` copies of every node make the cluster ``factor`` times
   larger (:meth:`Node.replica`: same report, own caches); nodes whose
   reports are equal hold one scheduler view (:meth:`Node.share_view`),
   so 12,130 hosts take the memory of the ~500 distinct reports;
3. each timed request runs the CPU/RAM filter over every host, then the
   PCI passthrough filter (``support_requests`` on the host's view) over
   those that passed, then the policy's weigher through its public call
   (``policy.weigher(mix, tasks)(hosts, task, key, rng)``, whatever that
   weigher is) over those that passed both, with every node's caches
   emptied first.

Times are wall clock and CPU time of the process (``time.process_time``:
what the request costs whatever else the machine runs); the filter and
the weigher are timed apart, and the PCI check per host it was asked of.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
import time
import typing as ty

from benchmarks import cluster_sim as cs
from benchmarks import cluster_workload as cw
from pci_vgpu import stats


@dataclasses.dataclass
class FilledCluster:
    """A cluster half full, ready to be timed at any size."""

    nodes: list[cs.Node]
    tasks: ty.Sequence[cw.Task]
    flavors: cs.Flavors
    mix: ty.Any
    #: seconds (CPU) spent building the nodes and filling them.
    setup_cpu_s: float


def filled_cluster(specs: ty.Sequence[cw.NodeSpec],
                   tasks: ty.Sequence[cw.Task], sharing: str,
                   fill: float = 0.5, seed: int = 42) -> FilledCluster:
    """Build the nodes and fill them to ``fill`` of the GPU capacity with
    BestFit (the arrivals of ``seed``)."""
    start = time.process_time()
    filler = cs.POLICIES["bestfit"]
    setting = cs.Setting.of(specs, tasks, sharing, filler)
    nodes = cs.build_nodes(specs, setting.catalog, filler, setting.mix)
    total = sum(n.capacity_milli for n in nodes)
    cs.replay(nodes, cw.arrivals(tasks, total, seed, fill), setting.flavors,
              filler.weigher(setting.mix, tasks), seed)
    return FilledCluster(nodes, tasks, setting.flavors, setting.mix,
                         time.process_time() - start)


def scaled_hosts(nodes: ty.Sequence[cs.Node], factor: int
                 ) -> tuple[list[cs.Node], int]:
    """``factor`` hosts per node (the node and ``factor - 1`` replicas),
    equal reports sharing one view; returns (hosts, distinct views).

    :raises: ValueError for a factor below 1.
    """
    if factor < 1:
        raise ValueError("scale factor %r: allowed: an integer >= 1"
                         % (factor,))
    views: dict[ty.Any, stats.PciDeviceStats] = {}
    for n in nodes:
        n.share_view(views)
    hosts = [n if i == 0 else n.replica()
             for i in range(factor) for n in nodes]
    return hosts, len(views)


@dataclasses.dataclass
class Timing:
    """One timed request."""

    probe: str
    hosts: int
    #: hosts passing the CPU/RAM filter, and the PCI filter after it.
    fit_cpu_ram: int
    fit_pci: int
    wall_s: float
    #: CPU time: CPU/RAM filter, PCI filter, weigher.
    cpu_ram_s: float
    pci_s: float
    weigh_s: float

    @property
    def cpu_s(self) -> float:
        return self.cpu_ram_s + self.pci_s + self.weigh_s

    @property
    def pci_per_host_s(self) -> float:
        return self.pci_s / self.fit_cpu_ram if self.fit_cpu_ram else 0.0


def time_request(hosts: list[cs.Node], probe: str, task: cw.Task,
                 flavors: cs.Flavors, weigher: cs.Weigher,
                 seed: int = 42) -> Timing:
    """Filter and weigh ``task`` over ``hosts``, uncached, timed."""
    key, reqs = flavors.key(task), flavors.requests(task)
    rng = random.Random(seed)
    for n in hosts:  # nothing kept from an earlier request
        n.forget_caches()
    wall, cpu = time.perf_counter(), time.process_time()
    fit = [n for n in hosts if task.cpu_milli <= n.cpu_free
           and task.memory_mib <= n.ram_free]
    cpu_ram = time.process_time()
    able = [n for n in fit if n.sched.support_requests(reqs)] \
        if reqs else fit
    pci = time.process_time()
    if able:
        weigher(able, task, key, rng)
    weigh = time.process_time()
    return Timing(probe, len(hosts), len(fit), len(able),
                  time.perf_counter() - wall, cpu_ram - cpu, pci - cpu_ram,
                  weigh - pci)


def probes(tasks: ty.Sequence[cw.Task]) -> list[tuple[str, cw.Task]]:
    """The requests timed: a GPU share, one whole GPU, eight whole GPUs
    (the first of each in the task list, when there is one)."""
    kinds = (("share", lambda t: t.is_share),
             ("1 GPU", lambda t: t.num_gpu == 1 and not t.is_share),
             ("8 GPUs", lambda t: t.num_gpu == 8))
    found = []
    for name, wanted in kinds:
        task = next((t for t in tasks if wanted(t)), None)
        if task is not None:
            found.append((name, task))
    return found


@dataclasses.dataclass
class ScaleResult:
    """Every timed request at one cluster size."""

    hosts: int
    views: int
    timings: list[Timing]

    def median(self, what: ty.Callable[[Timing], float],
               probe: str | None = None) -> float:
        """Median of ``what`` over the requests of ``probe``, or (None)
        over those that reached the PCI filter on some host: a request
        the CPU/RAM filter alone refuses everywhere asks no PCI check and
        would say nothing of it."""
        picked = [t for t in self.timings if t.probe == probe] \
            if probe is not None else [t for t in self.timings
                                       if t.fit_cpu_ram]
        return statistics.median(what(t) for t in picked) if picked \
            else 0.0

    def probes(self) -> list[str]:
        return list(dict.fromkeys(t.probe for t in self.timings))


def measure(cluster: FilledCluster, factor: int, policy: str = "ours",
            repeats: int = 3) -> ScaleResult:
    """Each probe ``repeats`` times over ``factor`` x the cluster.

    :raises: ValueError for a factor below 1 or an unknown policy.
    """
    if policy not in cs.POLICIES:
        raise ValueError("policy %r: allowed: %s" % (
            policy, ", ".join(cs.POLICIES)))
    hosts, views = scaled_hosts(cluster.nodes, factor)
    weigher = cs.POLICIES[policy].weigher(cluster.mix, cluster.tasks)
    timings = [time_request(hosts, name, task, cluster.flavors, weigher)
               for _ in range(repeats) for name, task in probes(cluster.tasks)]
    return ScaleResult(len(hosts), views, timings)
