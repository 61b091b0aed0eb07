"""Hypothesis properties of PciDeviceStats over random inventories.

A test-side ledger plays the tracker: it claims what consume_requests
returns and frees it later, and the properties are checked against that
ledger and the public pool dicts, not against the stats' internals:

1. never more vGPUs than capacity, per GPU and per type;
2. type lock and whole-GPU exclusivity never violated;
3. support_requests is True exactly when consume_requests succeeds on the
   same state, and the scheduler-side view (rebuilt from the serialised
   pools) gives the same answer;
4. freeing everything restores the initial pools exactly (and the
   incremental state always equals a rebuild from the devices);
5. pack/spread pick the fullest/emptiest GPU that can serve.
"""

from __future__ import annotations

import fractions
import typing as ty

import hypothesis
from hypothesis import strategies as st

from pci_vgpu import pool_errors
from pci_vgpu import stats
from tests.fixtures import inventory as inv

OWNER = "8c6c3e34-6a0a-4b5c-9a51-8d3c2b1f0a11"
TYPES = ("a", "b", "c")
VF_TYPES = ("x", "y")
TOPOLOGY = {"cells": [{"id": 0, "socket": 0}, {"id": 1, "socket": 1}]}


@st.composite
def inventories(draw: ty.Any) -> list[dict[str, ty.Any]]:
    devs = []
    for i in range(draw(st.integers(1, 4))):
        sizes: dict[str, int] = {}
        types = draw(st.dictionaries(st.sampled_from(TYPES),
                                     st.integers(1, 4), min_size=1))
        sharing = draw(st.sampled_from(["one-type", "budget", "sized"]))
        if sharing == "sized":  # a budget of sizes that need not divide it
            sharing, sizes = "budget", {t: draw(st.integers(1, 6))
                                        for t in types}
            total = draw(st.integers(max(sizes.values()), 16))
            types = {t: total // n for t, n in sizes.items()}
        gpu = inv.create_gpu("0000:%02x:00.0" % (0x41 + i),
                             draw(st.sampled_from([0, 1, None])), types,
                             sharing)
        if sizes:
            for t, n in sizes.items():
                gpu["vgpu_types"][t]["size"] = {"mem": n}
            gpu["vgpu_capacity"] = {"mem": total}
        devs.append(gpu)
        if draw(st.booleans()):  # one existing free mdev
            devs.append(inv.create_mdev(gpu, draw(st.sampled_from(
                sorted(types)))))
    for f in range(draw(st.integers(0, 3))):
        devs.append(inv.create_vf("0000:42:00.%d" % (f + 1), "0000:42:00.0",
                                  draw(st.sampled_from([0, 1]))))
    if draw(st.booleans()):  # a tracked PF with VFs: PF/VF exclusivity
        devs.append(inv.create_pf("0000:60:00.0", 1))
        devs += [inv.create_vf("0000:60:00.%d" % (f + 1), "0000:60:00.0", 1)
                 for f in range(draw(st.integers(1, 2)))]
    for f in range(draw(st.integers(0, 3))):
        devs.append(inv.create_nvidia_vf("0000:c1:00.%d" % (f + 4),
                                         "0000:c1:00.0", 1, VF_TYPES))
    return devs


def _request(draw: ty.Any) -> ty.Any:
    policy = draw(st.sampled_from([None, "legacy", "required", "preferred",
                                   "socket"]))
    kind = draw(st.sampled_from(["vgpu", "vgpu", "vf-vgpu", "gpu", "vf",
                                 "pf", "nvidia-vf"]))
    count = draw(st.integers(1, 3))
    if kind == "vgpu":
        types = draw(st.sets(st.sampled_from(TYPES), min_size=1))
        return inv.request(count, types, policy)
    if kind == "vf-vgpu":
        return inv.request(count, draw(st.sets(st.sampled_from(VF_TYPES),
                                               min_size=1)), policy)
    if kind == "pf":
        return inv.request(1, None, policy, vendor_id=inv.AMD,
                           product_id=inv.MXGPU_PF, dev_type="type-PF")
    ids = {"gpu": (inv.NVIDIA, inv.T4), "vf": (inv.AMD, inv.MXGPU_VF),
           "nvidia-vf": (inv.NVIDIA, inv.L40_VF)}[kind]
    return inv.request(count, None, policy, vendor_id=ids[0],
                       product_id=ids[1])


@st.composite
def operations(draw: ty.Any) -> list[tuple[str, ty.Any, ty.Any]]:
    ops = []
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.integers(0, 3)) == 0:
            ops.append(("free", draw(st.integers(0, 100)), None))
        else:
            reqs = [_request(draw) for _ in range(draw(st.integers(1, 3)))]
            cells = draw(st.sampled_from([None, [{"id": 0}], [{"id": 1}]]))
            ops.append(("consume", reqs, cells))
    return ops


