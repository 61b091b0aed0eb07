"""pci_vgpu's PciDeviceStats against Nova 34.0.0's, on equivalent hosts.

Two families of hosts, each measured on both sides in one run:

* **realistic hosts** (the targets): 1, 4, 8 or 16 GPUs of one model
  (10de:1eb8), GPUs alternating between NUMA 0 and 1, each offering the
  first 1-4 of the one-type vGPU types A x16, B x8, C x4, D x2 (the T4's
  1Q/2Q/4Q/8Q shape); "with VFs" adds a NIC of 2 PFs x 8 plain SR-IOV VFs
  (8086:154c, one PF per NUMA node).  Each call asks for one vGPU of type A
  and, with VFs, one VF.
* **large hosts** of N assignable devices (N = 8, 64, 512, 4096 by
  default, as before): N/2 vGPU slots on one-type GPUs (4 product ids;
  types A x16 and B x8, so a GPU holds up to 16 slots; N=8 uses GPUs of 4)
  plus N/2 plain SR-IOV VFs (1002:692f, 16 per PF); GPUs and PFs alternate
  between NUMA 0 and 1.  Each call asks for one vGPU of type A on product 0
  and one VF.

How a vGPU host is expressed for Nova (Nova 34 has no vGPU pools): every
GPU becomes a PF, not itself tracked, with one VF per slot of the requested
type A (16), same vendor, product and NUMA node; the plain VFs are the same
devices on both sides; the request for a type-A vGPU becomes a request for
one VF of the GPU's vendor/product.  Nova runs in its own virtual
environment (``pip install nova==34.0.0``, cached under
``~/.cache/pci-vgpu/bench-nova-venv``) in ONE subprocess started once per
run that takes a job per host on stdin and times it in-process, so neither
the start-up nor the transfer is in any figure.  Each host is timed on our
side, then on Nova's, before the next host, so both see the same machine
load.

Measured (median of repeats, each repeat = K calls; per host, ``--rounds``
alternating rounds of ours then Nova's, each side keeping the least of its
rounds' medians):

* build: create the stats object and ``add_device`` every device;
* support_requests scheduler side: on the stats rebuilt from
  ``to_device_pools_obj()`` (counts, no devices) -- the headline;
* support_requests compute side: on the stats built from devices;
* consume_requests + free: pci_vgpu as the tracker does it (consume, mark
  claimed + ``update_device``, mark free + ``update_device``, or
  ``remove_device`` for a new mdev); Nova: ``consume_requests`` then
  ``add_device`` of each device back (what its tracker does on free).

Legacy NUMA policy, no guest NUMA cells.

Usage::

    .venv/bin/python benchmarks/bench_stats.py [--quick] [--sizes 8 64 ...]
        [--gpus 1 4 8 16] [--types 1 2 3 4] [--rounds 3]

The last lines are machine-readable, one per realistic host, then the
large-host line (ratios at the largest size) last; below 1 means pci_vgpu
is faster::

    RATIO_REALISTIC gpus=<g> types=<t> vfs=<yes|no> support=<x.xx> consume_free=<y.yy>
    RATIO support_requests pci_vgpu/nova=<x.xx> consume_requests pci_vgpu/nova=<y.yy>
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
import typing as ty
import uuid
import warnings

warnings.filterwarnings("ignore")  # eventlet/oslo deprecation noise

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOVA_VENV = pathlib.Path.home() / ".cache" / "pci-vgpu" / "bench-nova-venv"
GPU_PRODUCTS = ("1eb8", "1eb9", "1eba", "1ebb")
VF_PRODUCT = "692f"
NIC_VENDOR, NIC_VF_PRODUCT = "8086", "154c"
#: One-type vGPU types of the realistic GPU, largest count first.
REALISTIC_TYPES = (("A", 16), ("B", 8), ("C", 4), ("D", 2))
Device = dict[str, ty.Any]
Spec = dict[str, str]


@dataclasses.dataclass
class Host:
    """One host, as both sides see it, and the request pair to time."""

    label: str
    ours: list[Device]
    nova: list[Device]
    #: per request: (our spec, Nova's spec).
    specs: list[tuple[Spec, Spec]]
    #: calls per repeat: scheduler / consume, compute-side support.
    k: int = 200
    k_compute: int = 50
    realistic: tuple[int, int, bool] | None = None


# -- inventories ----------------------------------------------------------------


def _addr(group: int, fn: int) -> str:
    """A unique address: domain/bus from the group, slot.function from fn."""
    return "%04x:%02x:%02x.%d" % (group // 200, group % 200 + 1,
                                  fn // 8, fn % 8)


def _dev(address: str, vendor: str, product: str, numa: int,
         dev_type: str, parent: str | None) -> Device:
    return {"address": address, "vendor_id": vendor, "product_id": product,
            "numa_node": numa, "dev_type": dev_type, "parent_addr": parent,
            "label": "label_%s_%s" % (vendor, product),
            "dev_id": "pci_" + address.replace(":", "_").replace(".", "_")}


def _gpu(group: int, product: str, numa: int,
         types: ty.Sequence[tuple[str, int]]) -> Device:
    gpu = _dev(_addr(group, 0), "10de", product, numa, "type-PCI", None)
    gpu["vgpu_types"] = json.dumps({
        name: {"name": name, "max": count, "available": count}
        for name, count in types})
    gpu["vgpu_sharing"] = "one-type"
    return gpu


def _vfs_of(group: int, vendor: str, product: str, numa: int, k: int,
            parent: str) -> list[Device]:
    return [_dev(_addr(group, f + 1), vendor, product, numa, "type-VF",
                 parent) for f in range(k)]


def _vgpu_spec(product: str) -> tuple[Spec, Spec]:
    return ({"vendor_id": "10de", "product_id": product,
             "vgpu_types": '["A"]'},
            {"vendor_id": "10de", "product_id": product})


def inventories(n: int) -> tuple[list[Device], list[Device]]:
    """(pci_vgpu devices, Nova devices) for a large host of ``n``."""
    ours: list[Device] = []
    nova: list[Device] = []
    slots = n // 2
    per_gpu = min(16, slots)
    group = 0
    for g in range(slots // per_gpu):
        product, numa = GPU_PRODUCTS[g % 4], group % 2
        gpu = _gpu(group, product, numa,
                   (("A", per_gpu), ("B", max(1, per_gpu // 2))))
        ours.append(gpu)
        nova += _vfs_of(group, "10de", product, numa, per_gpu,
                        gpu["address"])
        group += 1
    left = n - slots
    while left > 0:
        k = min(16, left)
        vfs = _vfs_of(group, "1002", VF_PRODUCT, group % 2, k,
                      _addr(group, 0))
        ours += vfs
        nova += [dict(v) for v in vfs]
        left -= k
        group += 1
    return ours, nova


def large_host(n: int) -> Host:
    ours, nova = inventories(n)
    vf: Spec = {"vendor_id": "1002", "product_id": VF_PRODUCT}
    # Fewer calls where Nova's are slow (its compute-side check
    # deep-copies every device), so the default run stays in minutes.
    return Host("N=%d" % n, ours, nova,
                [_vgpu_spec(GPU_PRODUCTS[0]), (vf, dict(vf))],
                k=200 if n <= 512 else (50 if n <= 4096 else 10),
                k_compute=50 if n <= 512 else (5 if n <= 4096 else 1))


def realistic_host(gpus: int, types: int, vfs: bool) -> Host:
    """``gpus`` T4-like GPUs with ``types`` vGPU types, and maybe a NIC."""
    ours: list[Device] = []
    nova: list[Device] = []
    offered = REALISTIC_TYPES[:types]
    slots = REALISTIC_TYPES[0][1]
    for g in range(gpus):
        gpu = _gpu(g, GPU_PRODUCTS[0], g % 2, offered)
        ours.append(gpu)
        nova += _vfs_of(g, "10de", GPU_PRODUCTS[0], g % 2, slots,
                        gpu["address"])
    specs = [_vgpu_spec(GPU_PRODUCTS[0])]
    if vfs:
        for numa in (0, 1):
            group = 100 + numa
            nic = _vfs_of(group, NIC_VENDOR, NIC_VF_PRODUCT, numa, 8,
                          _addr(group, 0))
            ours += nic
            nova += [dict(v) for v in nic]
        vf: Spec = {"vendor_id": NIC_VENDOR, "product_id": NIC_VF_PRODUCT}
        specs.append((vf, dict(vf)))
    return Host("%d GPU x %d type%s%s" % (gpus, types, "s"[:types > 1],
                                          " + VFs" if vfs else ""),
                ours, nova, specs, k=500, k_compute=20,
                realistic=(gpus, types, vfs))


# -- timing -------------------------------------------------------------------


def median_per_call(fn: ty.Callable[[], object], k: int,
                    repeats: int) -> float:
    """Median over ``repeats`` of the mean seconds per call of ``k`` calls."""
    samples = []
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(k):
            fn()
        samples.append((time.process_time() - start) / k)
    return statistics.median(samples)


def bench_ours(host: Host, repeats: int) -> dict[str, float]:
    from pci_vgpu.objects import instance_pci_requests as ipr
    from pci_vgpu.objects import pci_device
    from pci_vgpu import stats

    objs = [pci_device.PciDevice.create(None, d) for d in host.ours]

    def build() -> stats.PciDeviceStats:
        s = stats.PciDeviceStats()
        for o in objs:
            s.add_device(o)
        return s

    reqs = [ipr.InstancePCIRequest(
                count=1, alias_name="a%d" % i, numa_policy="legacy",
                request_id=str(uuid.uuid4()), spec=[dict(ours)])
            for i, (ours, _) in enumerate(host.specs)]
    build_s = median_per_call(build, 1, repeats)
    compute = build()
    sched = stats.PciDeviceStats(stats=compute.to_device_pools_obj())
    assert sched.support_requests(reqs) and compute.support_requests(reqs)

    def round_trip() -> None:
        got = compute.consume_requests(reqs)
        for d in got:
            d.status = "claimed"
            compute.update_device(d)
        for d in got:
            d.status, d.request_id = "available", None
            if d.dev_type == "mdev":
                compute.remove_device(d)
            else:
                compute.update_device(d)

    return {"pools": len(list(compute)), "build": build_s,
            "sched": median_per_call(lambda: sched.support_requests(reqs),
                                     host.k, repeats),
            "compute": median_per_call(
                lambda: compute.support_requests(reqs), host.k_compute,
                repeats),
            "consume": median_per_call(round_trip, host.k, repeats)}


#: Runs in Nova's venv: one JSON job per stdin line, one JSON result per
#: stdout line, so the interpreter and Nova are loaded once per run.
NOVA_WORKER = r'''
import json, statistics, sys, time, uuid, warnings
warnings.filterwarnings("ignore")
import nova.conf
from nova import objects
objects.register_all()
from nova.pci import stats, whitelist

def per_call(fn, k, repeats):
    out = []
    for _ in range(repeats):
        t = time.process_time()
        for _ in range(k):
            fn()
        out.append((time.process_time() - t) / k)
    return statistics.median(out)

def run(job):
    wl = whitelist.Whitelist(
        [json.dumps({"vendor_id": v}) for v in job["vendors"]])
    devs = [objects.PciDevice.create(None, d) for d in job["devices"]]
    reqs = [objects.InstancePCIRequest(
                count=1, spec=[s], alias_name="a", numa_policy="legacy",
                request_id=str(uuid.uuid4())) for s in job["specs"]]
    k, repeats = job["k"], job["repeats"]

    def build():
        s = stats.PciDeviceStats(None, dev_filter=wl)
        for d in devs:
            s.add_device(d)
        return s

    result = {"build": per_call(build, 1, repeats)}
    compute = build()
    sched = stats.PciDeviceStats(None, stats=compute.to_device_pools_obj(),
                                 dev_filter=wl)
    assert sched.support_requests(reqs, None)
    assert compute.support_requests(reqs, None)
    result["pools"] = len(list(compute))
    result["sched"] = per_call(lambda: sched.support_requests(reqs, None),
                               k, repeats)
    result["compute"] = per_call(
        lambda: compute.support_requests(reqs, None), job["k_compute"],
        repeats)

    def round_trip():
        for d in compute.consume_requests(reqs):
            d.request_id = None
            compute.add_device(d)

    result["consume"] = per_call(round_trip, k, repeats)
    return result

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    print(json.dumps(run(json.loads(line))), flush=True)
'''


def ensure_nova_venv(path: pathlib.Path) -> pathlib.Path:
    """Python of a venv with nova==34.0.0 from PyPI, created once."""
    python = path / "bin" / "python"
    marker = path / ".nova-34.0.0-ok"
    if marker.exists():
        return python
    print("Installing nova==34.0.0 into %s (about a minute, once)..." % path,
          file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q",
                    "nova==34.0.0"], check=True)
    marker.write_text("ok\n")
    return python


class NovaWorker:
    """The one Nova subprocess of a run: a job in, its timings out."""

    def __init__(self, python: pathlib.Path) -> None:
        env = dict(os.environ, OS_NOVA_DISABLE_EVENTLET_PATCHING="1")
        self._proc = subprocess.Popen(
            [str(python), "-c", NOVA_WORKER], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=env, cwd="/")
        self._read()  # Nova imported: the start-up is over

    def _read(self) -> dict[str, float]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the Nova benchmark worker exited (rc=%s)"
                               % self._proc.wait())
        return ty.cast(dict[str, float], json.loads(line))

    def bench(self, host: Host, repeats: int) -> dict[str, float]:
        job = {"devices": host.nova, "k": host.k, "k_compute": host.k_compute,
               "repeats": repeats, "specs": [n for _, n in host.specs],
               "vendors": sorted({d["vendor_id"] for d in host.nova})}
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(job) + "\n")
        self._proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait()


# -- report ---------------------------------------------------------------------

METRICS = (("build", "build"), ("sched", "sched support"),
           ("compute", "compute support"), ("consume", "consume+free"))


def _cell(ours: float, nova: float) -> str:
    return "%7.1f %8.1f %5.2f" % (ours * 1e6, nova * 1e6, ours / nova)


def _print_table(title: str, rows: list[tuple[Host, dict[str, float],
                                              dict[str, float]]]) -> None:
    print(title)
    print("%-24s %9s" % ("", "pools") + "".join(
        " | %-22s" % name for _, name in METRICS))
    print("%-24s %9s" % ("host", "p/n") + " | ours us  nova us ratio" * 4)
    for host, ours, nova in rows:
        print("%-24s %9s" % (host.label, "%d/%d" % (ours["pools"],
                                                    nova["pools"])) +
              "".join(" | " + _cell(ours[m], nova[m]) for m, _ in METRICS))
    print()
    sys.stdout.flush()


def measure(host: Host, nova: NovaWorker, repeats: int, rounds: int
            ) -> tuple[dict[str, float], dict[str, float]]:
    """(ours, Nova's) figures of ``host``: ``rounds`` alternating rounds
    (ours, then Nova's), each figure the least of its rounds' medians.

    Both sides are treated alike; a burst of the shared machine's other
    jobs during one side's round then no longer decides a cell (single
    cells moved by up to 2x from run to run with one round).
    """
    ours: dict[str, float] = {}
    theirs: dict[str, float] = {}
    for _ in range(rounds):
        for mine, got in ((ours, bench_ours(host, repeats)),
                          (theirs, nova.bench(host, repeats))):
            for name, value in got.items():
                mine[name] = min(mine.get(name, value), value)
    return ours, theirs


def _load() -> str:
    return "%.2f %.2f %.2f" % os.getloadavg()


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(
            "%r: allowed: an integer >= 1" % value)
    return number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="large sizes 8 64 512, fewer repeats")
    parser.add_argument("--sizes", type=int, nargs="*",
                        help="large host sizes (none: skip them)")
    parser.add_argument("--gpus", type=int, nargs="*", default=[1, 4, 8, 16],
                        help="realistic host GPU counts (none: skip them)")
    parser.add_argument("--types", type=int, nargs="+", default=[1, 2, 3, 4],
                        choices=range(1, len(REALISTIC_TYPES) + 1))
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--rounds", type=_positive, default=3,
                        help="alternating rounds per host, least median "
                             "kept (default 3; 1 from 4096 devices)")
    parser.add_argument("--nova-venv", type=pathlib.Path, default=NOVA_VENV)
    args = parser.parse_args(argv)
    sizes = args.sizes if args.sizes is not None else (
        [8, 64, 512] if args.quick else [8, 64, 512, 4096])
    repeats = args.repeats or (3 if args.quick else 5)
    nova = NovaWorker(ensure_nova_venv(args.nova_venv))
    print("load average at start: %s" % _load())
    lines: list[str] = []
    try:
        for gpus in args.gpus:
            rows = []
            for types in args.types:
                for vfs in (False, True):
                    host = realistic_host(gpus, types, vfs)
                    rows.append((host, *measure(host, nova, repeats,
                                                args.rounds)))
            _print_table("Realistic host: %d GPU(s) (load %s)" % (
                gpus, _load()), rows)
            for host, ours, theirs in rows:
                g, t, v = host.realistic or (0, 0, False)
                lines.append(
                    "RATIO_REALISTIC gpus=%d types=%d vfs=%s support=%.2f "
                    "consume_free=%.2f" % (
                        g, t, "yes" if v else "no",
                        ours["sched"] / theirs["sched"],
                        ours["consume"] / theirs["consume"]))
        ratios = None
        rows = []
        for n in sizes:
            host = large_host(n)
            reps = repeats if n <= 4096 else min(repeats, 3)
            ours, theirs = measure(host, nova, reps,
                                   args.rounds if n < 4096 else 1)
            rows.append((host, ours, theirs))
            ratios = (ours["sched"] / rows[-1][2]["sched"],
                      ours["consume"] / rows[-1][2]["consume"])
        if rows:
            _print_table("Large hosts (load %s)" % _load(), rows)
    finally:
        nova.close()
    print("load average at end: %s" % _load())
    for line in lines:
        print(line)
    if ratios is not None:
        print("RATIO support_requests pci_vgpu/nova=%.2f consume_requests "
              "pci_vgpu/nova=%.2f" % ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
