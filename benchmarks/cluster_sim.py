"""Replay tasks onto a cluster through pci_vgpu's real scheduling code.

Each node is a compute node: its GPUs are ``PciDevice`` objects tracked by
its own compute-side :class:`pci_vgpu.stats.PciDeviceStats`, and the
scheduler holds what the node reports, the pools in Nova's dict shape, as a
scheduler-side ``PciDeviceStats`` (``HostState.pci_stats``).  A task becomes
a flavor (vCPUs, RAM and ``pci_passthrough:alias``) whose PCI requests come
from :func:`pci_vgpu.request.get_pci_requests_from_flavor` with generated
``[pci] alias`` entries: a whole GPU of the accepted models, or one vGPU of
the type whose size is the task's share.

Scheduling a task, as Nova does it: the filters drop nodes without the CPU
or RAM and nodes whose scheduler-side pools do not ``support_requests``
(the PciPassthroughFilter); a weigher ranks the rest; the chosen node's
compute side ``consume_requests`` picks the GPU(s) with its in-host
placement policy and the devices are claimed; the node then reports its
pools again.

A filter answer depends only on the node's state and the request, so it is
kept per node until the node changes (Nova's scheduler would ask again:
:mod:`benchmarks.cluster_scale` measures that uncached cost for the SCALE
line).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import typing as ty

from oslo_config import cfg

from benchmarks import cluster_policies as policies
from benchmarks import cluster_workload as cw
from pci_vgpu import capacity
from pci_vgpu import conf as pci_conf
from pci_vgpu import fragmentation as frag
from pci_vgpu import request
from pci_vgpu import stats
from pci_vgpu.objects import pci_device

VENDOR = "10de"
#: NVIDIA vGPU sizes (share of a GPU, milli) for the --nvidia case.
NVIDIA_SIZES = (125, 250, 500)


share_type = cw.share_type


def nvidia_size(milli: int) -> int:
    """A share rounded up to the next NVIDIA vGPU size (or a whole GPU)."""
    return next((s for s in NVIDIA_SIZES if milli <= s), cw.MILLI)


def to_nvidia(tasks: ty.Iterable[cw.Task]) -> list[cw.Task]:
    """Sharing tasks rounded up to 1/8, 1/4, 1/2 of a GPU, or whole."""
    return [dataclasses.replace(t, gpu_milli=nvidia_size(t.gpu_milli))
            if t.is_share else t for t in tasks]


@dataclasses.dataclass
class Catalog:
    """How the cluster's GPUs are described to pci_vgpu."""

    #: model -> product id (made up: the trace names models, not ids).
    products: dict[str, str]
    #: share sizes (milli) offered as vGPU types on every GPU.
    shares: tuple[int, ...]
    #: ``budget`` (the paper's model: any shares mix) or ``one-type``.
    sharing: str

    @classmethod
    def build(cls, nodes: ty.Sequence[cw.NodeSpec],
              tasks: ty.Iterable[cw.Task], sharing: str) -> Catalog:
        models = sorted({n.model for n in nodes})
        shares = sorted({t.gpu_milli for t in tasks if t.is_share})
        return cls({m: "%04x" % (0x2000 + i) for i, m in enumerate(models)},
                   tuple(shares), sharing)

    def vgpu_types(self) -> dict[str, dict[str, ty.Any]]:
        types = {}
        for milli in self.shares:
            entry: dict[str, ty.Any] = {
                "name": share_type(milli), "max": cw.MILLI // milli,
                "available": cw.MILLI // milli, "description": ""}
            if self.sharing == capacity.BUDGET:
                entry["size"] = {"gpu_milli": milli}
            types[share_type(milli)] = entry
        return types

    def gpu_devices(self, index: int, node: cw.NodeSpec
                    ) -> list[dict[str, ty.Any]]:
        """The node's GPUs in the driver's ``pci_passthrough_devices``
        shape."""
        types = json.dumps(self.vgpu_types())
        devs = []
        for g in range(node.gpus):
            address = "%04x:%02x:00.0" % (index // 256, 0x10 + g)
            dev: dict[str, ty.Any] = {
                "address": address, "vendor_id": VENDOR,
                "product_id": self.products[node.model], "numa_node": None,
                "dev_type": "type-PCI", "parent_addr": None,
                "label": "label_%s_%s" % (VENDOR, self.products[node.model]),
                "dev_id": "pci_" + address.replace(":", "_"),
                "vgpu_types": types, "vgpu_sharing": self.sharing}
            if self.sharing == capacity.BUDGET and self.shares:
                dev["vgpu_capacity"] = json.dumps({"gpu_milli": cw.MILLI})
            devs.append(dev)
        return devs

    # -- flavors ---------------------------------------------------------------

    def alias_name(self, task: cw.Task) -> str:
        what = ("share-%04d" % task.gpu_milli if task.is_share else "gpu")
        return what + ("-" + "-".join(sorted(task.models))
                       if task.models else "")

    def aliases(self, tasks: ty.Iterable[cw.Task]) -> list[str]:
        """``[pci] alias`` values serving every task: one definition per
        accepted model (Nova ORs the definitions of one name)."""
        wanted = {self.alias_name(t): t for t in tasks if t.num_gpu}
        out = []
        for name, task in sorted(wanted.items()):
            for model in sorted(task.models or self.products):
                alias: dict[str, ty.Any] = {
                    "name": name, "vendor_id": VENDOR,
                    "product_id": self.products[model]}
                if task.is_share:
                    alias["vgpu_types"] = [share_type(task.gpu_milli)]
                out.append(json.dumps(alias))
        return out


class Flavors:
    """A flavor per task shape, and its PCI requests from the real alias
    and flavor code."""

    def __init__(self, catalog: Catalog, tasks: ty.Iterable[cw.Task]) -> None:
        tasks = list(tasks)
        self.catalog = catalog
        self.conf = cfg.ConfigOpts()
        pci_conf.register_opts(self.conf)
        self.conf([], default_config_files=[])
        self.conf.set_override("alias", catalog.aliases(tasks), group="pci")
        self._requests: dict[str, list[ty.Any]] = {}

    def key(self, task: cw.Task) -> str:
        """The flavor's ``pci_passthrough:alias`` (its PCI identity)."""
        if not task.num_gpu:
            return ""
        return "%s:%d" % (self.catalog.alias_name(task), task.num_gpu)

    def requests(self, task: cw.Task) -> list[ty.Any]:
        key = self.key(task)
        if key not in self._requests:
            flavor = {"vcpus": task.cpu_milli / 1000.0,
                      "memory_mb": task.memory_mib,
                      "extra_specs": {"pci_passthrough:alias": key}
                      if key else {}}
            self._requests[key] = list(request.get_pci_requests_from_flavor(
                flavor, self.conf).requests)
        return self._requests[key]


class Node:
    """One compute node: its devices, its pools, its free CPU and RAM."""

    def __init__(self, index: int, spec: cw.NodeSpec, catalog: Catalog,
                 policy: str, mix: frag.TaskMix | None) -> None:
        self.spec = spec
        self.product = catalog.products[spec.model]
        self.cpu_free, self.ram_free = spec.cpu_milli, spec.memory_mib
        self.capacity_milli = spec.gpus * cw.MILLI
        self.used_milli = 0
        self.compute = stats.PciDeviceStats(placement_policy=policy,
                                            task_mix=mix)
        for dev in catalog.gpu_devices(index, spec):
            self.compute.add_device(pci_device.PciDevice.create(None, dev))
        self.generation = 0
        self._report()

    def _report(self) -> None:
        """What the node reports to the scheduler (pools as dicts)."""
        self.pools = list(self.compute)
        self._sched: stats.PciDeviceStats | None = None
        self._gpus: list[frag.HostGpu] | None = None
        self.cache: dict[ty.Any, ty.Any] = {}
        self.generation += 1

    @property
    def sched(self) -> stats.PciDeviceStats:
        """The scheduler's view (``HostState.pci_stats``), rebuilt from the
        last report when first needed."""
        if self._sched is None:
            self._sched = stats.PciDeviceStats(stats=self.pools)
        return self._sched

    def share_view(self, views: dict[ty.Any, stats.PciDeviceStats]) -> None:
        """Take the scheduler view of an equal report from ``views`` (or
        put this one's there): the view is built from the report alone and
        ``support_requests`` leaves it as it was, so nodes reporting the
        same pools may hold one view (memory, not time: each node's
        filter still asks it)."""
        key = tuple(tuple(sorted(d.items())) for d in self.pools)
        found = views.get(key)
        if found is None:
            found = views[key] = self.sched
        self._sched = found

    def forget_caches(self) -> None:
        """Drop what the node keeps between requests (filter answers, the
        weigher's GPUs read from the report): the next request pays in
        full, as in a scheduler that keeps nothing."""
        self.cache = {}
        self._gpus = None

    def replica(self) -> Node:
        """Another node reporting exactly what this one reports (the 10x
        cluster of the scale figure): the same free CPU/RAM, report,
        scheduler view and compute side, its own caches.  For timing the
        scheduler only: claiming on it would change the original's GPUs.
        """
        twin = copy.copy(self)
        twin.forget_caches()
        return twin

    @property
    def gpus(self) -> list[frag.HostGpu]:
        if self._gpus is None:
            self._gpus = frag.host_gpus(self.pools)
        return self._gpus

    def fits(self, task: cw.Task, flavor_key: str,
             requests: list[ty.Any]) -> bool:
        """CPU and RAM filters, then the PCI passthrough filter."""
        if task.cpu_milli > self.cpu_free or task.memory_mib > self.ram_free:
            return False
        if not requests:
            return True
        key = ("fit", flavor_key)
        found = self.cache.get(key)
        if found is None:
            found = self.cache[key] = self.sched.support_requests(requests)
        return bool(found)

    def shares_on(self, vgpu_type: str) -> list[str]:
        """GPUs (addresses) whose reported pools have a free ``vgpu_type``."""
        return [str(d["address"]) for d in self.pools
                if d.get("vgpu_type") == vgpu_type and d["count"] > 0]

    def claim(self, task: cw.Task, requests: list[ty.Any]) -> None:
        """The compute node's claim: pick the GPU(s), mark them claimed."""
        if requests:
            for dev in self.compute.consume_requests(requests):
                dev.status = "claimed"
                self.compute.update_device(dev)
        self.cpu_free -= task.cpu_milli
        self.ram_free -= task.memory_mib
        self.used_milli += task.total_milli
        self._report()


# -- policies: see benchmarks.cluster_policies --------------------------------

Policy = policies.Policy
POLICIES = policies.POLICIES
task_mix = policies.task_mix
weigh_bestfit = policies.weigh_bestfit
Weigher = policies.Weigher
_kind_of = policies._kind_of


# -- replay ------------------------------------------------------------------


@dataclasses.dataclass
class Curve:
    """Arrived and allocated GPU milli after each task, and the fails."""

    capacity_milli: int
    arrived: list[int] = dataclasses.field(default_factory=list)
    used: list[int] = dataclasses.field(default_factory=list)
    failed: int = 0

    def ratio_at(self, percent: int) -> float | None:
        """Allocation ratio (% of GPUs) when ``percent`` % has arrived:
        mean over the tasks whose arrival rounds to it (the simulator's
        merge_alloc_discrete), else over percent +- 1."""
        for width in (0, 1):
            picked = [u for a, u in zip(self.arrived, self.used)
                      if abs(round(100.0 * a / self.capacity_milli)
                             - percent) <= width]
            if picked:
                return 100.0 * sum(picked) / len(picked) / self.capacity_milli
        return None


def build_nodes(specs: ty.Sequence[cw.NodeSpec], catalog: Catalog,
                policy: Policy, mix: frag.TaskMix) -> list[Node]:
    return [Node(i, s, catalog, policy.in_host, mix)
            for i, s in enumerate(specs)]


@dataclasses.dataclass(frozen=True)
class Setting:
    """What every replay of one task list on one cluster under one policy
    shares, whatever the seed: the vGPU catalog, the policy's task mix and
    the flavors (their PCI requests parsed once)."""

    catalog: Catalog
    mix: frag.TaskMix
    flavors: Flavors

    @classmethod
    def of(cls, specs: ty.Sequence[cw.NodeSpec], tasks: ty.Sequence[cw.Task],
           sharing: str, policy: Policy) -> "Setting":
        catalog = Catalog.build(specs, tasks, sharing)
        return cls(catalog, policy.mix(tasks, catalog.products),
                   Flavors(catalog, tasks))


class Candidates:
    """The hosts that pass the filters, per task shape (CPU, RAM, flavor).

    A filter answer changes only when the host does, so a shape's answers
    are kept and only the hosts that changed since the shape was last
    asked are filtered again (each through :meth:`Node.fits`: CPU, RAM,
    ``support_requests``).
    """

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self._index = {id(n): i for i, n in enumerate(nodes)}
        #: Indices of the hosts that changed, in order.
        self._changed: list[int] = []
        #: shape -> [changes seen, answer per host].
        self._known: dict[tuple[int, int, str], list[ty.Any]] = {}

    def able(self, task: cw.Task, key: str, reqs: list[ty.Any]
             ) -> list[Node]:
        shape = (task.cpu_milli, task.memory_mib, key)
        entry = self._known.get(shape)
        if entry is None:
            entry = self._known[shape] = [len(self._changed), [
                n.fits(task, key, reqs) for n in self.nodes]]
        else:
            answers = entry[1]
            for i in set(self._changed[entry[0]:]):
                answers[i] = self.nodes[i].fits(task, key, reqs)
            entry[0] = len(self._changed)
        return [n for n, ok in zip(self.nodes, entry[1]) if ok]

    def changed(self, node: Node) -> None:
        self._changed.append(self._index[id(node)])


def pin_gpu(node: Node, requests: list[ty.Any], address: str
            ) -> list[ty.Any]:
    """The requests narrowed to the GPU at ``address`` (named in the spec,
    as a device_spec could), so that ``consume_requests`` takes that one."""
    pinned = []
    for r in requests:
        r = r.obj_clone()
        r.spec = [dict(s, address=address) for s in r.spec
                  if s.get("product_id") == node.product]
        pinned.append(r)
    return pinned


def replay(nodes: list[Node], tasks: ty.Iterable[cw.Task], flavors: Flavors,
           weigher: policies.Weigher, seed: int) -> Curve:
    """Schedule every task in order; returns the allocation curve.

    A weigher with a ``gpu_address(node, task, rng)`` method chooses the
    GPU of a task itself (the paper's Random and FGD); otherwise the host's
    in-host policy does.
    """
    rng = random.Random(seed)
    curve = Curve(sum(n.capacity_milli for n in nodes))
    candidates = Candidates(nodes)
    choose_gpu = getattr(weigher, "gpu_address", None)
    arrived = used = 0
    for task in tasks:
        arrived += task.total_milli
        key, reqs = flavors.key(task), flavors.requests(task)
        able = candidates.able(task, key, reqs)
        if able:
            node = weigher(able, task, key, rng)
            address = choose_gpu(node, task, rng) if choose_gpu else None
            node.claim(task, pin_gpu(node, reqs, address) if address
                       else reqs)
            candidates.changed(node)
            used += task.total_milli
        else:
            curve.failed += 1
        curve.arrived.append(arrived)
        curve.used.append(used)
    return curve
