"""Task lists resampled from a trace, as the paper builds its other mixes.

Weng et al. vary one property of the default task list at a time (their
simulator's ``openb_pod_list_gpushare*``, ``multigpu*``, ``gpuspec*``
lists): the share of GPU tasks that share a GPU, that want several GPUs,
or that name GPU models.  Here each GPU task of the list is redrawn, by
seed, from the tasks that have the property with probability p and from
those that have not otherwise; tasks without GPU stay.  The default trace
has no model constraints, so ``gpuspec`` gives a drawn task one model,
chosen in proportion to the cluster's GPUs of that model.
"""

from __future__ import annotations

import dataclasses
import random
import typing as ty

from benchmarks import cluster_workload as cw

Predicate = ty.Callable[[cw.Task], bool]

#: mix name -> (property, share of GPU tasks that have it).
MIXES: dict[str, tuple[str, float]] = {
    "gpushare60": ("gpushare", 0.6), "gpushare80": ("gpushare", 0.8),
    "gpushare100": ("gpushare", 1.0),
    "multigpu20": ("multigpu", 0.2), "multigpu50": ("multigpu", 0.5),
    "gpuspec20": ("gpuspec", 0.2), "gpuspec33": ("gpuspec", 0.33),
}

PROPERTIES: dict[str, Predicate] = {
    "gpushare": lambda t: t.is_share,
    "multigpu": lambda t: t.num_gpu > 1,
}


def resample(tasks: ty.Sequence[cw.Task], nodes: ty.Sequence[cw.NodeSpec],
             mix: str, seed: int) -> list[cw.Task]:
    """A task list of the same length with the mix's property share.

    :raises: KeyError for an unknown mix; ValueError when the list has no
        GPU task with (or without) the property.
    """
    prop, share = MIXES[mix]
    rng = random.Random(seed)
    gpu_tasks = [t for t in tasks if t.num_gpu]
    if prop == "gpuspec":
        return [_constrained(t, nodes, rng) if t.num_gpu and
                rng.random() < share else t for t in tasks]
    has = [t for t in gpu_tasks if PROPERTIES[prop](t)]
    lacks = [t for t in gpu_tasks if not PROPERTIES[prop](t)]
    if not has or (share < 1.0 and not lacks):
        raise ValueError("mix %s: the task list has no GPU task %s the "
                         "property" % (mix, "with" if not has else "without"))
    out = []
    for i, t in enumerate(tasks):
        if t.num_gpu:
            pool = has if rng.random() < share else lacks
            t = dataclasses.replace(pool[rng.randrange(len(pool))],
                                    name="%s-%s-%d" % (t.name, mix, i))
        out.append(t)
    return out


def _constrained(task: cw.Task, nodes: ty.Sequence[cw.NodeSpec],
                 rng: random.Random) -> cw.Task:
    """The task, accepting one model drawn by the cluster's GPU counts
    among models whose nodes have enough GPUs for it."""
    able = [n for n in nodes if n.gpus >= task.num_gpu]
    models = sorted({n.model for n in able})
    weights = [sum(n.gpus for n in able if n.model == m) for m in models]
    return dataclasses.replace(task, models=(rng.choices(models, weights)[0],))
