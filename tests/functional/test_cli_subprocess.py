"""``pci-vgpu`` as a user runs it: a separate process, real exit codes."""

from __future__ import annotations

import json
import os
import socket
import pathlib
import subprocess
import sys
import typing as ty

import pytest

from pci_vgpu.cli import config as config_module
from pci_vgpu.virt.libvirt import driver as libvirt_driver

SCRIPT = pathlib.Path(sys.executable).parent / "pci-vgpu"


def pci_vgpu(tmp_path: pathlib.Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run the console script (or the module) with a private state dir."""
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "pci_vgpu.cli.app"]
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), HOME=str(tmp_path))
    return subprocess.run(command + list(argv), capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_help_lists_the_commands(tmp_path):
    result = pci_vgpu(tmp_path, "help")
    assert result.returncode == 0
    for name in ("host inventory", "pool list", "config check", "flavor explain",
                 "server create", "host reconcile", "demo"):
        assert name in result.stdout


def test_inventory_json_with_no_config_file(tmp_path):
    uri = libvirt_driver.host_uri("two-socket-t4-v100")
    result = pci_vgpu(tmp_path, "host", "inventory", "-f", "json", "--connection", uri)
    assert result.returncode == 0, result.stderr
    devices = json.loads(result.stdout)
    assert [d["address"] for d in devices] == ["0000:06:00.0", "0000:41:00.0"]
    assert (tmp_path / "state" / "pci-vgpu" / "pci_vgpu.sqlite").exists()
    assert result.stderr == ""


@pytest.mark.parametrize("argv, words", [
    (["--config-file", "/no/such.conf", "pool", "list"], "/no/such.conf"),
    (["server", "create", "vm1", "--flavor", "pci_passthrough:alias=nope:1"], "nope"),
    (["host", "inventory", "--connection", "test:///no/such/host.xml"], "/no/such/host.xml"),
])
def test_errors_are_one_line_without_traceback(tmp_path, argv, words):
    result = pci_vgpu(tmp_path, *argv)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(lines) == 1 and words in lines[0]
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = pci_vgpu(tmp_path, "--debug", "--config-file", "/no/such.conf", "pool", "list")
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_demo_runs_end_to_end(tmp_path):
    result = pci_vgpu(tmp_path, "demo")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    out = result.stdout
    assert "pools restored on libvirt: yes" in out
    assert "pools restored on xenserver: yes" in out
    assert "NUMA affinity policy" in out
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())


def test_unreachable_database_is_one_line_without_password(tmp_path):
    conf = tmp_path / "db.conf"
    conf.write_text("[database]\nconnection = mysql+pymysql://u:s3cret@127.0.0.1:1/x\n")
    result = pci_vgpu(tmp_path, "--config-file", str(conf), "pool", "list")
    assert result.returncode == 1
    assert result.stderr.startswith("ERROR: Cannot reach the database server of "
                                    "[database] connection mysql+pymysql://u:***@127.0.0.1:1/x")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "s3cret" not in result.stderr


def test_interactive_shell_keeps_the_embedded_host_between_commands(tmp_path):
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "pci_vgpu.cli.app"]
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), HOME=str(tmp_path))
    script = "\n".join([
        "server create vm1 --flavor t4-small -f value -c numa_node",
        "server list -f value -c name -c running",
        "server delete vm1",
        "server list -f value -c name",
        "quit", ""])
    result = subprocess.run(command, input=script, capture_output=True, text=True, env=env,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    assert lines[:2] == ["1", "vm1 True"] and lines[2].startswith("Deleted server vm1 (")
    assert lines[3:] == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("verbosity", [[], ["-vv"], ["--debug"]])
def test_a_password_in_connection_is_masked_everywhere(tmp_path, verbosity):
    url = "http://root:PASSWORD@127.0.0.1:%d/" % _closed_port()
    result = pci_vgpu(tmp_path, *verbosity, "host", "inventory", "--connection", url)
    assert result.returncode == 1
    assert "PASSWORD" not in result.stdout + result.stderr
    assert "http://127.0.0.1:" in result.stderr
    if not verbosity:
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_password_in_connection_url_option_is_masked(tmp_path):
    conf = tmp_path / "xs.conf"
    conf.write_text("[host]\ndriver = xenserver\n[xenserver]\nconnection_url = "
                    "https://root:PASSWORD@127.0.0.1:%d/\n" % _closed_port())
    result = pci_vgpu(tmp_path, "-vv", "--config-file", str(conf), "pool", "list")
    assert result.returncode == 1 and "PASSWORD" not in result.stderr
    assert "ERROR: Cannot reach the hypervisor at https://127.0.0.1:" in result.stderr


def test_a_xapi_listener_that_never_answers_fails_naming_url_and_option(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        port = sock.getsockname()[1]
        conf = tmp_path / "xs.conf"
        conf.write_text("[host]\ndriver = xenserver\n[xenserver]\ncall_timeout = 0.5\n"
                        "connection_url = http://root:PASSWORD@127.0.0.1:%d/\n" % port)
        result = pci_vgpu(tmp_path, "--config-file", str(conf), "host", "inventory")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "http://127.0.0.1:%d/" % port in line
    assert "[xenserver] call_timeout" in line and "PASSWORD" not in line


@pytest.mark.parametrize("argv", [["pool", "list"], ["pool", "list", "--connection", "xenserver"]])
def test_an_unusable_state_dir_is_named(tmp_path, argv):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    conf = tmp_path / "state.conf"
    conf.write_text("[host]\nstate_dir = %s/sub\n" % blocker)
    result = pci_vgpu(tmp_path, "--config-file", config_module.BUNDLED_DEFAULTS,
                      "--config-file", str(conf), *argv)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("ERROR: [host] state_dir %s/sub" % blocker), line


@pytest.mark.parametrize("connection, flavor", [("libvirt", "t4-small"),
                                                ("xenserver", "k2-medium")])
def test_the_embedded_host_keeps_guests_between_processes(tmp_path, connection, flavor):
    """Issue 14 item 10: each command its own process, as a user runs them."""
    conn = ["--connection", connection]
    start = pci_vgpu(tmp_path, "pool", "list", "-f", "json", *conn)
    created = pci_vgpu(tmp_path, "server", "create", "vm1", "--flavor", flavor, "-f", "json",
                       *conn)
    assert created.returncode == 0, created.stderr
    listed = pci_vgpu(tmp_path, "server", "list", "-f", "value", "-c", "name", "-c", "running",
                      *conn)
    assert listed.stdout.split() == ["vm1", "True"]
    reconciled = pci_vgpu(tmp_path, "host", "reconcile", "-f", "json", *conn)
    assert (reconciled.returncode, json.loads(reconciled.stdout)) == (0, [])
    assert pci_vgpu(tmp_path, "server", "delete", "vm1", *conn).returncode == 0
    assert pci_vgpu(tmp_path, "pool", "list", "-f", "json", *conn).stdout == start.stdout
