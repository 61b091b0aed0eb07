"""kill -9 at any point, then ``host reconcile --apply``: everything consistent.

For each database (SQLite, MariaDB, PostgreSQL) one compute node runs a
random workload of real ``pci-vgpu`` commands on both embedded hosts
(libvirt test host, XAPI simulator): creates, deletes, hot-plugs, inventory
syncs and reconciles.  At least :data:`KILLS` of them are killed with
SIGKILL: at every named fault point of :mod:`pci_vgpu.fault` in turn (the
claim committed, a vGPU created, the guest started, an embedded host half-way
through saving its state, a reconcile between two fixes ...) and, one in
three, at a random time.  After each command, killed or not, ``host
reconcile --apply`` must exit 0 and :func:`harness.consistency_problems`
must find nothing by direct SQL and on the embedded host: no claimed row, no
server without its running guest or the reverse, no orphan or missing vGPU,
every pool offering exactly what the host can still create.  At the end
every server is deleted and the pools must be those of the start.

``PCI_VGPU_FAULT_KILLS`` (default 50) and ``PCI_VGPU_FAULT_SEED`` (default 14)
size and replay a run; the counts are printed in pytest's summary.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
import typing as ty

import pytest

from tests.fault import harness
from tests.fixtures import db as db_fixtures

KILLS = int(os.environ.get("PCI_VGPU_FAULT_KILLS", "50"))
SEED = int(os.environ.get("PCI_VGPU_FAULT_SEED", "14"))
#: What each run did, for the summary (conftest prints it).
RESULTS: dict[str, dict[str, ty.Any]] = {}

LIBVIRT, XEN = "libvirt", "xenserver"
FLAVORS = {LIBVIRT: [["--flavor", "t4-small"], ["--flavor", "v100-medium", "--numa-node", "0"]],
           XEN: [["--flavor", "k2-medium"]]}
#: Named points each operation passes (host:saving@N: the N-th save of the host).
POINTS = {
    "create": ["create:claimed", "create:vgpu-prepared", "create:spawned", "create:allocated",
               "host:saving@1", "host:saving@2", "host:saving@3"],
    "delete": ["delete:destroyed", "delete:vgpu-released", "host:saving@1", "host:saving@2"],
    "attach": ["attach:claimed", "create:vgpu-prepared", "attach:attached",
               "host:saving@1", "host:saving@2"],
}
#: Random kill delays (seconds) by driver: a forked command takes 0.2-0.6 s.
DELAYS = {LIBVIRT: (0.03, 0.4), XEN: (0.05, 0.6)}
MAX_SERVERS = 4


@dataclasses.dataclass
class Tally:
    kills: int = 0
    named: int = 0
    random_kills: int = 0
    commands: int = 0
    reconciles: int = 0
    checks: int = 0
    fixed: int = 0
    by_point: dict[str, int] = dataclasses.field(default_factory=dict)


class Storm:
    """The workload on one node, and the checks after each command."""

    def __init__(self, node: harness.Node, rng: random.Random) -> None:
        self.node = node
        self.rng = rng
        self.tally = Tally()
        self._names = 0
        self._points = {op: list(points) for op, points in POINTS.items()}

    def servers(self, driver: str) -> list[str]:
        opts = self.node.conf()
        from pci_vgpu.cli import wiring
        _rows, instances = harness.read_database(self.node.db_url,
                                                 wiring.node_name(opts, driver))
        return sorted({str(i.name) for i in instances})

    def _command(self, driver: str) -> tuple[str, list[str]]:
        servers = self.servers(driver)
        if servers and (len(servers) >= MAX_SERVERS or self.rng.random() < 0.35):
            if driver == LIBVIRT and self.rng.random() < 0.4:
                return "attach", ["server", "attach", self.rng.choice(servers),
                                  "--flavor", "t4-small"]
            return "delete", ["server", "delete", self.rng.choice(servers)]
        self._names += 1
        return "create", ["server", "create", "f%d" % self._names] + self.rng.choice(
            FLAVORS[driver])

    def _next_point(self, op: str) -> str:
        points = self._points[op]
        point = points.pop(0)
        points.append(point)
        return point

    def episode(self) -> None:
        driver = LIBVIRT if self.rng.random() < 0.7 else XEN
        op, argv = self._command(driver)
        argv += ["--connection", driver]
        if self.rng.random() < 1 / 3:
            result, how = self.node.kill_after(self.rng.uniform(*DELAYS[driver]), *argv), "random"
        else:
            how = self._next_point(op)
            result = self.node.kill_at(how, *argv)
        self.tally.commands += 1
        if result.killed:
            self.tally.kills += 1
            if how == "random":
                self.tally.random_kills += 1
            else:
                self.tally.named += 1
                key = "%s %s" % (op, how)
                self.tally.by_point[key] = self.tally.by_point.get(key, 0) + 1
        self.reconcile_and_check(driver, "%s (%s, %s)" % (" ".join(argv), how, result.status))

    def kill_a_reconcile(self) -> None:
        """Leave something to fix, then kill the reconcile fixing it."""
        self._names += 1
        argv = ["server", "create", "f%d" % self._names, "--flavor", "t4-small",
                "--connection", LIBVIRT]
        if self.node.kill_at("create:spawned", *argv).killed:
            self.tally.kills += 1
            self.tally.named += 1
        killed = self.node.kill_at("reconcile:fixed", "host", "reconcile", "--apply",
                                   "--connection", LIBVIRT)
        self.tally.commands += 2
        if killed.killed:
            self.tally.kills += 1
            self.tally.named += 1
            self.tally.by_point["reconcile reconcile:fixed"] = (
                self.tally.by_point.get("reconcile reconcile:fixed", 0) + 1)
        self.reconcile_and_check(LIBVIRT, "a reconcile killed between two fixes")

    def reconcile_and_check(self, driver: str, after: str) -> None:
        result = self.node.run("host", "reconcile", "--apply", "-f", "json",
                               "--connection", driver)
        self.tally.reconciles += 1
        assert result.status == 0, "after %s, host reconcile --apply: %s" % (after,
                                                                             result.output)
        self.tally.fixed += result.output.count('"fixed": true')
        problems = harness.consistency_problems(self.node, driver)
        self.tally.checks += 1
        assert problems == [], "after %s + reconcile (%s): %s" % (after, result.output,
                                                                  problems)

    def delete_everything(self, driver: str) -> None:
        for name in self.servers(driver):
            result = self.node.run("server", "delete", name, "--connection", driver)
            assert result.status == 0, result.output
        self.reconcile_and_check(driver, "deleting every server")


@pytest.mark.slow
@pytest.mark.parametrize("backend", db_fixtures.backend_params())
def test_kill_9_anywhere_then_reconcile_leaves_everything_consistent(backend, tmp_path):
    started = time.monotonic()
    zygote = harness.Zygote()
    try:
        with db_fixtures.Database(backend, str(tmp_path)) as db:
            node = harness.Node(tmp_path, db.url, zygote)
            start = {d: node.json("pool", "list", "--connection", d) for d in (LIBVIRT, XEN)}
            storm = Storm(node, random.Random("%s-%d" % (backend, SEED)))
            while storm.tally.kills < KILLS:
                if storm.tally.commands % 20 == 10:
                    storm.kill_a_reconcile()
                storm.episode()
            for driver in (LIBVIRT, XEN):
                storm.delete_everything(driver)
                assert node.json("pool", "list", "--connection", driver) == start[driver]
    finally:
        zygote.close()
    RESULTS[backend] = dict(dataclasses.asdict(storm.tally), seed=SEED,
                            seconds=round(time.monotonic() - started, 1))
