"""Claims under real concurrency: 8 processes, one shared host inventory.

Per database: 8 worker processes each run claim -> allocate -> check ->
free cycles against one compute node whose T4 has room for only 3 vGPUs,
while the parent watches the table.  Proof of atomicity:

* never more than 3 live vGPU rows in use (no double allocation);
* every allocated device belongs to the instance that claimed it;
* at the end no instance, no live vGPU, every device available (no leak),
  and the generation advanced exactly 3 times per successful cycle plus
  once for the inventory (no lost or half-written write).

And a crash: a worker SIGKILLed after writing its claim rows but before
commit leaves nothing behind, and its locks do not block the next claim.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import typing as ty
import uuid

import pytest
import sqlalchemy as sa

from pci_vgpu.db import api as db_api
from pci_vgpu.db import state as tracker_state
from pci_vgpu import manager
from pci_vgpu import pool_errors
from tests.fixtures.db import db_url  # noqa: F401  (pytest fixture)
from tests.unit.db import inventory as inv

WORKERS = 8
CYCLES = 20
CAPACITY = 3
HOST = "shared-host"
_CTX = multiprocessing.get_context("fork")


def _setup(url: str) -> db_api.Database:
    db = db_api.Database(url)
    db.sync()
    tracker = manager.PciDevTracker(db, HOST)
    tracker.update_devices_from_hypervisor_resources(
        inv.report(inv.default_host(t4_types={"nvidia-222": CAPACITY})))
    return db


def _owned(db: db_api.Database, instance_uuid: str) -> list[tuple[str, str]]:
    with db.reader() as session:
        return [(r.status, r.instance_uuid) for r in session.execute(sa.text(
            "SELECT status, instance_uuid FROM pci_devices WHERE deleted = 0 "
            "AND instance_uuid = :u"), {"u": instance_uuid})]


def _worker(url: str, out: ty.Any) -> None:
    db = db_api.Database(url)
    tracker = manager.PciDevTracker(db, HOST)
    ok = refused = 0
    errors: list[str] = []
    for _ in range(CYCLES):
        instance = str(uuid.uuid4())
        try:
            tracker.claim_instance(instance, [inv.vgpu_request("nvidia-222")])
        except pool_errors.PciDeviceRequestFailed:
            refused += 1
            continue
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            errors.append("claim: %r" % exc)
            continue
        try:
            tracker.allocate_instance(instance)
            if _owned(db, instance) != [("allocated", instance)]:
                errors.append("%s owns %r" % (instance, _owned(db, instance)))
            tracker.free_instance(instance)
            ok += 1
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            errors.append("allocate/free: %r" % exc)
    out.put((ok, refused, errors))
    db.dispose()


def _in_use(conn: sa.Connection) -> int:
    return int(conn.execute(sa.text(
        "SELECT COUNT(*) FROM pci_devices WHERE deleted = 0 AND "
        "dev_type = 'mdev' AND status IN ('claimed', 'allocated')")).scalar_one())


def _final(db: db_api.Database) -> dict[str, ty.Any]:
    with db.engine.connect() as conn:
        q = lambda sql: conn.execute(sa.text(sql)).scalar_one()  # noqa: E731
        return {
            "instances": q("SELECT COUNT(*) FROM instances"),
            "live_vgpus": q("SELECT COUNT(*) FROM pci_devices WHERE deleted = 0"
                            " AND dev_type = 'mdev'"),
            "not_available": q("SELECT COUNT(*) FROM pci_devices WHERE "
                               "deleted = 0 AND status <> 'available'"),
            "vgpu_rows": q("SELECT COUNT(*) FROM pci_devices WHERE "
                           "dev_type = 'mdev'"),
            "generation": q("SELECT generation FROM compute_nodes"),
        }


@pytest.mark.slow
def test_eight_workers_share_three_vgpus(db_url: str) -> None:  # noqa: F811
    db = _setup(db_url)
    out = _CTX.Queue()
    procs = [_CTX.Process(target=_worker, args=(db_url, out))
             for _ in range(WORKERS)]
    for proc in procs:
        proc.start()
    peak = 0
    with db.engine.connect() as conn:
        while any(p.is_alive() for p in procs) and out.qsize() < WORKERS:
            peak = max(peak, _in_use(conn))
            conn.rollback()
            time.sleep(0.002)
    results = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    ok = sum(r[0] for r in results)
    refused = sum(r[1] for r in results)
    errors = [e for r in results for e in r[2]]
    assert errors == []
    assert peak <= CAPACITY
    assert ok + refused == WORKERS * CYCLES and ok > 0
    assert _final(db) == {"instances": 0, "live_vgpus": 0, "not_available": 0,
                          "vgpu_rows": ok, "generation": 1 + 3 * ok}
    db.dispose()


def _crashing_claim(url: str, written: ty.Any) -> None:
    original = tracker_state.NodeState.flush

    def flush_then_hang(self: tracker_state.NodeState, session: ty.Any,
                        node_id: int) -> bool:
        wrote = original(self, session, node_id)
        written.set()
        time.sleep(300)
        return wrote

    tracker_state.NodeState.flush = flush_then_hang  # type: ignore[method-assign]
    db = db_api.Database(url)
    manager.PciDevTracker(db, HOST).claim_instance(
        str(uuid.uuid4()), [inv.vgpu_request("nvidia-222")])


def test_worker_killed_before_commit_leaves_nothing(db_url: str) -> None:  # noqa: F811
    db = _setup(db_url)
    before = _final(db)
    written = _CTX.Event()
    proc = _CTX.Process(target=_crashing_claim, args=(db_url, written))
    proc.start()
    assert written.wait(timeout=60), "the worker never reached its commit"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL
    assert _final(db) == before
    # Its locks died with it: all capacity is claimable again.
    tracker = manager.PciDevTracker(db, HOST)
    for _ in range(CAPACITY):
        tracker.claim_instance(str(uuid.uuid4()), [inv.vgpu_request("nvidia-222")])
    assert _final(db)["live_vgpus"] == CAPACITY
    db.dispose()
