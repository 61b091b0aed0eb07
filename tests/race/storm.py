"""Many processes creating and deleting servers on one compute node.

Each worker runs ``cycles`` create -> delete rounds through its own
``ComputeService`` with a random flavor: a vGPU of type nvidia-222 or
nvidia-223 on the T4 (one-type: the first type in use locks the GPU), the
whole T4, or the whole V100 (see ``tests.race.node``).  Refusals (no
capacity) are expected and counted; anything else is an error.

While they run, :class:`Checker` reads the node's rows by direct SQL, one
statement per snapshot (a single statement sees one consistent state on
every database), and counts violations of the invariants:

* no device row held twice (one live row per device key);
* every claimed or allocated device belongs to a recorded instance;
* the T4 given whole has no vGPU in use, and vice versa;
* vGPUs in use on the T4 are all of one type, never more than its max.
"""

from __future__ import annotations

import collections
import json
import os
import random
import time
import typing as ty
import uuid

import sqlalchemy as sa

from pci_vgpu.db import api as db_api
from pci_vgpu import pool_errors
from pci_vgpu import service as svc
from tests.race import node
from tests.unit.db import inventory as inv

IN_USE = ("claimed", "allocated")
#: Multiplies every storm's rounds (CI runs 1; a soak run, e.g. 20).
SCALE = int(os.environ.get("PCI_VGPU_RACE_SCALE", "1"))
FLAVORS = (("vgpu-222", 6), ("vgpu-223", 2), ("whole-t4", 1), ("whole-v100", 1))

# One statement: every live device with the number of instance rows that
# own it (consistent in itself on SQLite, MariaDB and PostgreSQL).
SNAPSHOT = sa.text(
    "SELECT d.device_key, d.address, d.parent_addr, d.dev_type, d.status, "
    "d.instance_uuid, d.extra_info, "
    "(SELECT COUNT(*) FROM instances i WHERE i.uuid = d.instance_uuid) AS owners "
    "FROM pci_devices d WHERE d.deleted = 0")


def requests(flavor: str) -> list[ty.Any]:
    if flavor == "vgpu-222":
        return [inv.vgpu_request("nvidia-222")]
    if flavor == "vgpu-223":
        return [inv.vgpu_request("nvidia-223")]
    return [inv.gpu_request("1eb8" if flavor == "whole-t4" else "1db4")]


def _is_refusal(exc: svc.ServerOperationFailed) -> bool:
    """A create refused for lack of capacity (the expected failure)."""
    return isinstance(exc.__cause__, pool_errors.PciDeviceRequestFailed)


def worker(url: str, seed: int, cycles: int) -> ty.Callable[[], dict[str, ty.Any]]:
    """Prepare one storming worker (see :func:`procs.run_together`)."""
    db = db_api.Database(url)
    service = node.service(db)
    rng = random.Random(seed)
    flavors = [f for f, weight in FLAVORS for _ in range(weight)]

    def action() -> dict[str, ty.Any]:
        counts: collections.Counter[str] = collections.Counter()
        try:
            for cycle in range(cycles):
                _one_cycle(service, rng.choice(flavors),
                           "w%d-%d" % (seed, cycle), rng, counts)
        finally:
            counts.update(service.tracker.tracker.conflicts)
            db.dispose()
        return dict(counts)
    return action


def _one_cycle(service: svc.ComputeService, flavor: str, name: str,
               rng: random.Random, counts: collections.Counter[str]) -> None:
    try:
        server = service.create_server(name, requests(flavor))
    except svc.ServerOperationFailed as exc:
        if not _is_refusal(exc):
            raise
        counts["refused"] += 1
        return
    counts["created"] += 1
    time.sleep(rng.uniform(0, 0.01))  # the guest runs a little
    service.delete_server(server.uuid)
    counts["deleted"] += 1


