"""One compute node shared by every worker of a race test, drawn::

    compute node "race-host" (the no-op driver's inventory)
      NUMA 0: V100 0000:06:00.0 (10de:1db4)  whole GPU only
      NUMA 1: T4   0000:41:00.0 (10de:1eb8)  one-type vGPUs:
                                             nvidia-222 max 4, nvidia-223 max 2,
                                             or the whole GPU

Each worker process builds its own ``ComputeService`` (its own engine, its
own no-op host) on the same database and node, as separate API or
compute-worker processes would.
"""

from __future__ import annotations

import typing as ty

import sqlalchemy as sa

from pci_vgpu.db import api as db_api
from pci_vgpu import manager
from pci_vgpu import service as svc
from pci_vgpu import service_tracker
from pci_vgpu.virt import noop
from tests.unit.db import inventory as inv

NODE = "race-host"
MAX = {"nvidia-222": 4, "nvidia-223": 2}


def host() -> list[dict[str, ty.Any]]:
    return inv.default_host(t4_types=dict(MAX))


def service(db: db_api.Database) -> svc.ComputeService:
    tracker = manager.PciDevTracker(db, NODE)
    return svc.ComputeService(noop.NoopDriver(devices=host()),
                              service_tracker.ServiceTracker(tracker))


def prepare(url: str) -> None:
    """Migrate the database and record the node's inventory once."""
    db = db_api.Database(url)
    db.sync()
    service(db).sync_inventory()
    db.dispose()


def rows(url: str, sql: str, **params: ty.Any) -> list[sa.Row[ty.Any]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))
    finally:
        engine.dispose()
