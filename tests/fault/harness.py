"""The fault suite's tools: a node under test, its commands, its checks.

A :class:`Node` is one compute node: a state directory (the embedded
libvirt host and XAPI simulator keep their state there), one database, one
configuration file.  Its commands are real ``pci-vgpu`` processes forked by
the :class:`Zygote`; :meth:`Node.kill_at` arms the fault hook
(``PCI_VGPU_FAULT``, :mod:`pci_vgpu.fault`) so a command SIGKILLs itself at
a named point, :meth:`Node.kill_after` sends SIGKILL after a delay.

:func:`consistency_problems` is the verdict after ``host reconcile
--apply``: read by direct SQL from the database and from the embedded host
as a fresh process would see it, it lists every leaked claim, orphan or
missing vGPU, guest without a server (or the reverse), server whose guest
uses other devices than it holds, and pool whose free count differs from
what the host can still create.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import typing as ty

import sqlalchemy as sa
from oslo_config import cfg

from pci_vgpu import conf as pci_conf
from pci_vgpu import devspec
from pci_vgpu.cli import config
from pci_vgpu.cli import wiring
from pci_vgpu.virt.libvirt import driver as libvirt_driver
from pci_vgpu.virt.xenserver import driver as xen_driver

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Zygote:
    """The launcher process (:mod:`tests.fault.zygote`)."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("PCI_VGPU_FAULT", None)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fault.zygote"], cwd=str(ROOT), env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _ask(self, request: dict[str, ty.Any]) -> dict[str, int]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        return ty.cast(dict[str, int], json.loads(self._proc.stdout.readline()))

    def start(self, argv: list[str], env: dict[str, str], out: str) -> int:
        return self._ask({"run": argv, "env": env, "out": out})["pid"]

    def wait(self, pid: int) -> int:
        return self._ask({"wait": pid})["status"]

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(timeout=30)


@dataclasses.dataclass
class Result:
    status: int
    output: str

    @property
    def killed(self) -> bool:
        return self.status == -signal.SIGKILL


class Node:
    """One compute node: state directory, database, configuration."""

    def __init__(self, tmp: pathlib.Path, db_url: str, zygote: Zygote | None = None) -> None:
        self.tmp = tmp
        self.db_url = db_url
        self.zygote = zygote
        self.conf_path = tmp / "node.conf"
        self.conf_path.write_text(
            "[host]\nstate_dir = %s\nhostname = fault-node\n[database]\nconnection = %s\n"
            % (tmp / "state", db_url))
        self.argv = ["--config-file", config.BUNDLED_DEFAULTS,
                     "--config-file", str(self.conf_path)]
        self._runs = 0

    def _start(self, argv: ty.Sequence[str], fault: str | None) -> tuple[int, str]:
        self._runs += 1
        out = str(self.tmp / ("run-%d.out" % self._runs))
        env = {"PCI_VGPU_FAULT": fault} if fault else {}
        assert self.zygote is not None, "this node runs no forked commands"
        return self.zygote.start(self.argv + list(argv), env, out), out

    def _finish(self, pid: int, out: str) -> Result:
        assert self.zygote is not None
        status = self.zygote.wait(pid)
        with open(out) as handle:
            output = handle.read()
        os.unlink(out)
        return Result(status, output)

    def run(self, *argv: str) -> Result:
        """Run a command to its end."""
        return self._finish(*self._start(argv, None))

    def json(self, *argv: str) -> ty.Any:
        result = self.run(*argv, "-f", "json")
        assert result.status in (0, 1), result
        return json.loads(result.output[result.output.index("["):])

    def kill_at(self, point: str, *argv: str) -> Result:
        """Run a command that SIGKILLs itself at fault point ``point``."""
        return self._finish(*self._start(argv, point))

    def kill_after(self, delay: float, *argv: str) -> Result:
        """Run a command and SIGKILL it after ``delay`` seconds."""
        pid, out = self._start(argv, None)
        time.sleep(delay)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it finished first (a zombie until waited for)
        return self._finish(pid, out)

    # -- reading the node as a fresh process would ---------------------------
    def conf(self) -> cfg.ConfigOpts:
        opts = cfg.ConfigOpts()
        pci_conf.register_opts(opts)
        return config.load([config.BUNDLED_DEFAULTS, str(self.conf_path)], conf=opts)

    def driver(self, name: str, opts: cfg.ConfigOpts) -> ty.Any:
        spec = devspec.Whitelist(opts.pci.device_spec)
        if name == "libvirt":
            return libvirt_driver.LibvirtDriver(conf=opts, dev_filter=spec)
        return xen_driver.XenServerDriver(conf=opts, dev_filter=spec)


