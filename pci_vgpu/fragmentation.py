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

Placing a task changes the expected fragmentation of one host; the policy
places it where the increase is smallest (the host weigher,
:func:`host_delta`), and inside the host on the GPU whose own increase is
smallest (:func:`gpu_key`, the in-host ``fragmentation`` placement policy).
Ties go to the fuller GPU or host, which keeps empty ones whole for the big
tasks to come.

Plain data, no objects, no I/O; floats are fine here (a score, not a
capacity rule: capacity itself stays in integers in :mod:`capacity`).
"""

from __future__ import annotations

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


@dataclasses.dataclass(frozen=True)
class TaskMix:
    """The kinds of tasks expected, with their frequencies."""

    kinds: tuple[TaskKind, ...]

    def __post_init__(self) -> None:
        if not self.kinds:
            raise ValueError("a task mix needs at least one kind of task")
        for kind in self.kinds:
            if kind.weight <= 0 or kind.gpus < 1:
                raise ValueError(
                    "task kind %r: weight must be > 0 and gpus >= 1" % (kind,))

    @property
    def total(self) -> float:
        return sum(k.weight for k in self.kinds)


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


def _serves(kind: TaskKind, gpu: HostGpu) -> bool:
    """Can one unit of ``kind`` go on this GPU now (ignoring counts)?"""
    if kind.products is not None and gpu.product not in kind.products:
        return False
    if kind.vgpu_type is None:
        return capacity.whole_assignable(gpu.state)
    return capacity.free_instances(gpu.state, kind.vgpu_type) > 0


def host_fragmentation(gpus: ty.Sequence[HostGpu], mix: TaskMix,
                       cpu_free: int | None = None,
                       ram_free: int | None = None) -> float:
    """Expected free GPU share (in GPUs) the mix's next task cannot use.

    For a whole-GPU kind wanting k GPUs, whole free GPUs count as usable
    only when the host has k of them that the kind accepts; a kind whose
    CPU or RAM the host lacks (``cpu_free``/``ram_free``, None: not
    judged) can use none of it.
    """
    free = [free_share(g.state) for g in gpus]
    lost_total = 0.0
    for kind in mix.kinds:
        if (cpu_free is not None and kind.cpu_milli > cpu_free) or (
                ram_free is not None and kind.memory_mib > ram_free):
            lost_total += kind.weight * sum(free)
            continue
        serves = [_serves(kind, g) for g in gpus]
        if kind.vgpu_type is None and sum(serves) < kind.gpus:
            serves = [False] * len(gpus)
        lost_total += kind.weight * sum(
            f for f, ok in zip(free, serves) if not ok)
    return lost_total / mix.total


def gpu_fragmentation(gpu: HostGpu, mix: TaskMix) -> float:
    """One GPU's part of :func:`host_fragmentation` (whole kinds of one
    GPU are judged on this GPU alone)."""
    free = free_share(gpu.state)
    if not free:
        return 0.0
    lost = sum(k.weight for k in mix.kinds
               if not (_serves(k, gpu) and (k.vgpu_type is not None
                                            or k.gpus == 1)))
    return free * lost / mix.total


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
               ram: tuple[int, int] | None = None) -> float | None:
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
    return (host_fragmentation(after, mix, cpu_after, ram_after)
            - host_fragmentation(gpus, mix, cpu_before, ram_before))


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
