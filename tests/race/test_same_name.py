"""Same-name creates started together: exactly one server gets the name.

Before revision 0004 the name check was a read before the claim: 25 of 25
concurrent API creates succeeded on MariaDB and PostgreSQL (3 of 25 on
SQLite), 7 of 8 CLI creates on PostgreSQL.  Now the database's unique key
decides, in the claim's transaction: one create wins, every other one is
refused with a one-line error naming the server, and no claim, device or
instance row of a loser remains.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import typing as ty

import pytest
import sqlalchemy as sa

from pci_vgpu.cli import config as cli_config
from pci_vgpu.db import api as db_api
from pci_vgpu import service as svc
from tests.fixtures import db as db_fixtures
from tests.fixtures.db import sqlite_db  # noqa: F401  (pytest fixture)
from tests.race import node
from tests.race import procs
from tests.unit.db import inventory as inv

WORKERS = 8
ROUNDS = 3
CLI_WORKERS = 8


def _create(url: str, name: str) -> ty.Callable[[], str]:
    db = db_api.Database(url)
    service = node.service(db)
    service.tracker.instances()  # read the node before the race, as an API worker has

    def action() -> str:
        try:
            return service.create_server(name, [inv.vgpu_request()]).uuid
        finally:
            db.dispose()
    return action


def _check_one_holder(url: str, name: str, winner: str) -> None:
    held = node.rows(url, "SELECT uuid, server_name FROM instances WHERE name = :n",
                     n=name)
    assert [(r.uuid, r.server_name) for r in held] == [(winner, name)]
    owners = node.rows(url, "SELECT instance_uuid, status FROM pci_devices "
                            "WHERE deleted = 0 AND instance_uuid IS NOT NULL")
    assert {r.instance_uuid for r in owners} <= {
        r.uuid for r in node.rows(url, "SELECT uuid FROM instances")}


@pytest.mark.parametrize("backend", db_fixtures.backend_params())
def test_api_creates_of_one_name(backend: str, tmp_path: pathlib.Path,
                                 record: ty.Callable[..., None]) -> None:
    with db_fixtures.Database(backend, str(tmp_path)) as database:
        node.prepare(database.url)
        wins = refused_by_key = refused_by_check = 0
        for round_ in range(ROUNDS):
            name = "same%d" % round_
            outcomes = procs.run_together(
                _create, [(database.url, name)] * WORKERS)
            winners = [o.value for o in outcomes if o.error is None]
            losers = [o.error for o in outcomes if o.error is not None]
            assert len(winners) == 1, [o.error for o in outcomes]
            for error in losers:
                first = error.splitlines()[0]
                assert name in first, first
                if "already taken" in first:
                    refused_by_key += 1  # the database's unique key
                else:
                    assert "already used by" in first, first
                    refused_by_check += 1  # the service's early check
            _check_one_holder(database.url, name, winners[0])
            wins += 1
    record(backend=backend, creates=WORKERS * ROUNDS, won=wins,
           refused_by_unique_key=refused_by_key,
           refused_by_early_check=refused_by_check)


def _cli_conf(tmp_path: pathlib.Path, url: str, index: int) -> pathlib.Path:
    state = tmp_path / ("state%d" % index)
    state.mkdir()
    path = tmp_path / ("cli%d.conf" % index)
    path.write_text("[host]\nhostname = race-cli\nstate_dir = %s\n"
                    "[database]\nconnection = %s\n" % (state, url))
    return path


def _pci_vgpu() -> list[str]:
    script = pathlib.Path(sys.executable).parent / "pci-vgpu"
    return [str(script)] if script.exists() else [sys.executable, "-m",
                                                   "pci_vgpu.cli.app"]


@pytest.mark.parametrize("backend", db_fixtures.backend_params())
def test_cli_creates_of_one_name(backend: str, tmp_path: pathlib.Path,
                                 record: ty.Callable[..., None]) -> None:
    with db_fixtures.Database(backend, str(tmp_path)) as database:
        confs = [_cli_conf(tmp_path, database.url, i) for i in range(CLI_WORKERS)]
        base = _pci_vgpu() + ["--config-file", cli_config.BUNDLED_DEFAULTS]
        env = dict(os.environ, HOME=str(tmp_path))
        # The node and its inventory exist before the race (first use is
        # test_first_use's subject).
        subprocess.run(base + ["--config-file", str(confs[0]), "pool", "list"],
                       check=True, capture_output=True, env=env, timeout=120)
        runs = [subprocess.Popen(
            base + ["--config-file", str(c), "server", "create", "same1",
                    "--flavor", "t4-small", "-f", "value", "-c", "uuid"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for c in confs]
        results = [(p.wait(timeout=180), p.stdout.read(), p.stderr.read())
                   for p in runs]
        for p in runs:
            p.stdout.close()
            p.stderr.close()
    won = [out.strip() for rc, out, _ in results if rc == 0]
    errors = [err.strip() for rc, _, err in results if rc != 0]
    assert len(won) == 1, results
    for error in errors:
        assert len(error.splitlines()) == 1 and "same1" in error, error
        assert "already" in error, error
    record(backend=backend, cli_creates=CLI_WORKERS, won=len(won),
           refused=len(errors))


def test_server_delete_by_name_is_unambiguous(sqlite_db: db_api.Database) -> None:
    service = node.service(sqlite_db)
    service.sync_inventory()
    first = service.create_server("vm", [inv.vgpu_request()])
    assert service.get_server(first.uuid).uuid == first.uuid
    assert service.get_server("vm").uuid == first.uuid
    # A second "vm" can only come from outside pci_vgpu (revision 0004
    # renamed older duplicates): it is refused by name, found by UUID.
    stray = "3f1c4e1a-0000-4000-8000-0000000000aa"
    with sqlite_db.writer() as conn:
        conn.execute(sa.text(
            "INSERT INTO instances (uuid, compute_node_id, name, status, "
            "pci_requests) SELECT :u, compute_node_id, 'vm', 'allocated', "
            "'[]' FROM instances WHERE uuid = :first"),
            {"u": stray, "first": first.uuid})
        conn.execute(sa.text("UPDATE compute_nodes SET generation = generation + 1"))
    with pytest.raises(svc.AmbiguousServerName, match=stray):
        service.delete_server("vm")
    assert service.get_server(stray).uuid == stray
    assert service.delete_server(first.uuid).uuid == first.uuid
    with pytest.raises(svc.ServerNotFound):
        service.get_server(first.uuid)