@dataclasses.dataclass(frozen=True)
class HostView:
    """What the embedded host holds, read through its driver."""

    guests: dict[str, ty.Any]
    vgpus: set[str]
    available: dict[tuple[str, str], int]


def read_host(node: Node, driver_name: str, opts: cfg.ConfigOpts) -> HostView:
    drv = node.driver(driver_name, opts)
    try:
        guests = {g.uuid: g for g in drv.list_guests()}
        vgpus = {str(v.mdev_uuid or v.parent_addr) for v in drv.list_vgpus()}
        available = {(d["address"], t): int(e["available"])
                     for d in drv.get_pci_passthrough_devices() if d.get("address")
                     for t, e in (d.get("vgpu_types") or {}).items()}
    finally:
        drv.close()
    return HostView(guests, vgpus, available)


#: The rows of one node, by direct SQL (compute node by its name).
_ROWS = sa.text(
    "SELECT d.status, d.instance_uuid, d.mdev_uuid, d.address, d.dev_type, d.parent_addr, "
    "d.extra_info FROM pci_devices d JOIN compute_nodes n ON d.compute_node_id = n.id "
    "WHERE n.hypervisor_hostname = :node AND n.deleted = 0 AND d.deleted = 0")
_INSTANCES = sa.text(
    "SELECT i.uuid, i.name, i.status FROM instances i JOIN compute_nodes n "
    "ON i.compute_node_id = n.id WHERE n.hypervisor_hostname = :node AND n.deleted = 0")


