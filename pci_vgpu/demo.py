"""The guided walk-through behind ``pci-vgpu demo``.

It runs real ``pci-vgpu`` commands, in this process, on the embedded
defaults: the bundled configuration, a fresh SQLite database in a temporary
state directory, the bundled libvirt test host and the bundled XAPI
simulator.  Running in one process matters: the embedded hypervisors live in
memory, so the guests booted by one command are there for the next.

For each host it shows the inventory, the pools, a flavor that does not fit
and why, one that does and what it would use, boots guests on the right NUMA
nodes, shows the pools shrinking and a capacity failure, deletes everything
and checks that the pools are back to where they started.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import tempfile
import typing as ty

from pci_vgpu import exception
from pci_vgpu.cli import config as cli_config

POOL_VIEW = ["-c", "address", "-c", "numa_node", "-c", "vgpu_type", "-c", "vgpu_names",
             "-c", "free", "-c", "used"]
INVENTORY_VIEW = ["-c", "dev_id", "-c", "address", "-c", "numa_node", "-c", "vgpu_types",
                  "-c", "status"]
EXPLAIN_VIEW = ["-c", "pool", "-c", "free", "-c", "verdict", "-c", "detail"]


class DemoStepFailed(exception.PciVgpuException):
    msg_fmt = ("Demo step 'pci-vgpu %(command)s' exited %(rc)d, expected %(expected)d: "
               "%(output)s")


@dataclasses.dataclass(frozen=True)
class Step:
    """One command of the walk-through and what it should show."""

    say: str
    argv: list[str]
    expect_rc: int = 0


def libvirt_steps() -> list[Step]:
    conn = ["--connection", "libvirt"]
    return [
        Step("The libvirt test host: a V100 on NUMA node 0, a T4 on node 1 (its NIC is "
             "not listed: [pci] device_spec lets only NVIDIA devices through).",
             ["host", "inventory"] + INVENTORY_VIEW + conn),
        Step("The configuration checked against it (the k2 aliases are for XenServer).",
             ["config", "check"] + conn),
        Step("Pools by vGPU type and NUMA node: what the scheduler sees.",
             ["pool", "list"] + POOL_VIEW + conn),
        Step("v100-medium (numa_policy required) for a guest on node 1: the V100 is on "
             "node 0, so the NUMA rule rejects its pool.",
             ["flavor", "explain", "v100-medium", "--numa-node", "1"] + EXPLAIN_VIEW + conn,
             expect_rc=1),
        Step("t4-small fits, and explain shows the vGPU a claim would create.",
             ["flavor", "explain", "t4-small"] + EXPLAIN_VIEW + conn),
        Step("Boot a guest with a T4-1B vGPU: it is placed on the T4's node, 1.",
             ["server", "create", "vm-t4", "--flavor", "t4-small"] + conn),
        Step("Boot a guest bound to node 0 with a V100-2Q vGPU.",
             ["server", "create", "vm-v100", "--flavor", "v100-medium",
              "--numa-node", "0"] + conn),
        Step("Guests, their vGPUs and NUMA nodes.", ["server", "list"] + conn),
        Step("The pools shrank; the other types of each GPU are locked (one type per GPU).",
             ["pool", "list"] + POOL_VIEW + conn),
        Step("Two T4-16Q do not fit (the T4 is busy with T4-1B): nothing is left behind.",
             ["server", "create", "vm-big", "--flavor", "t4-16q-x2"] + conn, expect_rc=1),
        Step("Delete the guests: vGPUs removed, devices freed.",
             ["server", "delete", "vm-t4", "vm-v100"] + conn),
        Step("Pools are back.", ["pool", "list"] + POOL_VIEW + conn),
    ]


def xenserver_steps() -> list[Step]:
    conn = ["--connection", "xenserver"]
    return [
        Step("The XAPI simulator: two GRID K2 boards, four pGPUs; [xenserver] "
             "pci_numa_nodes puts board A on NUMA node 0, board B on node 1.",
             ["host", "inventory"] + INVENTORY_VIEW + conn),
        Step("Pools of the K2 pGPUs.", ["pool", "list"] + POOL_VIEW + conn),
        Step("Five K280Q do not fit: each pGPU hosts one.",
             ["flavor", "explain", "k2-k280q-x5", "-c", "pool", "-c", "verdict",
              "-c", "detail"] + conn, expect_rc=1),
        Step("k2-medium fits.", ["flavor", "explain", "k2-medium"] + EXPLAIN_VIEW + conn),
        Step("Boot two guests with a K240Q vGPU each: one anywhere (pack: the first "
             "pGPU), one bound to NUMA node 1 (board B).",
             ["server", "create", "vm-k2-a", "--flavor", "k2-medium"] + conn),
        Step("", ["server", "create", "vm-k2-b", "--flavor", "k2-medium",
                  "--numa-node", "1"] + conn),
        Step("XAPI cannot add a vGPU to a running VM: the attach is rolled back.",
             ["server", "attach", "vm-k2-a", "--flavor", "k2-medium"] + conn, expect_rc=1),
        Step("Guests and their VGPUs.", ["server", "list"] + conn),
        Step("The pools shrank.", ["pool", "list"] + POOL_VIEW + conn),
        Step("Delete the guests.", ["server", "delete", "vm-k2-a", "vm-k2-b"] + conn),
        Step("Pools are back.", ["pool", "list"] + POOL_VIEW + conn),
    ]


class Demo:
    """Runs the steps with a shared state directory and output stream."""

    def __init__(self, out: ty.TextIO, state_dir: str) -> None:
        self.out = out
        self.conf_file = os.path.join(state_dir, "demo.conf")
        with open(self.conf_file, "w", encoding="utf-8") as handle:
            handle.write("[host]\nstate_dir = %s\n" % state_dir)

    def _argv(self, argv: list[str]) -> list[str]:
        return ["--config-file", cli_config.BUNDLED_DEFAULTS,
                "--config-file", self.conf_file] + argv

    def run_quiet(self, argv: list[str]) -> tuple[int, str]:
        """Run a command, capturing its output (for checks, not shown)."""
        from pci_vgpu.cli import app

        runner = app.PciVgpuApp()
        runner.stdout, runner.stderr = io.StringIO(), io.StringIO()
        rc = int(runner.run(self._argv(argv)))
        return rc, runner.stdout.getvalue() + runner.stderr.getvalue()

    def run_step(self, step: Step) -> None:
        """Show one step; raise DemoStepFailed on an unexpected exit code."""
        if step.say:
            self.out.write("\n# %s\n" % step.say)
        self.out.write("$ pci-vgpu %s\n" % " ".join(step.argv))
        rc, output = self.run_quiet(step.argv)
        self.out.write(output)
        if rc != step.expect_rc:
            raise DemoStepFailed(command=" ".join(step.argv), rc=rc,
                                 expected=step.expect_rc, output=output.strip()[-300:])

    def pools(self, driver: str) -> ty.Any:
        rc, output = self.run_quiet(["pool", "list", "-f", "json", "--connection", driver])
        if rc:
            raise DemoStepFailed(command="pool list", rc=rc, expected=0, output=output)
        return json.loads(output)

    def walk(self, title: str, driver: str, steps: list[Step]) -> bool:
        """Run ``steps``; return whether the pools ended as they started."""
        self.out.write("\n==== %s ====\n" % title)
        self.run_step(steps[0])
        before = self.pools(driver)
        for step in steps[1:]:
            self.run_step(step)
        restored = bool(self.pools(driver) == before)
        self.out.write("\npools restored on %s: %s\n" % (driver, "yes" if restored else "NO"))
        return restored


def _close_embedded() -> None:
    """Stop the embedded hosts and close the database this run opened."""
    from pci_vgpu.cli import connection
    from pci_vgpu.cli import wiring

    connection.close_all()
    wiring.close_all()


def run(out: ty.TextIO, state_dir: str | None = None) -> int:
    """The whole walk-through; 0 when every step behaved and pools came back.

    :raises: DemoStepFailed naming the step that misbehaved.
    """
    own_dir = state_dir is None
    directory = tempfile.mkdtemp(prefix="pci-vgpu-demo-") if own_dir else str(state_dir)
    os.makedirs(directory, exist_ok=True)
    try:
        demo = Demo(out, directory)
        ok = demo.walk("libvirt: bundled test host", "libvirt", libvirt_steps())
        ok = demo.walk("XenServer: bundled XAPI simulator", "xenserver",
                       xenserver_steps()) and ok
    finally:
        _close_embedded()
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)
    out.write("\ndemo %s\n" % ("finished: every pool restored" if ok else "FAILED"))
    return 0 if ok else 1
