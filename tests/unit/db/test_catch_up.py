"""Catching a cached node up with other workers' writes equals a fresh load.

Two trackers of one node take turns at random operations (vGPU and whole
GPU claims, allocations, frees, inventory reports that remove and bring
back a GPU in use).  After every operation the *other* tracker catches up
(incrementally: ``NodeState.catch_up``) and must hold exactly what a
tracker loading the node from scratch holds: device rows, pending
removals, instances, pools, and the same answers to capacity questions.
"""

from __future__ import annotations

import random
import typing as ty
import uuid

import pytest

from pci_vgpu.db import api as db_api
from pci_vgpu.db import records
from pci_vgpu import manager
from pci_vgpu import pool_errors
from tests.fixtures.db import database  # noqa: F401  (pytest fixture)
from tests.fixtures.db import db_url  # noqa: F401  (pytest fixture)
from tests.unit.db import inventory as inv

HOST = "cn-catch-up"
STEPS = 60
_PROBES = (lambda: [inv.vgpu_request("nvidia-222")],
           lambda: [inv.vgpu_request("nvidia-223", count=2)],
           lambda: [inv.gpu_request("1db4")],
           lambda: [inv.gpu_request("1eb8")])


def _snapshot(tracker: manager.PciDevTracker) -> dict[str, ty.Any]:
    state = tracker._current()
    return {
        "generation": state.generation,
        "devices": sorted((key, _stored(dev), dev.id)
                          for key, dev in state.devices.items()),
        "pending": sorted(state.pending_removal),
        "instances": sorted((r.uuid, r.status, r.numa_cells,
                             [q.request_id for q in r.requests])
                            for r in state.instances.values()),
        "pools": list(state.stats),
        "support": [state.stats.support_requests(probe())
                    for probe in _PROBES],
    }


def _stored(dev: ty.Any) -> list[tuple[str, ty.Any]]:
    """The row ``dev`` stands for (a field never set is a NULL column)."""
    values = dict.fromkeys(records.STORED_FIELDS)
    values.update(records.row_values(dev))
    return sorted(values.items())


def _step(tracker: manager.PciDevTracker, rng: random.Random,
          owned: dict[str, str]) -> None:
    """One random operation; ``owned`` maps instance -> its status."""
    action = rng.choice(("claim", "claim", "allocate", "free", "report"))
    if action == "claim":
        request = rng.choice((inv.vgpu_request("nvidia-222"),
                              inv.vgpu_request("nvidia-223"),
                              inv.gpu_request("1db4"),
                              inv.gpu_request("1eb8")))
        instance = str(uuid.uuid4())
        try:
            tracker.claim_instance(instance, [request])
        except pool_errors.PciDeviceRequestFailed:
            return
        owned[instance] = "claimed"
    elif action == "allocate" and "claimed" in owned.values():
        instance = rng.choice(sorted(i for i, s in owned.items()
                                     if s == "claimed"))
        tracker.allocate_instance(instance)
        owned[instance] = "allocated"
    elif action == "free" and owned:
        instance = rng.choice(sorted(owned))
        tracker.free_instance(instance)
        del owned[instance]
    elif action == "report":
        host = inv.default_host()
        tracker.update_devices_from_hypervisor_resources(
            inv.report(host if rng.random() < 0.5 else host[1:]))


def test_catch_up_equals_fresh_load(database: db_api.Database) -> None:
    rng = random.Random(20170611)
    trackers = [manager.PciDevTracker(database, HOST) for _ in range(2)]
    trackers[0].update_devices_from_hypervisor_resources(
        inv.report(inv.default_host()))
    for tracker in trackers:
        tracker.refresh()
    owned: dict[str, str] = {}
    caught_up = 0
    for _ in range(STEPS):
        actor = rng.randrange(2)
        _step(trackers[actor], rng, owned)
        other = trackers[1 - actor]
        before, generation = other._state, other._current().generation
        other.refresh()
        caught_up += (other._state is before
                      and other._state.generation != generation)
        fresh = manager.PciDevTracker(database, HOST)
        assert _snapshot(other) == _snapshot(fresh)
    # The incremental path, not a full reload, is what was compared.
    assert caught_up >= STEPS // 3


def test_locked_retry_catches_up(database: db_api.Database) -> None:
    """A write that lost the swap catches up under the lock, then wins."""
    first, second = (manager.PciDevTracker(database, HOST) for _ in range(2))
    first.update_devices_from_hypervisor_resources(
        inv.report(inv.default_host(t4_types={"nvidia-222": 2})))
    second.refresh()
    cached = second._state
    first.claim_instance(str(uuid.uuid4()), [inv.vgpu_request()])
    second.claim_instance(str(uuid.uuid4()), [inv.vgpu_request()])
    assert second._state is cached  # caught up in place, not rebuilt
    assert _snapshot(second) == _snapshot(manager.PciDevTracker(database, HOST))
    with pytest.raises(pool_errors.PciDeviceRequestFailed):
        first.claim_instance(str(uuid.uuid4()), [inv.vgpu_request()])


def test_unflushed_state_is_not_caught_up(database: db_api.Database) -> None:
    tracker = manager.PciDevTracker(database, HOST)
    tracker.update_devices_from_hypervisor_resources(
        inv.report(inv.default_host()))
    state = tracker._current()
    state._flags["0000:00:00.0"] = True  # as if a change awaited its flush
    with database.reader() as conn:
        rows = db_api.get_devices(conn, tracker.node_id)
        inst_rows = db_api.get_instances(conn, tracker.node_id)
    generation = state.generation
    assert not state.catch_up(generation + 1, rows, inst_rows)
    assert state.generation == generation
