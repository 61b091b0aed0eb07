"""The cliff application: help, errors as one line, exit codes."""

from __future__ import annotations

import io
import typing as ty

import pytest

from pci_vgpu import conf as pci_conf
from pci_vgpu.cli import app


@pytest.fixture(autouse=True)
def _forget_config() -> ty.Iterator[None]:
    """The app loads the process-wide CONF; leave it as other tests expect."""
    yield
    pci_conf.CONF.reset()


def run(argv: list[str]) -> tuple[int, str, str]:
    """Run pci-vgpu in-process the way the console script does."""
    out, err = io.StringIO(), io.StringIO()
    runner = app.PciVgpuApp()
    runner.stdout, runner.stderr = out, err
    rc = runner.run(argv)
    return rc, out.getvalue(), err.getvalue()


def test_help_lists_every_command():
    rc, out, _ = run(["help"])
    assert rc == 0
    for name, _target in app.COMMANDS:
        assert name in out


def test_every_command_module_imports():
    for _name, target in app.COMMANDS:
        assert app._LazyEntryPoint(target).load() is not None


def test_missing_config_file_is_one_error_line():
    rc, out, err = run(["--config-file", "/no/such/file.conf", "server", "list"])
    assert rc == 1
    assert err.strip().splitlines() == [
        "ERROR: Configuration file /no/such/file.conf does not exist; give an existing path."]
    assert "Traceback" not in err


def test_debug_shows_the_traceback():
    with pytest.raises(Exception, match="/no/such/file.conf"):
        run(["--debug", "--config-file", "/no/such/file.conf", "server", "list"])


def test_unknown_command_fails():
    rc, _, _ = run(["frobnicate"])
    assert rc != 0
