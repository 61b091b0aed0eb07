"""Eight processes storming one compute node, checked by direct SQL meanwhile.

See ``tests.race.storm`` for the workload and the invariants.  Runs on
SQLite, MariaDB and PostgreSQL; the Galera variant (processes spread over
three nodes) is ``test_galera``.
"""

from __future__ import annotations

import collections
import pathlib
import typing as ty

import pytest

from tests.fixtures import db as db_fixtures
from tests.race import node
from tests.race import storm
from tests.unit.db import inventory as inv

WORKERS = 8
CYCLES = 25


@pytest.mark.parametrize("backend", db_fixtures.backend_params())
def test_storm_one_node(backend: str, tmp_path: pathlib.Path,
                        record: ty.Callable[..., None]) -> None:
    with db_fixtures.Database(backend, str(tmp_path)) as database:
        node.prepare(database.url)
        result = storm.run([database.url], WORKERS, CYCLES, database.url)
        left = storm.leftovers(database.url)
    assert result["errors"] == []
    assert result["violations"] == []
    totals = result["totals"]
    assert totals["created"] == totals["deleted"]
    asked = WORKERS * CYCLES * storm.SCALE
    assert totals["created"] + totals.get("refused", 0) == asked
    # Four vGPUs and two whole GPUs for eight workers: many creates are
    # refused for capacity, but the storm must have created plenty.
    assert totals["created"] >= asked // 5
    assert result["snapshots"] > 10
    assert left == {"instances": 0, "devices_in_use": 0, "live_vgpus": 0}
    record(backend=backend, workers=WORKERS, creates=totals["created"],
           deletes=totals["deleted"], refused=totals.get("refused", 0),
           generation_conflicts=totals.get("generation", 0),
           deadlocks_retried=totals.get("deadlock", 0),
           snapshots_checked=result["snapshots"],
           max_vgpus_in_use=result["max_in_use"], seconds=result["seconds"])


Row = collections.namedtuple(
    "Row", "device_key address parent_addr dev_type status instance_uuid "
           "extra_info owners")


def _gpu(status: str = "available", owner: str | None = None) -> Row:
    return Row(inv.T4, inv.T4, None, "type-PCI", status, owner, "{}",
               1 if owner else 0)


def _vgpu(n: int, vgpu_type: str = "nvidia-222", owners: int = 1) -> Row:
    return Row("mdev:%d" % n, None, inv.T4, "mdev", "allocated", "i%d" % n,
               '{"vgpu_type": "%s"}' % vgpu_type, owners)


@pytest.mark.parametrize("rows, expected", [
    ([_gpu(), _vgpu(1), _vgpu(2)], None),
    ([_gpu("allocated", "x"), _vgpu(1)], "whole while 1 vGPUs"),
    ([_gpu(), _vgpu(1), _vgpu(2, "nvidia-223")], "several vGPU types"),
    ([_gpu()] + [_vgpu(n) for n in range(5)], "5 vGPUs of nvidia-222"),
    ([_gpu(), _vgpu(1, owners=0)], "no instance row records"),
    ([_gpu(), _vgpu(1), _vgpu(1)], "has 2 live rows"),
], ids=["healthy", "whole-and-vgpus", "two-types", "over-max", "orphan",
        "twice"])
def test_the_checker_sees_each_violation(rows: list[Row],
                                         expected: str | None) -> None:
    found = storm.violations(ty.cast(ty.Any, rows))
    if expected is None:
        assert found == []
    else:
        assert any(expected in v for v in found), found
