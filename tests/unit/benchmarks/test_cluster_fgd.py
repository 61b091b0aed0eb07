"""The FGD baseline of the cluster replay (benchmarks.cluster_fgd)."""

from __future__ import annotations

import pytest

from benchmarks import cluster_fgd as fgd
from benchmarks import cluster_workload as cw


def _task(cpu: int, num: int, milli: int, models: tuple[str, ...] = ()
          ) -> cw.Task:
    return cw.Task("t", cpu, 1024, num, milli if num else 0, models)


def test_typical_pods_are_the_most_frequent_shapes():
    tasks = ([_task(4000, 1, 500)] * 6 + [_task(8000, 1, 1000)] * 3
             + [_task(2000, 0, 0)] * 1)
    pods = fgd.typical_pods(tasks, popularity=0.9)
    assert [(p.cpu_milli, p.gpu_milli, p.num_gpu) for p in pods] == [
        (4000, 500, 1), (8000, 1000, 1)]
    assert [p.freq for p in pods] == pytest.approx([6 / 9, 3 / 9])
    # all shapes when they are needed to reach the share, CPU-only too
    assert len(fgd.typical_pods(tasks, popularity=0.95)) == 3
    with pytest.raises(ValueError):
        fgd.typical_pods([])


def _plain_amount(pods, model, cpu_left, lefts):
    """The fragmentation amount, pod by pod as the paper defines it."""
    free = sum(lefts)
    total = 0.0
    for p in pods:
        if not p.gpu_milli or (p.models and model not in p.models):
            total += p.freq * free
        elif sum(1 for x in lefts if x >= p.gpu_milli) < p.num_gpu \
                or cpu_left < p.cpu_milli:
            total += p.freq * free
        else:
            total += p.freq * sum(x for x in lefts if x < p.gpu_milli)
    return total


PODS = [fgd.TypicalPod(4000, 500, 1, (), 0.3),
        fgd.TypicalPod(16000, 500, 1, (), 0.1),
        fgd.TypicalPod(8000, 1000, 1, (), 0.2),
        fgd.TypicalPod(32000, 1000, 4, (), 0.1),
        fgd.TypicalPod(2000, 1000, 1, ("T4",), 0.1),
        fgd.TypicalPod(1000, 0, 0, (), 0.2)]


@pytest.mark.parametrize("model", ["T4", "G2"])
@pytest.mark.parametrize("cpu_left", [0, 4000, 15999, 64000])
@pytest.mark.parametrize("lefts", [
    [1000] * 4, [1000, 1000, 1000, 400], [500, 499, 0, 1000], [0, 0],
    [700, 1000, 1000, 1000, 1000]])
def test_frag_table_matches_the_plain_definition(model, cpu_left, lefts):
    table = fgd.FragTable(PODS, model)
    assert table.amount(cpu_left, lefts) == pytest.approx(
        _plain_amount(PODS, model, cpu_left, lefts))


def test_score_is_an_integer_sigmoid_of_the_gain():
    assert fgd._sigmoid_score(0.0) == 50
    assert fgd._sigmoid_score(1.0) == 50  # 1 milli-GPU: below a point
    assert fgd._sigmoid_score(-1000.0) == 26
    assert fgd._sigmoid_score(1e6) == 100
