"""The race suite on a three-node Galera cluster, writes sent to every node.

``SELECT ... FOR UPDATE`` locks only on the node that runs it, so two
workers on two nodes can both pass the node lock; the generation swap makes
them update the same ``compute_nodes`` row, and Galera's certification
lets only the first COMMIT through: the other fails as a deadlock and the
tracker's ``wrap_db_retry`` runs the write again (counted as
``deadlocks_retried``).  Checked here, with the storm's workers spread over
the three nodes and the checker reading from node 1: no double
allocation, no duplicate name, every retry accounted for.
"""

from __future__ import annotations

import logging
import typing as ty

import pytest

from pci_vgpu.db import api as db_api
from tests.fixtures import galera as galera_fixture
from tests.race import node
from tests.race import procs
from tests.race import storm
from tests.race import test_first_use
from tests.race import test_same_name

WORKERS = 8
CYCLES = 25
FIRST_USERS = 4  # the T4 holds 4 nvidia-222 vGPUs: one each


@pytest.fixture(scope="module")
def cluster() -> ty.Iterator[galera_fixture.GaleraCluster]:
    with galera_fixture.GaleraCluster() as started:
        assert started.cluster_size() == 3
        yield started


def test_storm_spread_over_three_nodes(cluster: galera_fixture.GaleraCluster,
                                       record: ty.Callable[..., None]) -> None:
    with cluster.database() as urls:
        node.prepare(urls[0])
        before = cluster.counters()
        result = storm.run(urls, WORKERS, CYCLES, checker_url=urls[0], seed=7)
        after = cluster.counters()
        left = storm.leftovers(urls[0])
    assert result["errors"] == []
    assert result["violations"] == []
    totals = result["totals"]
    assert totals["created"] == totals["deleted"] > 0
    assert left == {"instances": 0, "devices_in_use": 0, "live_vgpus": 0}
    server_side = {k: after[k] - before[k] for k in after}
    record(backend="galera", workers=WORKERS, nodes=3, creates=totals["created"],
           deletes=totals["deleted"], refused=totals.get("refused", 0),
           deadlocks_retried=totals.get("deadlock", 0),
           generation_conflicts=totals.get("generation", 0),
           cert_failures=server_side["wsrep_local_cert_failures"],
           bf_aborts=server_side["wsrep_local_bf_aborts"],
           snapshots_checked=result["snapshots"], seconds=result["seconds"])


class _Collisions(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "collided with another process" in record.getMessage()


def _first_use_counting(url: str) -> ty.Callable[[], tuple[int, int]]:
    run = test_first_use._first_use(url)

    def action() -> tuple[int, int]:
        handler = _Collisions()
        logger = logging.getLogger("pci_vgpu.db.migration")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        return run(), handler.count
    return action


def test_first_use_from_every_node_at_once(cluster: galera_fixture.GaleraCluster,
                                           record: ty.Callable[..., None]) -> None:
    with cluster.database() as urls:
        outcomes = procs.run_together(
            _first_use_counting, [(urls[i % 3],) for i in range(FIRST_USERS)])
        assert [o.error for o in outcomes] == [None] * FIRST_USERS
        assert len(node.rows(urls[2], "SELECT id FROM compute_nodes")) == 1
        assert len(node.rows(urls[1], "SELECT id FROM instances")) == FIRST_USERS
    record(backend="galera", processes=FIRST_USERS,
           write_conflicts_retried=sum(o.value[0] for o in outcomes),
           migration_races_retried=sum(o.value[1] for o in outcomes))


def test_same_name_from_every_node(cluster: galera_fixture.GaleraCluster,
                                   record: ty.Callable[..., None]) -> None:
    with cluster.database() as urls:
        node.prepare(urls[0])
        outcomes = procs.run_together(
            test_same_name._create, [(urls[i % 3], "same1") for i in range(WORKERS)])
        winners = [o.value for o in outcomes if o.error is None]
        assert len(winners) == 1, [o.error for o in outcomes]
        for outcome in outcomes:
            if outcome.error is not None:
                assert "same1" in outcome.error.splitlines()[0]
        held = node.rows(urls[1], "SELECT uuid FROM instances WHERE name = 'same1'")
        assert [r.uuid for r in held] == winners
    record(backend="galera", creates=WORKERS, won=1, refused=WORKERS - 1)


def test_galera_urls_are_real_cluster_members(
        cluster: galera_fixture.GaleraCluster) -> None:
    """A write on node 3 is read on node 1: the storm ran on one cluster."""
    with cluster.database() as urls:
        db = db_api.Database(urls[2])
        db.sync()
        db.dispose()
        tables = {r[0] for r in node.rows(urls[0], "SHOW TABLES")}
    assert {"compute_nodes", "pci_devices", "instances"} <= tables
