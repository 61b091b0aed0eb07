"""The database errors as an operator sees them: ``pci-vgpu`` in a subprocess.

Without ``--debug`` each failure is exactly one line on stderr (no
traceback: a corrupt SQLite file used to print 44 lines), names the option
and the file or masked URL, and the exit code is 1.  A read-only SQLite
file still serves ``pool list``.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from pci_vgpu.cli import config as cli_config
from tests.fixtures import db as db_fixtures
from tests.unit.db.test_errors import _read_only

SECRET = "S3cr3t-pw"


def _pci_vgpu(tmp_path: pathlib.Path, database: str, *argv: str
              ) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "test.conf"
    conf.write_text("[host]\nstate_dir = %s\n%s" % (
        tmp_path / "state",
        "[database]\nconnection = %s\n" % database if database else ""))
    script = pathlib.Path(sys.executable).parent / "pci-vgpu"
    command = ([str(script)] if script.exists()
               else [sys.executable, "-m", "pci_vgpu.cli.app"])
    return subprocess.run(
        command + ["--config-file", cli_config.BUNDLED_DEFAULTS,
                   "--config-file", str(conf)] + list(argv),
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, HOME=str(tmp_path)))


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), result.stderr
    assert SECRET not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_corrupt_sqlite_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "broken.sqlite"
    path.write_bytes(b"\x00garbage" * 500)
    result = _pci_vgpu(tmp_path, "sqlite:///%s" % path, "pool", "list")
    _one_line_error(result, str(path), "not a usable SQLite database")


def test_read_only_sqlite_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "state" / "pci_vgpu.sqlite"
    first = _pci_vgpu(tmp_path, "", "pool", "list", "-f", "value")
    assert first.returncode == 0, first.stderr
    with _read_only(path):
        listed = _pci_vgpu(tmp_path, "", "pool", "list", "-f", "value")
        created = _pci_vgpu(tmp_path, "", "server", "create", "vm1",
                            "--flavor", "t4-small")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == first.stdout
    _one_line_error(created, str(path), "read-only", "vm1")


@pytest.mark.mysql
def test_wrong_mariadb_password(tmp_path: pathlib.Path) -> None:
    db_fixtures.require("mysql")
    url = db_fixtures.admin_url("mysql").set(password=SECRET)
    result = _pci_vgpu(tmp_path, url.render_as_string(hide_password=False),
                       "pool", "list")
    _one_line_error(result, "[database] connection", ":***@127.0.0.1",
                    "refused the login")


def test_port_that_is_not_a_number(tmp_path: pathlib.Path) -> None:
    result = _pci_vgpu(tmp_path, "mysql+pymysql://nova:%s@db:33o6/nova" % SECRET,
                       "pool", "list")
    _one_line_error(result, "[database] connection", "nova:***@db:33o6",
                    "port is not a number")
