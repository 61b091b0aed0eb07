"""FGD, the paper's policy, as a baseline of the cluster replay.

Fragmentation Gradient Descent (Weng et al., "Beware of Fragmentation",
USENIX ATC '23), written here from the paper and from what its simulator
(``hkust-adsl/kubernetes-scheduler-simulator``) computes, so that the
harness can be checked on the hard part before ``ours`` is judged:

* **Typical pods**: the task list's tasks grouped by (CPU, share of one
  GPU, GPU count, accepted models), CPU-only tasks included, most frequent
  first (ties: the larger shape first), kept until they cover 95 % of the
  tasks, frequencies renormalised over those kept.
* **A node's fragmentation** for one typical pod: the node's free GPU share
  (milli-GPUs) the pod cannot use.  All of it when the pod wants no GPU,
  when the node's model is not one the pod accepts, when the node lacks
  the pod's CPU, or when no ``count`` GPUs each have the pod's share free;
  otherwise only the free share of the GPUs with less than the pod's share
  free.  The node's amount is the frequency-weighted sum.  Memory is not
  part of it.
* **Score** of a node for a task: ``int(100 * sigmoid((before - after) /
  1000))`` (milli-GPUs), the amount after taking the task's CPU and GPU.
  For a share, every GPU with room is tried and the best score wins, the
  first GPU (address order) among equal ones; that GPU is the one the
  share is placed on.  Whole GPUs go to the first free ones.  Nodes of
  equal score: the smallest name (the simulator's ``selectHost``).

Only the free milli-GPUs of each GPU enter, so one-type GPUs (``--nvidia``)
are judged as if types mixed: FGD does not know the lock.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import math
import random
import typing as ty

from benchmarks import cluster_workload as cw
from pci_vgpu import fragmentation

#: Share of the tasks the typical pods cover (the simulator's
#: ``podPopularityThreshold: 95`` of the paper's runs).
POPULARITY = 0.95
MAX_SCORE = 100


@dataclasses.dataclass(frozen=True)
class TypicalPod:
    """One typical pod and its frequency (0-1)."""

    cpu_milli: int
    #: Share of each GPU (milli); 0: no GPU.
    gpu_milli: int
    num_gpu: int
    #: Accepted models; empty: any.
    models: tuple[str, ...]
    freq: float


def typical_pods(tasks: ty.Iterable[cw.Task],
                 popularity: float = POPULARITY) -> list[TypicalPod]:
    """The task list's typical pods (see the module docstring).

    :raises: ValueError for an empty task list.
    """
    counts = collections.Counter(
        (t.cpu_milli, t.gpu_milli if t.num_gpu else 0, t.num_gpu,
         "|".join(t.models)) for t in tasks)
    total = sum(counts.values())
    if not total:
        raise ValueError("typical pods of an empty task list")
    ranked = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]),
                    reverse=True)
    kept, covered = [], 0
    for shape, count in ranked:
        if covered >= popularity * total:
            break
        kept.append((shape, count))
        covered += count
    return [TypicalPod(cpu, milli, num, tuple(m for m in models.split("|")
                                              if m), count / covered)
            for (cpu, milli, num, models), count in kept]


class FragTable:
    """The typical pods of one node model, arranged so that a node's
    amount costs a pass over its GPUs per GPU shape, not per pod.

    Pods that can never use the node's GPUs (no GPU, another model) add
    their frequency times all free GPU; the others are grouped by (share,
    count), each group's frequencies cumulated by CPU so that the part the
    node's free CPU allows is one bisect.
    """

    def __init__(self, pods: ty.Sequence[TypicalPod], model: str) -> None:
        self.never = sum(p.freq for p in pods if not p.gpu_milli or (
            p.models and model not in p.models))
        groups: dict[tuple[int, int], list[TypicalPod]] = {}
        for p in pods:
            if p.gpu_milli and (not p.models or model in p.models):
                groups.setdefault((p.gpu_milli, p.num_gpu), []).append(p)
        self.shapes = []
        for (milli, num), members in sorted(groups.items()):
            members.sort(key=lambda p: p.cpu_milli)
            cpus = [p.cpu_milli for p in members]
            cumulated = [0.0]
            for p in members:
                cumulated.append(cumulated[-1] + p.freq)
            self.shapes.append((milli, num, cpus, cumulated))

    def amount(self, cpu_left: int, lefts: ty.Sequence[int]) -> float:
        """The node's fragmentation amount (milli-GPUs)."""
        ordered = sorted(lefts)
        below = [0]  # below[j]: free milli of the j least free GPUs
        for x in ordered:
            below.append(below[-1] + x)
        free = below[-1]
        if not free:
            return 0.0
        total = self.never * free
        for milli, num, cpus, cumulated in self.shapes:
            everything = cumulated[-1]
            j = bisect.bisect_left(ordered, milli)
            if len(ordered) - j < num:  # not ``num`` GPUs with the share
                total += everything * free
                continue
            room = cumulated[bisect.bisect_right(cpus, cpu_left)]
            total += room * below[j] + (everything - room) * free
        return total


