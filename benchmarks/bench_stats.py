"""pci_vgpu's PciDeviceStats against Nova 34.0.0's, on equivalent hosts.

Host of N assignable devices (N = 8, 64, 512, 4096 by default), 2 NUMA nodes:

* pci_vgpu: N/2 vGPU slots on one-type GPUs (10de, 4 product ids; each GPU
  offers type A x16 and type B x8, so a GPU holds up to 16 slots; N=8 uses
  GPUs of 4), plus N/2 plain SR-IOV VFs (1002:692f, 16 per PF, PFs not
  tracked); GPUs and PFs alternate between NUMA 0 and 1.
* Nova: the same host expressed as plain VFs, which is how Nova 34 can
  offer it: every GPU becomes a PF with one VF per slot (same vendor,
  product, NUMA node), plus the same plain VFs.  Nova runs in its own
  virtual environment (``pip install nova==34.0.0``, cached under
  ``~/.cache/pci-vgpu/bench-nova-venv``), in a subprocess.

Measured (median of repeats, each repeat = K calls):

* build: create the stats object and ``add_device`` every device;
* support_requests scheduler side: on the stats rebuilt from
  ``to_device_pools_obj()`` (counts, no devices) -- the headline;
* support_requests compute side: on the stats built from devices;
* consume_requests + free: pci_vgpu as the tracker does it (consume, mark
  claimed + ``update_device``, mark free + ``update_device``, or
  ``remove_device`` for a new mdev); Nova: ``consume_requests`` then
  ``add_device`` of each device back (what its tracker does on free).

The requests in every call are two: one vGPU of type A on product 0 (Nova:
one VF of the equivalent product) and one plain VF, legacy NUMA policy,
no guest NUMA cells.

Usage::

    .venv/bin/python benchmarks/bench_stats.py [--quick] [--sizes 8 64 ...]

The last line is machine-readable::

    RATIO support_requests pci_vgpu/nova=<x.xx> consume_requests pci_vgpu/nova=<y.yy>

(ratios at the largest size; below 1 means pci_vgpu is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
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


# -- inventories ----------------------------------------------------------------


def _addr(group: int, fn: int) -> str:
    """A unique address: domain/bus from the group, slot.function from fn."""
    return "%04x:%02x:%02x.%d" % (group // 200, group % 200 + 1,
                                  fn // 8, fn % 8)


def _dev(address: str, vendor: str, product: str, numa: int,
         dev_type: str, parent: str | None) -> dict[str, ty.Any]:
    return {"address": address, "vendor_id": vendor, "product_id": product,
            "numa_node": numa, "dev_type": dev_type, "parent_addr": parent,
            "label": "label_%s_%s" % (vendor, product),
            "dev_id": "pci_" + address.replace(":", "_").replace(".", "_")}


def inventories(n: int) -> tuple[list[dict[str, ty.Any]],
                                 list[dict[str, ty.Any]]]:
    """(pci_vgpu devices, Nova devices) for a host of ``n`` assignable."""
    ours: list[dict[str, ty.Any]] = []
    nova: list[dict[str, ty.Any]] = []
    slots = n // 2
    per_gpu = min(16, slots)
    group = 0
    for g in range(slots // per_gpu):
        product, numa = GPU_PRODUCTS[g % 4], group % 2
        gpu = _dev(_addr(group, 0), "10de", product, numa, "type-PCI", None)
        gpu["vgpu_types"] = json.dumps({
            "A": {"name": "A", "max": per_gpu, "available": per_gpu},
            "B": {"name": "B", "max": max(1, per_gpu // 2),
                  "available": max(1, per_gpu // 2)}})
        gpu["vgpu_sharing"] = "one-type"
        ours.append(gpu)
        nova += [_dev(_addr(group, f + 1), "10de", product, numa, "type-VF",
                      gpu["address"]) for f in range(per_gpu)]
        group += 1
    left = n - slots
    while left > 0:
        pf, numa, k = _addr(group, 0), group % 2, min(16, left)
        vfs = [_dev(_addr(group, f + 1), "1002", VF_PRODUCT, numa, "type-VF",
                    pf) for f in range(k)]
        ours += vfs
        nova += [dict(v) for v in vfs]
        left -= k
        group += 1
    return ours, nova


# -- timing -------------------------------------------------------------------


def median_per_call(fn: ty.Callable[[], object], k: int,
                    repeats: int) -> float:
    """Median over ``repeats`` of the mean seconds per call of ``k`` calls."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(k):
            fn()
        samples.append((time.perf_counter() - start) / k)
    return statistics.median(samples)


