"""A fresh database used by several processes at once, and migrations killed.

Before: four processes using a fresh MariaDB database at once failed 9 of
12 times (``1050 Table 'compute_nodes' already exists``), and killing the
first-use migration 50-160 ms in left 4 of 8 databases failing for good.

Now: every process of every round succeeds and the schema is exactly a
clean run's; each migrating process SIGKILLed at a random moment of its
upgrade leaves a database the next process completes.
"""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys
import time
import typing as ty
import uuid

import pytest
import sqlalchemy as sa

from pci_vgpu.cli import config as cli_config
from pci_vgpu.db import api as db_api
from pci_vgpu.db import migration
from pci_vgpu import manager
from tests.fixtures import db as db_fixtures
from tests.race import node
from tests.race import procs
from tests.unit.db import inventory as inv
from tests.unit.db import test_migration_safety as safety

FIRST_USERS = 4
ROUNDS = 3
#: Migrating processes killed per backend (MariaDB is where DDL is not
#: transactional, so it gets the most).
KILLS = {"sqlite": 6, "mysql": 12, "postgresql": 6}
KILLS_PER_DATABASE = 3


def _first_use(url: str) -> ty.Callable[[], int]:
    def action() -> int:
        db = db_api.Database(url)
        try:
            db.sync()
            tracker = manager.PciDevTracker(db, node.NODE)
            tracker.update_devices_from_hypervisor_resources(
                inv.report(node.host()))
            tracker.claim_instance(str(uuid.uuid4()), [inv.vgpu_request()],
                                   instance_name=uuid.uuid4().hex)
            return sum(tracker.conflicts.values())
        finally:
            db.dispose()
    return action


@pytest.mark.parametrize("backend", db_fixtures.backend_params())
def test_processes_using_a_fresh_database_at_once(
        backend: str, tmp_path: pathlib.Path,
        record: ty.Callable[..., None]) -> None:
    reference = safety.reference_schema(backend)
    ok = conflicts = 0
    for _ in range(ROUNDS):
        with db_fixtures.Database(backend, str(tmp_path)) as database:
            outcomes = procs.run_together(_first_use,
                                          [(database.url,)] * FIRST_USERS)
            assert [o.error for o in outcomes] == [None] * FIRST_USERS
            ok += len(outcomes)
            conflicts += sum(o.value for o in outcomes)
            engine = sa.create_engine(database.url, poolclass=sa.pool.NullPool)
            assert migration.current(engine) == migration.revisions()[-1]
            assert safety.schema(engine) == reference
            engine.dispose()
            assert len(node.rows(database.url, "SELECT id FROM compute_nodes")) == 1
            assert len(node.rows(database.url, "SELECT id FROM instances")) == \
                FIRST_USERS
    record(backend=backend, processes=ROUNDS * FIRST_USERS, succeeded=ok,
           write_conflicts_retried=conflicts)


@pytest.mark.parametrize("backend", db_fixtures.backend_params())
def test_cli_processes_using_a_fresh_database_at_once(
        backend: str, tmp_path: pathlib.Path,
        record: ty.Callable[..., None]) -> None:
    script = pathlib.Path(sys.executable).parent / "pci-vgpu"
    with db_fixtures.Database(backend, str(tmp_path)) as database:
        conf = tmp_path / "cli.conf"
        conf.write_text("[host]\nhostname = race-cli\nstate_dir = %s\n"
                        "[database]\nconnection = %s\n" % (tmp_path, database.url))
        command = [str(script), "--config-file", cli_config.BUNDLED_DEFAULTS,
                   "--config-file", str(conf), "pool", "list", "-f", "value"]
        runs = [subprocess.Popen(command, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True,
                                 env=dict(os.environ, HOME=str(tmp_path)))
                for _ in range(FIRST_USERS)]
        results = [(p.wait(timeout=180),) + tuple(p.communicate()) for p in runs]
    assert [rc for rc, _, _ in results] == [0] * FIRST_USERS, results
    assert len({out for _, out, _ in results}) == 1  # the same pools for all
    record(backend=backend, cli_processes=FIRST_USERS, succeeded=FIRST_USERS)


def _migrate_in_child(url: str) -> int:
    """Fork a process that upgrades the schema; returns its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            db = db_api.Database(url)
            db.sync()
            code = 0
        finally:
            os._exit(code)
    return pid


def _clean_run_seconds(backend: str, tmp_path: pathlib.Path) -> float:
    with db_fixtures.Database(backend, str(tmp_path)) as database:
        started = time.monotonic()
        pid = _migrate_in_child(database.url)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        return time.monotonic() - started


def _schemas_by_revision(backend: str) -> dict[str, ty.Any]:
    """The schema a clean run leaves at each revision (None: empty)."""
    snapshots: dict[str, ty.Any] = {}
    with db_fixtures.Database(backend) as ref:
        engine = sa.create_engine(ref.url, poolclass=sa.pool.NullPool)
        snapshots["None"] = safety.schema(engine)
        for revision in migration.revisions():
            migration.upgrade(engine, revision)
            snapshots[revision] = safety.schema(engine)
        engine.dispose()
    return snapshots


def _kill_one(url: str, window: float, rng: random.Random) -> bool:
    """Fork a migrator and SIGKILL it at a random moment; False if it won."""
    pid = _migrate_in_child(url)
    time.sleep(rng.uniform(0.0, window))
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == -signal.SIGKILL


@pytest.mark.parametrize("backend", db_fixtures.backend_params())
def test_migrations_killed_at_random_moments(
        backend: str, tmp_path: pathlib.Path,
        record: ty.Callable[..., None]) -> None:
    clean = _schemas_by_revision(backend)
    reference = clean[migration.revisions()[-1]]
    window = _clean_run_seconds(backend, tmp_path)
    rng = random.Random(os.environ.get("PCI_VGPU_RACE_SEED", "14"))
    killed = finished_first = half_done = 0
    revisions_at_kill: dict[str, int] = {}
    while killed < KILLS[backend]:
        with db_fixtures.Database(backend, str(tmp_path)) as database:
            engine = sa.create_engine(database.url, poolclass=sa.pool.NullPool)
            for _ in range(KILLS_PER_DATABASE):
                if not _kill_one(database.url, window, rng):
                    finished_first += 1
                    break  # complete: the next migrator has nothing to do
                killed += 1
                rev = str(migration.current(engine))
                revisions_at_kill[rev] = revisions_at_kill.get(rev, 0) + 1
                snapshot = safety.schema(engine)
                # (An empty alembic_version table alone, from a kill before
                # the first revision began, is not a half-applied one.)
                if snapshot != clean[rev] and \
                        set(snapshot) - {"alembic_version"} != set():
                    half_done += 1
                    # Only MariaDB commits DDL statement by statement.
                    assert backend == "mysql", (rev, snapshot)
            db = db_api.Database(database.url)
            db.sync()  # the next user of the database: must just work
            db.dispose()
            assert migration.current(engine) == migration.revisions()[-1]
            assert safety.schema(engine) == reference
            engine.dispose()
    record(backend=backend, kills_survived=killed,
           finished_before_kill=finished_first,
           kills_leaving_half_applied_revision=half_done,
           revision_at_kill=revisions_at_kill,
           clean_run_s=round(window, 2))
