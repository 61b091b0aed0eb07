"""The cluster and the tasks that arrive: read from a trace, or synthetic.

The trace is Alibaba's GPU cluster trace v2023 (``openb_node_list_gpu_node.csv``
and a task list such as ``openb_pod_list_default.csv``), read where it lies
(its terms allow research use; it is never copied into this project).  When
it is missing, :func:`synthetic_cluster` / :func:`synthetic_tasks` build a
workload of the same shape from a seed.

How tasks arrive follows Weng et al. (USENIX ATC '23) and their simulator
(``hkust-adsl/kubernetes-scheduler-simulator``, ``SortClusterPods`` and
``TunePodsByNodeTotalResource``): the trace's tasks are shuffled by the
seed, then tasks drawn from the trace with replacement are appended until
the GPU request reaches ``arrive_max`` (1.3) times the cluster's GPU
capacity.  There are no departures; a task that fits nowhere is dropped.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
import random
import typing as ty

MILLI = 1000
NODE_FILE = "openb_node_list_gpu_node.csv"
DEFAULT_TASKS = "openb_pod_list_default.csv"


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One node of the cluster."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int
    model: str


@dataclasses.dataclass(frozen=True)
class Task:
    """One task (a Kubernetes pod in the trace; a server here)."""

    name: str
    cpu_milli: int
    memory_mib: int
    #: GPUs wanted: 0, 1 (whole or a share) or several whole ones.
    num_gpu: int
    #: For num_gpu == 1, the share of one GPU in milli (1000: whole).
    gpu_milli: int
    #: Accepted GPU models; empty: any.
    models: tuple[str, ...] = ()

    @property
    def is_share(self) -> bool:
        return self.num_gpu == 1 and self.gpu_milli < MILLI

    @property
    def total_milli(self) -> int:
        """GPU request in milli-GPUs (shares count their share)."""
        return self.gpu_milli * self.num_gpu if self.num_gpu else 0


def share_type(milli: int) -> str:
    """The vGPU type of a share of ``milli`` thousandths of a GPU."""
    return "share-%04d" % milli


class TraceError(ValueError):
    """A trace file is missing or has a bad row."""


def _rows(path: pathlib.Path, columns: tuple[str, ...]
          ) -> ty.Iterator[dict[str, str]]:
    if not path.is_file():
        raise TraceError("%s: no such file (a trace folder holds %s and task "
                         "lists)" % (path, NODE_FILE))
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceError("%s: missing column(s) %s" % (
                path, ", ".join(missing)))
        yield from reader


def _int(path: pathlib.Path, row: dict[str, str], column: str) -> int:
    try:
        value = int(row[column])
    except ValueError:
        raise TraceError("%s: %s=%r is not an integer" % (
            path, column, row[column])) from None
    if value < 0:
        raise TraceError("%s: %s=%d is negative" % (path, column, value))
    return value


def read_cluster(folder: pathlib.Path) -> list[NodeSpec]:
    """The nodes of ``folder/openb_node_list_gpu_node.csv``.

    :raises: TraceError.
    """
    path = folder / NODE_FILE
    return [NodeSpec(r["sn"], _int(path, r, "cpu_milli"),
                     _int(path, r, "memory_mib"), _int(path, r, "gpu"),
                     r["model"])
            for r in _rows(path, ("sn", "cpu_milli", "memory_mib", "gpu",
                                  "model"))]


def read_tasks(path: pathlib.Path) -> list[Task]:
    """The tasks of a task list (the trace's pod-list columns).

    :raises: TraceError.
    """
    tasks = []
    for r in _rows(path, ("name", "cpu_milli", "memory_mib", "num_gpu",
                          "gpu_milli", "gpu_spec")):
        num, milli = _int(path, r, "num_gpu"), _int(path, r, "gpu_milli")
        if num == 0:
            milli = 0
        elif num > 1 or milli > MILLI or milli == 0:
            milli = MILLI  # several GPUs are always whole ones
        spec = tuple(m for m in (r["gpu_spec"] or "").split("|") if m)
        tasks.append(Task(r["name"], _int(path, r, "cpu_milli"),
                          _int(path, r, "memory_mib"), num, milli, spec))
    return tasks


# -- synthetic workload of the same shape ------------------------------------

#: (model, nodes per 1,000, GPUs per node): the trace's proportions, rounded.
_SYNTH_NODES = (("G2", 452, 8), ("T4", 333, 2), ("P100", 110, 2),
                ("V100M16", 45, 8), ("G3", 32, 4), ("V100M32", 25, 8),
                ("A10", 3, 1))
#: Share sizes (milli) a synthetic sharing task draws from, with weights.
_SYNTH_SHARES = ((800, 30), (500, 25), (300, 15), (650, 8), (250, 8),
                 (450, 5), (150, 4), (100, 3), (50, 2))


def synthetic_cluster(nodes: int = 1213) -> list[NodeSpec]:
    """``nodes`` nodes with the trace's model mix (deterministic)."""
    result: list[NodeSpec] = []
    for model, per_mille, gpus in _SYNTH_NODES:
        for _ in range(max(1, round(nodes * per_mille / 1000))):
            cpu = 96000 if gpus == 8 else 64000
            result.append(NodeSpec("synth-node-%04d" % len(result), cpu,
                                   cpu * 4, gpus, model))
    return result[:nodes]


def synthetic_tasks(count: int = 8000, seed: int = 0) -> list[Task]:
    """Tasks shaped like the trace's: 13 % without GPU, 38 % sharing one
    GPU, 48 % one whole GPU, 1 % several (2, 4 or 8)."""
    rng = random.Random(seed)
    shares = [s for s, _ in _SYNTH_SHARES]
    weights = [w for _, w in _SYNTH_SHARES]
    tasks = []
    for i in range(count):
        draw = rng.random()
        if draw < 0.13:
            num, milli = 0, 0
        elif draw < 0.51:
            num, milli = 1, rng.choices(shares, weights)[0]
        elif draw < 0.99:
            num, milli = 1, MILLI
        else:
            num, milli = rng.choice((2, 4, 8)), MILLI
        cpu = rng.choice((2000, 4000, 6000, 8000, 12000, 16000)) * max(1, num)
        tasks.append(Task("synth-task-%05d" % i, cpu, cpu * 2, num, milli))
    return tasks


# -- arrival -------------------------------------------------------------------


def arrivals(tasks: ty.Sequence[Task], capacity_milli: int, seed: int,
             arrive_max: float = 1.3) -> list[Task]:
    """The tasks in arrival order for one seed (no departures).

    The list shuffled by ``seed`` (pruned at random if it already asks for
    more than ``arrive_max`` x capacity), then tasks drawn with replacement
    appended until the next one would pass ``arrive_max`` x capacity.
    """
    rng = random.Random(seed)
    order = sorted(tasks, key=lambda t: t.name)
    rng.shuffle(order)
    target = arrive_max * capacity_milli
    total = sum(t.total_milli for t in order)
    while total > target and order:
        total -= order.pop(rng.randrange(len(order))).total_milli
    if not tasks:
        return order
    while True:
        extra = tasks[rng.randrange(len(tasks))]
        if total + extra.total_milli > target:
            return order
        total += extra.total_milli
        order.append(dataclasses.replace(
            extra, name="%s-tuned-%d" % (extra.name, len(order))))