class Checker:
    """Checks the invariants on snapshots read by direct SQL."""

    def __init__(self, url: str, interval: float = 0.02) -> None:
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.interval = interval
        self.snapshots = 0
        self.violations: list[str] = []
        self.max_in_use: collections.Counter[str] = collections.Counter()
        self._last = 0.0

    def __call__(self) -> None:
        """Check one snapshot, at most every ``interval`` seconds."""
        if time.monotonic() - self._last < self.interval:
            return
        self._last = time.monotonic()
        with self.engine.connect() as conn:
            rows = list(conn.execute(SNAPSHOT))
        self.snapshots += 1
        self.violations.extend(violations(rows, self.max_in_use))

    def close(self) -> None:
        self.engine.dispose()


def _vgpu_type(row: sa.Row[ty.Any]) -> str | None:
    extra = json.loads(row.extra_info) if row.extra_info else {}
    return extra.get("vgpu_type") or extra.get("mdev_type")


def violations(rows: list[sa.Row[ty.Any]],
               high: collections.Counter[str] | None = None) -> list[str]:
    """What is wrong in one snapshot (empty when every invariant holds)."""
    found = []
    keys = collections.Counter(r.device_key for r in rows)
    found += ["device %s has %d live rows" % (k, n) for k, n in keys.items() if n > 1]
    found += ["device %s is %s by %s, which no instance row records"
              % (r.device_key, r.status, r.instance_uuid)
              for r in rows if r.status in IN_USE and r.owners != 1]
    vgpus = [r for r in rows if r.dev_type == "mdev" and r.parent_addr == inv.T4
             and r.status in IN_USE]
    t4 = [r for r in rows if r.address == inv.T4 and r.dev_type != "mdev"]
    if t4 and t4[0].status in IN_USE and vgpus:
        found.append("T4 is %s whole while %d vGPUs are in use"
                     % (t4[0].status, len(vgpus)))
    types = collections.Counter(_vgpu_type(r) for r in vgpus)
    if len(types) > 1:
        found.append("T4 runs several vGPU types at once: %s" % dict(types))
    for vgpu_type, count in types.items():
        if high is not None:
            high[str(vgpu_type)] = max(high[str(vgpu_type)], count)
        if count > node.MAX.get(str(vgpu_type), 0):
            found.append("T4 has %d vGPUs of %s in use (max %s)"
                         % (count, vgpu_type, node.MAX.get(str(vgpu_type))))
    return found


def leftovers(url: str) -> dict[str, int]:
    """What a storm must not leave once every server is deleted."""
    def count(sql: str) -> int:
        return len(node.rows(url, sql))
    return {
        "instances": count("SELECT id FROM instances"),
        "devices_in_use": count("SELECT id FROM pci_devices WHERE deleted = 0 "
                                "AND status IN ('claimed', 'allocated')"),
        "live_vgpus": count("SELECT id FROM pci_devices WHERE deleted = 0 "
                            "AND dev_type = 'mdev'"),
    }


def run(urls: ty.Sequence[str], workers: int, cycles: int,
        checker_url: str, seed: int = 0) -> dict[str, ty.Any]:
    """Storm with ``workers`` processes (worker i on ``urls[i % len]``),
    ``cycles`` x :data:`SCALE` rounds each."""
    from tests.race import procs
    checker = Checker(checker_url)
    started = time.monotonic()
    try:
        outcomes = procs.run_together(
            worker, [(urls[i % len(urls)], seed * 100 + i, cycles * SCALE)
                     for i in range(workers)],
            timeout=600 * SCALE, while_running=checker)
        checker.interval = 0
        checker()  # the final state too
    finally:
        checker.close()
    totals: collections.Counter[str] = collections.Counter()
    for outcome in outcomes:
        totals.update(outcome.value or {})
    return {"errors": [o.error for o in outcomes if o.error],
            "totals": dict(totals), "snapshots": checker.snapshots,
            "violations": checker.violations,
            "max_in_use": dict(checker.max_in_use),
            "seconds": round(time.monotonic() - started, 1)}
