"""Claims per second of the device tracker on SQLite, MariaDB and PostgreSQL.

One "claim" here is the whole round trip of a guest's vGPU: claim ->
allocate -> free through ``pci_vgpu.manager.PciDevTracker``, three committed
transactions.  Every worker is a separate process with its own tracker and
connection.  Two layouts of N workers:

* ``hosts``: each worker tracks its own compute node, all nodes in one
  database (compute hosts sharing a database: the deployment);
* ``shared``: all workers track ONE node (the contended case: every write
  of every worker serialises on the same generation row and reloads what
  the others wrote).

Each node has 4 T4 GPUs with 16 vGPUs each, so claims never run out.

Columns: ``round trips/s`` is wall-clock throughput of all workers
together (the headline); ``per CPU-s`` is round trips per CPU second the
workers themselves used (user + system), i.e. what the tracker costs the
client regardless of how busy the machine is -- database server time is
not in it.  The load average before each cell is printed because the
wall-clock figure on a shared machine depends on it.

Databases: SQLite in a temporary file; MariaDB and PostgreSQL on 127.0.0.1
with the opportunistic ``openstack_citest`` account (override with
``PCI_VGPU_TEST_MYSQL_URL`` / ``PCI_VGPU_TEST_POSTGRESQL_URL``); a random
database is created and dropped.  A backend that is not reachable is
reported as ``n/a``.

Usage::

    .venv/bin/python benchmarks/bench_claims.py [--seconds 3] [--workers 1 8]

The last line is machine-readable::

    CLAIMS_PER_S sqlite_1=<n> sqlite_8=<n> mysql_8=<n> postgresql_8=<n>

with the ``hosts`` layout (for 1 worker both layouts are the same).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
import typing as ty
import uuid
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)

import sqlalchemy as sa  # noqa: E402
from oslo_db.sqlalchemy import provision  # noqa: E402

from pci_vgpu.db import api as db_api  # noqa: E402
from pci_vgpu import manager  # noqa: E402
from pci_vgpu.objects import instance_pci_requests as ipr  # noqa: E402

HOST = "bench-host"
BACKENDS = ("sqlite", "mysql", "postgresql")
ADMIN_URLS = {
    "mysql": os.environ.get(
        "PCI_VGPU_TEST_MYSQL_URL",
        "mysql+pymysql://openstack_citest:openstack_citest@127.0.0.1/"
        "openstack_citest"),
    "postgresql": os.environ.get(
        "PCI_VGPU_TEST_POSTGRESQL_URL",
        "postgresql+psycopg2://openstack_citest:openstack_citest@127.0.0.1/"
        "postgres"),
}
_CTX = multiprocessing.get_context("fork")


def _gpu(index: int) -> dict[str, ty.Any]:
    address = "0000:%02x:00.0" % (0x41 + index)
    return {"dev_id": "pci_" + address.replace(":", "_").replace(".", "_"),
            "address": address, "vendor_id": "10de", "product_id": "1eb8",
            "numa_node": index % 2, "label": "label_10de_1eb8",
            "dev_type": "type-PCI", "parent_addr": None,
            "vgpu_types": {"nvidia-222": {
                "name": "GRID T4-1B", "description": "", "device_api": "vfio-pci",
                "available": 16, "max": 16, "identifier": None}},
            "vgpu_sharing": "one-type", "vgpu_backend": "mdev"}


def _request() -> ipr.InstancePCIRequest:
    return ipr.InstancePCIRequest(
        count=1, spec=[{"vendor_id": "10de", "product_id": "1eb8",
                        "vgpu_types": json.dumps(["nvidia-222"])}],
        alias_name="vgpu", is_new=False, numa_policy="legacy",
        request_id=str(uuid.uuid4()), requester_id=None)


class _Scratch:
    """A fresh database on ``backend``; ``url`` is None when unreachable."""

    def __init__(self, backend: str, tmp_dir: str) -> None:
        self.backend = backend
        self.url: str | None = None
        self._drop: ty.Callable[[], None] = lambda: None
        ident = "pcivgpu_bench_%s" % uuid.uuid4().hex[:8]
        if backend == "sqlite":
            self.url = "sqlite:///%s" % os.path.join(tmp_dir, ident + ".sqlite")
            return
        admin = sa.make_url(ADMIN_URLS[backend])
        engine = sa.create_engine(admin, poolclass=sa.pool.NullPool)
        try:
            engine.connect().close()
        except sa.exc.DBAPIError:
            self.reason = "%s not reachable" % db_api.mask_url(admin)
            return
        impl = provision.BackendImpl.impl(backend)
        impl.create_named_database(engine, ident)
        self._drop = lambda: impl.drop_named_database(engine, ident)
        self.url = impl.provisioned_database_url(admin, ident).render_as_string(
            hide_password=False)

    def drop(self) -> None:
        self._drop()


def _prepare(url: str, hosts: list[str]) -> None:
    db = db_api.Database(url)
    db.sync()
    for host in hosts:
        tracker = manager.PciDevTracker(db, host)
        tracker.update_devices_from_hypervisor_resources(
            json.dumps([_gpu(i) for i in range(4)]))
    db.dispose()


def _worker(url: str, host: str, seconds: float, start: ty.Any,
            out: ty.Any) -> None:
    db = db_api.Database(url)
    tracker = manager.PciDevTracker(db, host)
    tracker.refresh()
    start.wait()
    done, deadline = 0, time.monotonic() + seconds
    cpu = time.process_time()
    while time.monotonic() < deadline:
        instance = str(uuid.uuid4())
        tracker.claim_instance(instance, [_request()])
        tracker.allocate_instance(instance)
        tracker.free_instance(instance)
        done += 1
    out.put((done, time.process_time() - cpu))
    db.dispose()


class Cell(ty.NamedTuple):
    """One measurement: wall-clock rate, rate per worker CPU second, load."""

    rate: float
    per_cpu_s: float
    load: float


def measure(url: str, hosts: list[str], seconds: float) -> Cell:
    """Round trips per second, one worker process per entry of ``hosts``."""
    start, out = _CTX.Event(), _CTX.Queue()
    procs = [_CTX.Process(target=_worker, args=(url, host, seconds, start, out))
             for host in hosts]
    for proc in procs:
        proc.start()
    time.sleep(0.5)  # let every worker connect and load the node
    load = os.getloadavg()[0]
    began = time.monotonic()
    start.set()
    counts = [out.get(timeout=seconds + 120) for _ in procs]
    elapsed = time.monotonic() - began
    for proc in procs:
        proc.join(timeout=30)
        if proc.exitcode != 0:
            raise RuntimeError("a benchmark worker failed (exit %s)" % proc.exitcode)
    total = sum(done for done, _cpu in counts)
    cpu = sum(cpu for _done, cpu in counts)
    return Cell(total / elapsed, total / cpu if cpu else 0.0, load)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args(argv)
    results: dict[tuple[str, int, str], Cell | None] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        for backend in BACKENDS:
            for workers in args.workers:
                for layout in (("hosts", "shared") if workers > 1 else ("hosts",)):
                    hosts = (["%s-%d" % (HOST, i) for i in range(workers)]
                             if layout == "hosts" else [HOST] * workers)
                    results[(backend, workers, layout)] = _run_cell(
                        backend, tmp_dir, hosts, args.seconds)
    _print_table(results, args.seconds)
    return 0


def _run_cell(backend: str, tmp_dir: str, hosts: list[str],
              seconds: float) -> Cell | None:
    scratch = _Scratch(backend, tmp_dir)
    if scratch.url is None:
        return None
    try:
        _prepare(scratch.url, sorted(set(hosts)))
        return measure(scratch.url, hosts, seconds)
    finally:
        scratch.drop()


def _print_table(results: dict[tuple[str, int, str], Cell | None],
                 seconds: float) -> None:
    print("claim+allocate+free round trips per second, %.0f s per cell"
          % seconds)
    print("%-12s %8s %-6s %14s %10s %6s" % (
        "database", "workers", "nodes", "round trips/s", "per CPU-s", "load"))
    for (backend, workers, layout), cell in results.items():
        nodes = "1" if layout == "shared" else str(workers)
        if cell is None:
            print("%-12s %8d %-6s %14s" % (backend, workers, nodes, "n/a"))
            continue
        print("%-12s %8d %-6s %14.0f %10.0f %6.1f" % (
            backend, workers, nodes, cell.rate, cell.per_cpu_s, cell.load))
    wanted = (("sqlite", 1), ("sqlite", 8), ("mysql", 8), ("postgresql", 8))
    line = []
    for backend, workers in wanted:
        cell = results.get((backend, workers, "hosts"))
        line.append("%s_%d=%s" % (backend, workers,
                                  "n/a" if cell is None else "%.0f" % cell.rate))
    print("CLAIMS_PER_S " + " ".join(line))


if __name__ == "__main__":
    sys.exit(main())
