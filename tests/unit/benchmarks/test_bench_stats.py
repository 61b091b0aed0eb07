"""bench_stats' rounds: both sides alternate, each keeps its least median.

Nova itself runs in a subprocess of its own virtual environment (installed
from PyPI on first use), which unit tests do not build; the worker is
replaced here by one that hands back given figures, the boundary the
script talks to (one JSON job in, one JSON result out).
"""

from __future__ import annotations

import typing as ty

import pytest

from benchmarks import bench_stats


class _Worker:
    """Nova's side: the figures of each round, in order."""

    def __init__(self, rounds: list[dict[str, float]],
                 events: list[str]) -> None:
        self.rounds = list(rounds)
        self.events = events

    def bench(self, host: bench_stats.Host, repeats: int
              ) -> dict[str, float]:
        self.events.append("nova %s x%d" % (host.label, repeats))
        return self.rounds.pop(0)


def _figures(**values: float) -> dict[str, float]:
    base = {"pools": 1.0, "build": 1.0, "sched": 1.0, "compute": 1.0,
            "consume": 1.0}
    base.update(values)
    return base


def test_each_side_keeps_the_least_of_its_rounds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    host = bench_stats.realistic_host(1, 1, False)
    events: list[str] = []
    mine = [_figures(consume=3.0, sched=1.0), _figures(consume=1.0,
                                                       sched=4.0),
            _figures(consume=2.0, sched=2.0)]

    def bench_ours(h: bench_stats.Host, repeats: int) -> dict[str, float]:
        events.append("ours %s x%d" % (h.label, repeats))
        return mine.pop(0)

    monkeypatch.setattr(bench_stats, "bench_ours", bench_ours)
    nova = _Worker([_figures(consume=5.0), _figures(consume=9.0),
                    _figures(consume=7.0, build=0.5)], events)
    ours, theirs = bench_stats.measure(host, ty.cast(ty.Any, nova), 2, 3)
    assert (ours["consume"], ours["sched"]) == (1.0, 1.0)
    assert (theirs["consume"], theirs["build"]) == (5.0, 0.5)
    label = host.label
    assert events == ["ours %s x2" % label, "nova %s x2" % label] * 3


def test_our_side_measures_real_calls() -> None:
    host = bench_stats.realistic_host(1, 1, True)
    host.k = host.k_compute = 3  # quick: this checks the calls, not times
    ours, theirs = bench_stats.measure(
        host, ty.cast(ty.Any, _Worker([_figures()], [])), 1, 1)
    assert ours["pools"] == 4 and theirs == _figures()
    assert min(ours[m] for m, _ in bench_stats.METRICS) > 0


def test_rounds_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench_stats.main(["--rounds", "0"])
    assert "'0': allowed: an integer >= 1" in capsys.readouterr().err
