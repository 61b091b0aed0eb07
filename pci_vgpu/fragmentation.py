"""Fragmentation-aware placement: keep free GPU capacity usable.

A GPU's free capacity is *fragmented* for a kind of task when that task
cannot use it: the free share is smaller than the vGPU it wants, another
type holds a one-type (time-sliced) GPU, the GPU is partly used while the
task wants it whole, or the host has fewer whole free GPUs than the task
wants.  Weighted by how often each kind of task arrives (a :class:`TaskMix`),
that is a host's *expected fragmentation* (the idea of Weng et al.,
"Beware of Fragmentation", USENIX ATC '23), here judged with pci_vgpu's own
sharing rules through :mod:`pci_vgpu.capacity`, so the one-type lock and
typed budgets count exactly as the pools count them.

A kind may also need host CPU and RAM: a host that lacks them for one
task of the kind loses all its free share to it (FGD's rule), and with
``copies`` a kind can use only what as many of its tasks as the free CPU
and RAM admit would take, which sees GPUs that the CPU will strand before
the last CPU is gone.  With ``accepted_only`` a kind is judged only on the
GPU models it accepts, among the kinds that accept the host (FGD counts
every other model's free share as lost to it, which draws all tasks to the
hosts of rare models first).

Placing a task changes the expected fragmentation of one host; the policy
places it where the increase is smallest (the host weigher,
:func:`host_delta`), and inside the host on the GPU whose own increase is
smallest (:func:`gpu_key`, the in-host ``fragmentation`` placement policy).
Ties go to the fuller GPU or host, which keeps empty ones whole for the big
tasks to come.

The kinds are grouped by the GPUs they want (their *shapes*), and what a
GPU offers each shape is kept per GPU state (:class:`GpuProfile`), so a
host costs a pass over its GPUs per shape, not per kind.

Plain data, no objects, no I/O; floats are fine here (a score, not a
capacity rule: capacity itself stays in integers in :mod:`capacity`).
"""

from __future__ import annotations

import bisect
import dataclasses
import typing as ty

from pci_vgpu import capacity
from pci_vgpu import pool

FRAGMENTATION = "fragmentation"


@dataclasses.dataclass(frozen=True)
class TaskKind:
    """One kind of GPU task and how often it arrives."""

    #: The vGPU type it wants one of; None: ``gpus`` whole GPUs.
    vgpu_type: str | None
    #: Whole GPUs it wants (1 for a vGPU).
    gpus: int = 1
    #: GPU models (product ids) it accepts; None: any.
    products: frozenset[str] | None = None
    #: Relative frequency (any positive scale; normalised by the mix).
    weight: float = 1.0
    #: Host CPU (milli-vCPUs) and RAM (MiB) it needs besides the GPUs; a
    #: host without them cannot use any of its free GPU share for it.
    cpu_milli: int = 0
    memory_mib: int = 0


Shape = ty.Tuple[ty.Optional[str], int, ty.Optional[ty.FrozenSet[str]]]