def bench_ours(devs: list[dict[str, ty.Any]], k: int, k_compute: int,
               repeats: int) -> dict[str, float]:
    from pci_vgpu.objects import instance_pci_requests as ipr
    from pci_vgpu.objects import pci_device
    from pci_vgpu import stats

    objs = [pci_device.PciDevice.create(None, d) for d in devs]

    def build() -> stats.PciDeviceStats:
        s = stats.PciDeviceStats()
        for o in objs:
            s.add_device(o)
        return s

    reqs = [ipr.InstancePCIRequest(
                count=1, alias_name="gpu", numa_policy="legacy",
                request_id=str(uuid.uuid4()),
                spec=[{"vendor_id": "10de", "product_id": GPU_PRODUCTS[0],
                       "vgpu_types": '["A"]'}]),
            ipr.InstancePCIRequest(
                count=1, alias_name="vf", numa_policy="legacy",
                request_id=str(uuid.uuid4()),
                spec=[{"vendor_id": "1002", "product_id": VF_PRODUCT}])]
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
                                     k, repeats),
            "compute": median_per_call(
                lambda: compute.support_requests(reqs), k_compute, repeats),
            "consume": median_per_call(round_trip, k, repeats)}


NOVA_SCRIPT = r'''
import json, statistics, sys, time, uuid, warnings
warnings.filterwarnings("ignore")
import nova.conf
from nova import objects
objects.register_all()
from nova.pci import stats, whitelist

def per_call(fn, k, repeats):
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(k):
            fn()
        out.append((time.perf_counter() - t) / k)
    return statistics.median(out)

job = json.load(open(sys.argv[1]))
wl = whitelist.Whitelist(['{"vendor_id": "10de"}', '{"vendor_id": "1002"}'])
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
assert sched.support_requests(reqs, None) and compute.support_requests(reqs, None)
result["pools"] = len(list(compute))
result["sched"] = per_call(lambda: sched.support_requests(reqs, None), k, repeats)
result["compute"] = per_call(lambda: compute.support_requests(reqs, None),
                             job["k_compute"], repeats)

def round_trip():
    for d in compute.consume_requests(reqs):
        d.request_id = None
        compute.add_device(d)

result["consume"] = per_call(round_trip, k, repeats)
print(json.dumps(result))
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


def bench_nova(python: pathlib.Path, devs: list[dict[str, ty.Any]], k: int,
               k_compute: int, repeats: int) -> dict[str, float]:
    job = {"devices": devs, "k": k, "k_compute": k_compute,
           "repeats": repeats,
           "specs": [{"vendor_id": "10de", "product_id": GPU_PRODUCTS[0]},
                     {"vendor_id": "1002", "product_id": VF_PRODUCT}]}
    with tempfile.TemporaryDirectory() as tmp:
        job_file = pathlib.Path(tmp) / "job.json"
        job_file.write_text(json.dumps(job))
        script = pathlib.Path(tmp) / "nova_bench.py"
        script.write_text(NOVA_SCRIPT)
        env = dict(os.environ, OS_NOVA_DISABLE_EVENTLET_PATCHING="1")
        out = subprocess.run([str(python), str(script), str(job_file)],
                             check=True, capture_output=True, text=True,
                             env=env, cwd=tmp)
    return ty.cast(dict[str, float], json.loads(out.stdout.splitlines()[-1]))


# -- report ---------------------------------------------------------------------


def _us(seconds: float) -> str:
    return "%.1f" % (seconds * 1e6)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="sizes 8 64 512, fewer repeats")
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--nova-venv", type=pathlib.Path, default=NOVA_VENV)
    args = parser.parse_args(argv)
    sizes = args.sizes or ([8, 64, 512] if args.quick
                           else [8, 64, 512, 4096])
    repeats = args.repeats or (3 if args.quick else 5)
    python = ensure_nova_venv(args.nova_venv)
    header = ("%6s %11s %17s %21s %21s %21s" % (
        "N", "pools p/n", "build ms p/n", "sched support us",
        "compute support us", "consume+free us"))
    print(header)
    print("%6s %11s %17s %21s %21s %21s" % ("", "", "", "p / nova (ratio)",
                                           "p / nova", "p / nova (ratio)"))
    ratios = (0.0, 0.0)
    for n in sizes:
        ours_devs, nova_devs = inventories(n)
        # Fewer calls where Nova's are slow (its compute-side check
        # deep-copies every device), so the default run stays in minutes.
        k = 200 if n <= 512 else (50 if n <= 4096 else 10)
        k_compute = 50 if n <= 512 else (5 if n <= 4096 else 1)
        reps = repeats if n <= 4096 else min(repeats, 3)
        ours = bench_ours(ours_devs, k, k_compute, reps)
        nova = bench_nova(python, nova_devs, k, k_compute, reps)
        ratios = (ours["sched"] / nova["sched"],
                  ours["consume"] / nova["consume"])
        print("%6d %11s %17s %21s %21s %21s" % (
            n, "%d/%d" % (ours["pools"], nova["pools"]),
            "%.2f/%.2f" % (ours["build"] * 1e3, nova["build"] * 1e3),
            "%s/%s (%.2f)" % (_us(ours["sched"]), _us(nova["sched"]),
                              ratios[0]),
            "%s/%s" % (_us(ours["compute"]), _us(nova["compute"])),
            "%s/%s (%.2f)" % (_us(ours["consume"]), _us(nova["consume"]),
                              ratios[1])))
        sys.stdout.flush()
    print("RATIO support_requests pci_vgpu/nova=%.2f consume_requests "
          "pci_vgpu/nova=%.2f" % ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