class Host:
    """Stats plus the ledger the tracker would keep."""

    def __init__(self, dicts: list[dict[str, ty.Any]], policy: str) -> None:
        self.policy = policy
        self.s = stats.PciDeviceStats(numa_topology=TOPOLOGY,
                                      placement_policy=policy)
        self.devs = inv.to_devices(dicts)
        self.extra_mdevs: list[ty.Any] = []
        for d in self.devs:
            self.s.add_device(d)
        self.claims: list[list[ty.Any]] = []

    def consume(self, reqs: list[ty.Any], cells: ty.Any) -> list[ty.Any] | None:
        try:
            got = self.s.consume_requests(reqs, cells)
        except pool_errors.PciDeviceRequestFailed:
            return None
        for d in got:
            if d.dev_type == "mdev" and all(d is not x for x in self.devs):
                self.extra_mdevs.append(d)
            d.status, d.instance_uuid = "claimed", OWNER
            self.s.update_device(d)
        self.claims.append(got)
        return got

    def free(self, index: int) -> None:
        if not self.claims:
            return
        for d in self.claims.pop(index % len(self.claims)):
            d.status, d.instance_uuid, d.request_id = "available", None, None
            if any(d is x for x in self.extra_mdevs):
                self.extra_mdevs.remove(d)
                self.s.remove_device(d)  # the tracker deletes it
                continue
            if d.dev_type != "mdev" and "vgpu_type" in d.extra_info:
                d.set_vgpu_type(None)  # the driver untypes the VF
            self.s.update_device(d)

    def all_devices(self) -> list[ty.Any]:
        return self.devs + self.extra_mdevs


def gpu_view(s: stats.PciDeviceStats) -> dict[str, dict[str, ty.Any]]:
    """Per GPU address: sharing, whole state, and per type (max, exist, use)."""
    gpus: dict[str, dict[str, ty.Any]] = {}
    for p in s:
        if p.get("vgpu_type"):
            g = gpus.setdefault(p["address"], {"sharing": p["vgpu_sharing"],
                                               "whole": p["vgpu_whole"],
                                               "types": {}})
            g["types"][p["vgpu_type"]] = (int(p["vgpu_max"]),
                                          int(p["vgpu_existing"]),
                                          int(p["vgpu_in_use"]), p["count"])
            g["capacity"] = _amounts(p["vgpu_capacity"])
            g.setdefault("sizes", {})[p["vgpu_type"]] = _amounts(
                p["vgpu_size"])
    return gpus


def _amounts(tag: str) -> dict[str, int]:
    return {k: int(v) for k, v in (i.split("=") for i in tag.split(","))}


def fill(g: dict[str, ty.Any]) -> fractions.Fraction:
    """How full a GPU of gpu_view is: its fullest budget resource."""
    used = {r: 0 for r in g["capacity"]}
    for t, (_, exist, _, _) in g["types"].items():
        for r, n in g["sizes"][t].items():
            used[r] += exist * n
    return max(fractions.Fraction(used[r], c)
               for r, c in g["capacity"].items())


def check_invariants(host: Host) -> None:
    """Properties 1 and 2, from the ledger and the pool dicts."""
    in_use: dict[tuple[str, str], int] = {}
    whole_busy = set()
    for d in host.all_devices():
        if d.status not in ("claimed", "allocated"):
            continue
        if d.dev_type == "mdev":
            key = (d.parent_addr, d.vgpu_type)
            in_use[key] = in_use.get(key, 0) + 1
        elif "vgpu_type" in d.extra_info:
            in_use[(d.address, d.extra_info["vgpu_type"])] = 1
        else:
            whole_busy.add(d.address)
    for addr, g in gpu_view(host.s).items():
        alive = set()
        for t, (mx, exist, use, _) in g["types"].items():
            assert in_use.get((addr, t), 0) == use <= exist <= mx
            if exist:
                alive.add(t)
        assert fill(g) <= 1
        if g["sharing"] == "one-type":
            assert len(alive) <= 1
        if addr in whole_busy:
            assert not any(in_use.get((addr, t)) for t in g["types"])


def check_rebuild(host: Host) -> None:
    """The incremental pools equal pools rebuilt from the devices."""
    fresh = stats.PciDeviceStats(numa_topology=TOPOLOGY,
                                 placement_policy=host.policy)
    for d in host.all_devices():
        fresh.add_device(d)
    assert sorted(map(repr, fresh)) == sorted(map(repr, host.s))


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(dicts=inventories(), ops=operations(),
                  policy=st.sampled_from(["pack", "spread"]))
def test_properties_over_random_sequences(dicts: list[dict[str, ty.Any]],
                                          ops: list[tuple[str, ty.Any, ty.Any]],
                                          policy: str) -> None:
    host = Host(dicts, policy)
    initial = list(host.s)
    for op, arg, cells in ops:
        if op == "free":
            host.free(arg)
        else:
            expected = host.s.support_requests(arg, cells)
            # the scheduler learns the host's policy from the pools
            sched = stats.PciDeviceStats(numa_topology=TOPOLOGY,
                                         stats=host.s.to_device_pools_obj())
            assert sched.support_requests(arg, cells) == expected
            assert (host.consume(arg, cells) is not None) == expected
        check_invariants(host)
        check_rebuild(host)
    while host.claims:
        host.free(0)
    assert list(host.s) == initial


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(dicts=inventories(), ops=operations(),
                  policy=st.sampled_from(["pack", "spread"]),
                  vtype=st.sampled_from(TYPES))
def test_pack_spread_pick(dicts: list[dict[str, ty.Any]],
                          ops: list[tuple[str, ty.Any, ty.Any]],
                          policy: str, vtype: str) -> None:
    """Property 5: one vGPU goes to the fullest (pack) / emptiest GPU."""
    host = Host(dicts, policy)
    for op, arg, cells in ops:
        host.free(arg) if op == "free" else host.consume(arg, cells)
    fills = {addr: fill(g) for addr, g in gpu_view(host.s).items()
             if g["types"].get(vtype, (0, 0, 0, 0))[3] > 0}
    got = host.consume([inv.request(1, [vtype])], None)
    assert (got is not None) == bool(fills)
    if got:
        best = (max if policy == "pack" else min)(fills.values())
        assert fills[got[0].parent_addr] == best