class _Shape:
    """The kinds of a mix that want the same GPUs (type, count, models),
    with what each needs of the host's CPU and RAM."""

    def __init__(self, shape: Shape, kinds: list[TaskKind]) -> None:
        self.vgpu_type, self.gpus, self.products = shape
        kinds = sorted(kinds, key=lambda k: (k.cpu_milli, k.memory_mib))
        self.cpus = [k.cpu_milli for k in kinds]
        self.rams = [k.memory_mib for k in kinds]
        self.weights = [k.weight for k in kinds]
        #: cumulated[i]: weight of the i kinds wanting the least CPU.
        self.cumulated = [0.0]
        for w in self.weights:
            self.cumulated.append(self.cumulated[-1] + w)
        self.weight = self.cumulated[-1]
        self._any_ram = any(self.rams)
        self.needs = list(zip(self.cpus, self.rams, self.weights))

    def able_weight(self, cpu_free: int | None, ram_free: int | None
                    ) -> float:
        """Weight of the kinds whose CPU and RAM the host has (None: not
        judged)."""
        if cpu_free is None and (ram_free is None or not self._any_ram):
            return self.weight
        if cpu_free is not None and (ram_free is None or not self._any_ram):
            return self.cumulated[bisect.bisect_right(self.cpus, cpu_free)]
        return sum(w for c, r, w in zip(self.cpus, self.rams, self.weights)
                   if (cpu_free is None or c <= cpu_free)
                   and (ram_free is None or r <= ram_free))

    def used_by_copies(self, usable: float, unit: float,
                       cpu_free: int | None, ram_free: int | None) -> float:
        """Weighted share of ``usable`` the kinds' tasks would take, as
        many of each as the free CPU and RAM admit (``unit``: what one
        task takes)."""
        used = 0.0
        for c, r, w in self.needs:
            n = usable
            if cpu_free is not None and c:
                if c > cpu_free:
                    continue
                n = min(n, cpu_free // c * unit)
            if ram_free is not None and r:
                if r > ram_free:
                    continue
                n = min(n, ram_free // r * unit)
            used += w * n
        return used

    def serves(self, gpu: HostGpu) -> bool:
        """Can one unit of the shape go on this GPU now (ignoring counts)?"""
        if self.products is not None and gpu.product not in self.products:
            return False
        if self.vgpu_type is None:
            return capacity.whole_assignable(gpu.state)
        return capacity.free_instances(gpu.state, self.vgpu_type) > 0


#: GPU profiles a mix keeps (see :meth:`TaskMix.profile`) before it
#: forgets them all: a bound on memory, not a tuning knob.
_PROFILES_KEPT = 100000


class GpuProfile(ty.NamedTuple):
    """What the policy needs of one GPU, per shape of a mix."""

    #: Share of the GPU still free.
    free: float
    #: Whether one unit of each shape fits on it now.
    served: tuple[bool, ...]
    #: Weight of the shapes it does not serve, judged on this GPU alone.
    unserved: float
    #: Share of the GPU one unit of each shape takes (vGPU shapes).
    units: tuple[float, ...]
    #: Whether each shape accepts the GPU's model at all.
    accepts: tuple[bool, ...]


@dataclasses.dataclass(frozen=True)
class TaskMix:
    """The kinds of tasks expected, with their frequencies."""

    kinds: tuple[TaskKind, ...]
    #: The kinds grouped by the GPUs they want (derived).
    shapes: tuple[_Shape, ...] = dataclasses.field(
        init=False, repr=False, compare=False)
    _types: list[str] = dataclasses.field(
        init=False, repr=False, compare=False)
    _profiles: dict[tuple[ty.Any, ...], GpuProfile] = dataclasses.field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.kinds:
            raise ValueError("a task mix needs at least one kind of task")
        groups: dict[Shape, list[TaskKind]] = {}
        for kind in self.kinds:
            if kind.weight <= 0 or kind.gpus < 1:
                raise ValueError(
                    "task kind %r: weight must be > 0 and gpus >= 1" % (kind,))
            groups.setdefault((kind.vgpu_type, kind.gpus, kind.products),
                              []).append(kind)
        shapes = tuple(_Shape(shape, kinds) for shape, kinds in groups.items())
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "_types",
                           [s.vgpu_type or "" for s in shapes])
        object.__setattr__(self, "_profiles", {})

    @property
    def total(self) -> float:
        return sum(k.weight for k in self.kinds)

    def profile(self, gpu: HostGpu) -> GpuProfile:
        """The GPU's :class:`GpuProfile` for this mix.

        Kept per GPU state: what decides it is the GPU's model, its sharing
        rule, budget and whole state, the vGPUs on it (their types, sizes
        and use) and the maxima and sizes of the shapes' types.
        """
        state = gpu.state
        key = (gpu.product, state.sharing, state.whole, state.foreign,
               state.capacity,
               tuple(sorted((t, n, state.sizes.get(t))
                            for t, n in state.existing.items() if n)),
               tuple(sorted((t, n) for t, n in state.in_use.items() if n)),
               tuple(map(state.max_instances.get, self._types)),
               tuple(map(state.sizes.get, self._types)))
        found = self._profiles.get(key)
        if found is None:
            if len(self._profiles) >= _PROFILES_KEPT:
                self._profiles.clear()
            found = self._profiles[key] = self._profile(gpu)
        return found

    def _profile(self, gpu: HostGpu) -> GpuProfile:
        served = tuple(s.serves(gpu) for s in self.shapes)
        state = gpu.state
        units = tuple(
            max(n / c for n, c in zip(state.sizes[s.vgpu_type],
                                      state.capacity))
            if ok and s.vgpu_type is not None else float(s.gpus)
            for s, ok in zip(self.shapes, served))
        return GpuProfile(
            free_share(state), served,
            sum(s.weight for s, ok in zip(self.shapes, served) if not ok),
            units, tuple(s.products is None or gpu.product in s.products
                         for s in self.shapes))


def mix_of_types(types: ty.Iterable[str], whole: bool = True) -> TaskMix:
    """Every vGPU type equally likely, plus one whole GPU if ``whole``.

    What a host knows without a measured mix: the types it offers.
    """
    kinds = [TaskKind(t) for t in sorted(set(types))]
    if whole:
        kinds.append(TaskKind(None))
    return TaskMix(tuple(kinds))


@dataclasses.dataclass
class HostGpu:
    """A GPU of a host as the policy sees it."""

    state: capacity.GpuState
    #: Its model (product id), matched against ``TaskKind.products``.
    product: str = ""


def free_share(state: capacity.GpuState) -> float:
    """Share of the GPU still free (0 when it is given whole)."""
    if capacity.vgpus_blocked(state):
        return 0.0
    taken = capacity.used(state)
    fill = max((u / c for u, c in zip(taken, state.capacity)), default=0.0)
    return max(0.0, 1.0 - fill)


def host_fragmentation(gpus: ty.Sequence[HostGpu], mix: TaskMix,
                       cpu_free: int | None = None,
                       ram_free: int | None = None,
                       copies: bool = False,
                       accepted_only: bool = False) -> float:
    """Expected free GPU share (in GPUs) the mix's next task cannot use.

    A kind can use the free share of the GPUs that can take one unit of it
    now; a whole-GPU kind wanting k GPUs only when the host has k of them;
    a kind whose CPU or RAM the host lacks (``cpu_free``/``ram_free``,
    None: not judged) none of it.  Weighted by the kinds' frequencies.

    :param copies: judge CPU and RAM for as many tasks of the kind as
        would use that share: a kind can use only what the tasks that the
        host's CPU and RAM still admit would take (the default, FGD's
        rule, asks them for one task).
    :param accepted_only: judge each kind on the GPUs of the models it
        accepts, weighted among the kinds that accept some GPU of the
        host (the expected loss for a next task that could come here);
        by default (FGD's rule) a kind loses all the free share of models
        it does not accept, which rewards any host of a rare model.
    """
    return profiles_fragmentation([mix.profile(g) for g in gpus], mix,
                                  cpu_free, ram_free, copies, accepted_only)


def profiles_fragmentation(profiles: ty.Sequence[GpuProfile], mix: TaskMix,
                           cpu_free: int | None = None,
                           ram_free: int | None = None,
                           copies: bool = False,
                           accepted_only: bool = False) -> float:
    """:func:`host_fragmentation` of a host given its GPUs' profiles
    (:meth:`TaskMix.profile`), for callers that keep them."""
    free = sum(p.free for p in profiles)
    if not free:
        return 0.0
    judged = copies and (cpu_free is not None or ram_free is not None)
    lost = weight = 0.0
    for s, shape in enumerate(mix.shapes):
        seen = free
        if accepted_only and shape.products is not None:
            seen = sum(p.free for p in profiles if p.accepts[s])
            if not any(p.accepts[s] for p in profiles):
                continue
        weight += shape.weight
        serving = [p for p in profiles if p.served[s]]
        usable = sum(p.free for p in serving) if (
            shape.vgpu_type is not None or len(serving) >= shape.gpus
        ) else 0.0
        if not usable:
            lost += shape.weight * seen
        elif judged:
            lost += shape.weight * seen - shape.used_by_copies(
                usable, serving[0].units[s], cpu_free, ram_free)
        else:
            lost += (shape.weight * seen
                     - shape.able_weight(cpu_free, ram_free) * usable)
    if not accepted_only:
        return lost / mix.total
    return lost / weight if weight else 0.0


def gpu_fragmentation(gpu: HostGpu, mix: TaskMix) -> float:
    """One GPU's part of :func:`host_fragmentation`, judged on this GPU
    alone (a multi-GPU kind as if the host had its other GPUs)."""
    found = mix.profile(gpu)
    return found.free * found.unserved / mix.total


def gpu_key(gpu: HostGpu, vgpu_type: str, mix: TaskMix
            ) -> tuple[float, float, str]:
    """Sort key of a GPU for one more vGPU of ``vgpu_type``: the GPU whose
    fragmentation grows least first, then the fuller one, then address.

    :raises: VgpuTypeNotSupported, VgpuCapacityExceeded when the GPU
        cannot host it (callers only rank GPUs that can).
    """
    before = gpu_fragmentation(gpu, mix)
    after_state = gpu.state.copy()
    capacity.consume_instance(after_state, vgpu_type)
    after = gpu_fragmentation(HostGpu(after_state, gpu.product), mix)
    return (round(after - before, 9), round(free_share(gpu.state), 9),
            gpu.state.address)


def choose_gpu(gpus: ty.Sequence[HostGpu], vgpu_type: str,
               mix: TaskMix) -> HostGpu | None:
    """The GPU the in-host policy gives one vGPU of ``vgpu_type``."""
    able = [g for g in gpus
            if capacity.free_instances(g.state, vgpu_type) > 0]
    if not able:
        return None
    return min(able, key=lambda g: gpu_key(g, vgpu_type, mix))


def place(gpus: ty.Sequence[HostGpu], vgpu_type: str | None, count: int,
          mix: TaskMix) -> list[HostGpu] | None:
    """Copies of ``gpus`` after the policy places the task, or None.

    ``vgpu_type`` None: ``count`` whole GPUs (the first whole free ones in
    address order: equal for fragmentation); otherwise one vGPU per unit,
    each on the GPU :func:`choose_gpu` picks.
    """
    after = [HostGpu(g.state.copy(), g.product) for g in gpus]
    for _ in range(count):
        if vgpu_type is None:
            free = sorted((g for g in after
                           if capacity.whole_assignable(g.state)),
                          key=lambda g: g.state.address)
            if not free:
                return None
            free[0].state.whole = capacity.WHOLE_USED
        else:
            best = choose_gpu(after, vgpu_type, mix)
            if best is None:
                return None
            capacity.consume_instance(best.state, vgpu_type)
    return after


def host_delta(gpus: ty.Sequence[HostGpu], vgpu_type: str | None,
               count: int, mix: TaskMix,
               cpu: tuple[int, int] | None = None,
               ram: tuple[int, int] | None = None,
               copies: bool = False,
               accepted_only: bool = False) -> float | None:
    """Growth of the host's expected fragmentation if it takes the task;
    None when it cannot.  Lower is better (the weigher negates it).

    :param cpu: (free, wanted) host CPU in the kinds' unit, or None;
    :param ram: (free, wanted) host RAM, or None.
    """
    after = place(gpus, vgpu_type, count, mix) if count else [
        HostGpu(g.state, g.product) for g in gpus]
    if after is None:
        return None
    cpu_before = cpu[0] if cpu else None
    ram_before = ram[0] if ram else None
    cpu_after = cpu[0] - cpu[1] if cpu else None
    ram_after = ram[0] - ram[1] if ram else None
    return (host_fragmentation(after, mix, cpu_after, ram_after, copies,
                               accepted_only)
            - host_fragmentation(gpus, mix, cpu_before, ram_before, copies,
                                 accepted_only))


def host_gpus(pool_dicts: ty.Iterable[ty.Mapping[str, ty.Any]]
              ) -> list[HostGpu]:
    """The GPUs of a host from its pools in Nova's dict shape (what the
    scheduler holds: ``ComputeNode.pci_device_pools``), address order.

    :raises: InvalidPoolTag and the capacity errors of
        :func:`pci_vgpu.pool.gpu_from_dicts` for pools with bad vGPU tags.
    """
    by_gpu: dict[str, list[dict[str, ty.Any]]] = {}
    for d in pool_dicts:
        if d.get("vgpu_type"):
            by_gpu.setdefault(str(d.get("address")), []).append(dict(d))
    return [HostGpu(pool.gpu_from_dicts(addr, ds),
                    str(ds[0].get("product_id") or ""))
            for addr, ds in sorted(by_gpu.items())]
