"""The fault hook in the installed console script, not only in forks.

The storm (``test_kills``) forks its commands from a pre-imported process;
these run ``pci-vgpu`` itself as a user would, killed at a named point, and
check the same consistency afterwards, including a deleted server whose
XAPI VM was stopped but not destroyed when the kill came.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import typing as ty

import pytest

from tests.fault import harness

SCRIPT = pathlib.Path(sys.executable).parent / "pci-vgpu"


class ScriptNode(harness.Node):
    """A node whose commands are separate console-script processes."""

    def _script(self, argv: ty.Sequence[str], fault: str | None) -> harness.Result:
        env = dict(os.environ)
        env.pop("PCI_VGPU_FAULT", None)
        if fault:
            env["PCI_VGPU_FAULT"] = fault
        command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m",
                                                           "pci_vgpu.cli.app"]
        done = subprocess.run(command + self.argv + list(argv), capture_output=True,
                              text=True, env=env, timeout=120, check=False)
        return harness.Result(done.returncode, done.stdout + done.stderr)

    def run(self, *argv: str) -> harness.Result:
        return self._script(argv, None)

    def kill_at(self, point: str, *argv: str) -> harness.Result:
        return self._script(argv, point)


@pytest.fixture
def node(tmp_path: ty.Any) -> ScriptNode:
    return ScriptNode(tmp_path, "sqlite:///%s/db.sqlite" % tmp_path)


@pytest.mark.parametrize("driver, flavor, point", [
    ("libvirt", "t4-small", "create:vgpu-prepared"),
])
def test_a_create_killed_at_a_point_is_repaired(node, driver, flavor, point):
    start = node.json("pool", "list", "--connection", driver)
    result = node.kill_at(point, "server", "create", "vm1", "--flavor", flavor,
                          "--connection", driver)
    assert result.status == -signal.SIGKILL, result.output
    assert node.run("host", "reconcile", "--apply", "--connection", driver).status == 0
    assert harness.consistency_problems(node, driver) == []
    for name in {s["name"] for s in node.json("server", "list", "--connection", driver)}:
        assert node.run("server", "delete", name, "--connection", driver).status == 0
    assert node.json("pool", "list", "--connection", driver) == start


def test_a_xapi_vm_stopped_by_a_killed_delete_is_a_stopped_server(node):
    start = node.json("pool", "list", "--connection", "xenserver")
    assert node.run("server", "create", "vm1", "--flavor", "k2-medium",
                    "--connection", "xenserver").status == 0
    # hard_shutdown is saved, VM.destroy is not: the kill comes mid-save
    killed = node.kill_at("host:saving@2", "server", "delete", "vm1",
                          "--connection", "xenserver")
    assert killed.status == -signal.SIGKILL
    report = node.run("host", "reconcile", "--apply", "-f", "json",
                      "--connection", "xenserver")
    assert (report.status, json.loads(report.output)) == (0, [])
    [server] = node.json("server", "list", "--connection", "xenserver")
    assert (server["name"], server["running"]) == ("vm1", False)
    assert harness.consistency_problems(node, "xenserver") == []
    assert node.run("server", "delete", "vm1", "--connection", "xenserver").status == 0
    assert node.json("pool", "list", "--connection", "xenserver") == start