def _sigmoid_score(gain: float) -> int:
    return int(1.0 / (1.0 + math.exp(-gain / 1000.0)) * MAX_SCORE)


class FgdWeigher:
    """FGD's node score and GPU choice over the replay's nodes.

    A node's state (free CPU, free milli-GPUs per GPU) and a task's shape
    fix its score, so both are kept per node until it changes.
    """

    def __init__(self, tasks: ty.Sequence[cw.Task]) -> None:
        self.pods = typical_pods(tasks)
        self._tables: dict[str, FragTable] = {}

    def table(self, model: str) -> FragTable:
        if model not in self._tables:
            self._tables[model] = FragTable(self.pods, model)
        return self._tables[model]

    def score(self, node: ty.Any, task: cw.Task) -> tuple[int, int | None]:
        """(score, index of the GPU for a share or None), cached per node
        state."""
        key = ("fgd", task.cpu_milli, task.gpu_milli, task.num_gpu)
        found = node.cache.get(key)
        if found is None:
            found = node.cache[key] = self._score(node, task)
        return ty.cast(tuple[int, ty.Optional[int]], found)

    def _score(self, node: ty.Any, task: cw.Task) -> tuple[int, int | None]:
        table = self.table(node.spec.model)
        lefts = free_milli(node)
        before = node.cache.get("fgd-amount")
        if before is None:
            before = node.cache["fgd-amount"] = table.amount(
                node.cpu_free, lefts)
        cpu_after = node.cpu_free - task.cpu_milli
        if not task.is_share:
            after = list(lefts)
            for _ in range(task.num_gpu):
                after[after.index(cw.MILLI)] = 0
            return _sigmoid_score(before - table.amount(cpu_after, after)), \
                None
        best: tuple[int, int | None] = (-1, None)
        able = set(node.shares_on(cw.share_type(task.gpu_milli)))
        for i, gpu in enumerate(node.gpus):
            if gpu.state.address not in able:
                continue
            after = list(lefts)
            after[i] -= task.gpu_milli
            s = _sigmoid_score(before - table.amount(cpu_after, after))
            if s > best[0]:
                best = (s, i)
        return best

    def __call__(self, nodes: list[ty.Any], task: cw.Task, key: str,
                 rng: random.Random) -> ty.Any:
        """The best-scored node, the smallest name among equals."""
        scores = [self.score(n, task)[0] for n in nodes]
        top = max(scores)
        return min((n for n, s in zip(nodes, scores) if s == top),
                   key=lambda n: n.spec.name)

    def gpu_address(self, node: ty.Any, task: cw.Task,
                    rng: random.Random) -> str | None:
        """The GPU FGD puts a share on (None: whole GPUs, in address
        order, as the in-host policy takes them)."""
        index = self.score(node, task)[1]
        return None if index is None else node.gpus[index].state.address


def free_milli(node: ty.Any) -> list[int]:
    """Free milli-GPUs of each of the node's GPUs, in address order (kept
    until the node changes)."""
    found = node.cache.get("free-milli")
    if found is None:
        found = node.cache["free-milli"] = [
            round(cw.MILLI * fragmentation.free_share(g.state))
            for g in node.gpus]
    return ty.cast(list[int], found)