def read_database(url: str, node_name: str) -> tuple[list[ty.Any], list[ty.Any]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = list(conn.execute(_ROWS, {"node": node_name}))
            instances = list(conn.execute(_INSTANCES, {"node": node_name}))
    finally:
        engine.dispose()
    return rows, instances


def _vgpu_type(row: ty.Any) -> str | None:
    extra = json.loads(row.extra_info or "{}")
    return extra.get("vgpu_type") or extra.get("mdev_type")


def consistency_problems(node: Node, driver_name: str) -> list[str]:
    """Everything that is not consistent on one (node, driver); [] when all is."""
    opts = node.conf()
    name = wiring.node_name(opts, driver_name)
    rows, instances = read_database(node.db_url, name)
    host = read_host(node, driver_name, opts)
    problems = _claim_problems(rows, instances, host)
    problems += _capacity_problems(node, driver_name, opts, rows, host,
                                   _parked_gpus(rows, instances, host))
    return problems


def _parked_gpus(rows: list[ty.Any], instances: list[ty.Any], host: HostView) -> set[str]:
    """GPUs holding vGPUs of stopped guests: not comparable with XAPI.

    XAPI places a VM's vGPUs on a pGPU only while it runs, so a halted VM's
    vGPU uses no pGPU capacity there, while the tracker keeps the server's
    claim (as Nova keeps a stopped instance's PCI devices).  A delete killed
    after stopping the VM leaves such a server.
    """
    stopped = {uuid for uuid, guest in host.guests.items() if not guest.running}
    names = {i.uuid: i.name for i in instances}
    stopped_names = {names.get(u) for u in stopped}
    return {str(r.parent_addr) for r in rows if r.status == "allocated"
            and names.get(r.instance_uuid) in stopped_names and r.parent_addr}


def _servers(instances: list[ty.Any], host: HostView) -> tuple[dict[str, ty.Any], dict[str, str]]:
    """(server uuid -> its record, record uuid -> its server's uuid).

    A hot-plug is an instance record of its own with the server's name
    (:mod:`pci_vgpu.service_tracker`); the server is the record of that name
    whose UUID is a guest.  A name with no guest is its own server (a problem).
    """
    by_name: dict[str, list[ty.Any]] = {}
    for inst in instances:
        by_name.setdefault(str(inst.name), []).append(inst)
    servers: dict[str, ty.Any] = {}
    owner: dict[str, str] = {}
    for records in by_name.values():
        main = next((r for r in records if r.uuid in host.guests), records[0])
        servers[main.uuid] = main
        owner.update({r.uuid: main.uuid for r in records})
    return servers, owner


def _claim_problems(rows: list[ty.Any], instances: list[ty.Any], host: HostView) -> list[str]:
    problems = ["claimed row %s/%s of %s" % (r.mdev_uuid, r.address, r.instance_uuid)
                for r in rows if r.status == "claimed"]
    problems += ["record %s of %s is %s" % (i.uuid, i.name, i.status)
                 for i in instances if i.status != "allocated"]
    servers, owner = _servers(instances, host)
    held: dict[str, set[str]] = {}
    for row in rows:
        if row.status == "allocated":
            server = owner.get(row.instance_uuid, "unknown record %s" % row.instance_uuid)
            held.setdefault(server, set()).add(str(row.mdev_uuid or row.address))
    for uuid, inst in servers.items():
        guest = host.guests.get(uuid)
        # A stopped guest is a server that keeps its devices (a delete killed
        # after stopping it, a host reboot): consistent, deleted again at will.
        if guest is None:
            problems.append("server %s has no guest" % inst.name)
        elif held.get(uuid, set()) != set(guest.mdev_uuids) | set(guest.pci_addresses):
            problems.append("server %s holds %s, its guest uses %s" % (
                inst.name, sorted(held.get(uuid, ())), guest))
    problems += ["rows held by %s" % u for u in held if u not in servers]
    problems += ["guest %s has no server" % g for g in host.guests if g not in servers]
    vgpu_rows = {str(r.mdev_uuid or r.address) for r in rows
                 if r.status == "allocated" and (r.mdev_uuid or _vgpu_type(r))}
    problems += ["orphan vGPU %s" % v for v in sorted(host.vgpus - vgpu_rows)]
    problems += ["missing vGPU %s" % v for v in sorted(vgpu_rows - host.vgpus)]
    return problems


def _capacity_problems(node: Node, driver_name: str, opts: cfg.ConfigOpts,
                       rows: list[ty.Any], host: HostView, parked: set[str]) -> list[str]:
    """Each vGPU pool offers what the host can create plus its spare vGPUs
    (GPUs in ``parked`` aside, see :func:`_parked_gpus`)."""
    spare: dict[tuple[str, str], int] = {}
    for row in rows:
        if row.dev_type == "mdev" and row.status == "available":
            key = (str(row.parent_addr), str(_vgpu_type(row)))
            spare[key] = spare.get(key, 0) + 1
    pools = list(wiring.tracker(driver_name, opts).stats())
    problems = []
    for pool in pools:
        if not pool.get("vgpu_type") or (driver_name == "xenserver"
                                          and pool["address"] in parked):
            continue
        key = (pool["address"], pool["vgpu_type"])
        expected = host.available.get(key, 0) + spare.get(key, 0)
        if pool["count"] != expected:
            problems.append("pool %s type %s offers %d, the host has %d" % (
                key[0], key[1], pool["count"], expected))
    return problems
