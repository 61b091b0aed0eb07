"""The hot paths equal the plain definitions they replace.

Each shortcut taken for speed (``benchmarks/bench_stats.py``) is pinned
here to the straightforward code it stands for, on random inputs, so a
later change to either side that makes them disagree fails.
"""

from __future__ import annotations

import fractions
import logging
import typing as ty

import hypothesis
from hypothesis import strategies as st
from oslo_utils import uuidutils

from pci_vgpu import capacity
from pci_vgpu import pool_devices as pd
from pci_vgpu import pool_errors
from pci_vgpu import pool_take
from pci_vgpu import stats
from pci_vgpu.objects import pci_device
from tests.fixtures import inventory as inv
from tests.unit.stats import test_properties

TYPES = ("a", "b", "c")


@st.composite
def gpu_states(draw: ty.Any) -> capacity.GpuState:
    maxes = draw(st.dictionaries(st.sampled_from(TYPES), st.integers(1, 16),
                                 min_size=1))
    sharing = draw(st.sampled_from(capacity.SHARING_MODES))
    kwargs: dict[str, ty.Any] = {}
    if draw(st.booleans()):  # sized budget, maybe two resources
        resources = draw(st.sampled_from([("mem",), ("mem", "fences")]))
        kwargs["sizes"] = {t: {r: draw(st.integers(1, 64)) for r in resources}
                           for t in maxes}
    gpu = capacity.new_gpu_state(
        "0000:41:00.0", sharing, maxes,
        whole=draw(st.sampled_from(capacity.WHOLE_STATES)), **kwargs)
    for t in maxes:  # any counters, within capacity or not
        gpu.existing[t] = draw(st.integers(0, 20))
        gpu.in_use[t] = draw(st.integers(0, 20))
    gpu.foreign = draw(st.sampled_from([0, 0, 0, 1]))
    return gpu


def _locking_type_sorted(state: capacity.GpuState, type_id: str
                         ) -> str | None:
    if state.sharing != capacity.ONE_TYPE:
        return None
    for other, count in sorted(state.existing.items()):
        if count and other != type_id:
            return other
    return None


@hypothesis.given(gpu_states(), st.sampled_from(TYPES + ("zz",)))
def test_free_instances_is_spare_plus_creatable(
        gpu: capacity.GpuState, type_id: str) -> None:
    expected = 0
    if type_id in gpu.max_instances and not capacity.vgpus_blocked(gpu):
        expected = capacity.spare(gpu, type_id) + capacity.creatable(
            gpu, type_id)
    assert capacity.free_instances(gpu, type_id) == expected
    assert capacity.locking_type(gpu, type_id) == _locking_type_sorted(
        gpu, type_id)


def _exact_fill(gpu: capacity.GpuState) -> fractions.Fraction:
    return max(fractions.Fraction(u, c)
               for u, c in zip(capacity.used(gpu), gpu.capacity))


@hypothesis.given(gpu_states(), gpu_states())
def test_fill_level_orders_gpus_as_the_exact_fraction(
        a: capacity.GpuState, b: capacity.GpuState) -> None:
    fa, fb = capacity.fill_level(a), capacity.fill_level(b)
    ea, eb = _exact_fill(a), _exact_fill(b)
    assert (fa < fb, fa == fb, fa > fb) == (ea < eb, ea == eb, ea > eb)
    assert capacity.occupied(a) == ea


def test_fill_level_falls_back_to_the_fraction_for_huge_budgets() -> None:
    huge = 1 << 40
    gpu = capacity.new_gpu_state("0000:41:00.0", capacity.BUDGET,
                                 {"a": huge, "b": huge - 1},
                                 sizes={"a": {"m": 1}, "b": {"m": 1}},
                                 capacity={"m": huge})
    gpu.existing["a"] = huge - 1
    fill = capacity.fill_level(gpu)
    assert isinstance(fill, fractions.Fraction)
    assert fill == fractions.Fraction(huge - 1, huge)


def _mdev_values() -> dict[str, ty.Any]:
    return dict(dev_type="mdev", address=None, parent_addr="0000:41:00.0",
                vendor_id="10de", product_id="1eb8", numa_node=1,
                label="label_10de_1eb8",
                mdev_uuid=uuidutils.generate_uuid(),
                extra_info={"vgpu_type": "nvidia-222"}, status="available",
                uuid=uuidutils.generate_uuid(), request_id="r-1",
                compute_node_id=3)


def test_prevalidated_mdev_equals_the_constructor() -> None:
    values = _mdev_values()
    fast = pool_take._prevalidated(pci_device.PciDevice, values)
    slow = pci_device.PciDevice(**values)
    for name in pci_device.PciDevice.fields:
        assert fast.obj_attr_is_set(name) == slow.obj_attr_is_set(name), name
        if slow.obj_attr_is_set(name):
            assert getattr(fast, name) == getattr(slow, name), name
    assert fast.obj_what_changed() == slow.obj_what_changed()
    fast_p, slow_p = fast.obj_to_primitive(), slow.obj_to_primitive()
    changes = "pci_vgpu_object.changes"  # a set's order: compare as sets
    assert set(fast_p.pop(changes)) == set(slow_p.pop(changes))
    assert fast_p == slow_p
    assert fast.child_devices == [] and fast.parent_device is None


def test_attr_reads_what_the_getter_reads() -> None:
    gpu, = inv.to_devices([inv.create_gpu("0000:41:00.0", 0,
                                          {"nvidia-222": 4})])
    for name in pci_device.PciDevice.fields:
        if gpu.obj_attr_is_set(name):
            assert pd.attr(gpu, name) == getattr(gpu, name), name
        else:
            assert pd.attr(gpu, name, "dflt") == "dflt", name
    assert pd.attr({"status": "claimed"}, "status") == "claimed"
    assert pd.attr(object(), "status", "dflt") == "dflt"


class _LazyDevice(pci_device.PciDevice):
    """A subclass that loads a field on first read, as Nova's objects
    may: ``attr`` must go through the getter then."""

    def obj_load_attr(self, attrname: str) -> None:
        setattr(self, attrname, 7 if attrname == "compute_node_id" else None)


def test_attr_still_lets_an_object_load_a_field() -> None:
    dev = _LazyDevice()
    assert pd.attr(dev, "compute_node_id") == 7


def test_random_uuid_is_a_fresh_version_4_uuid() -> None:
    import uuid

    seen = set()
    for _ in range(2000):
        text = pool_take.random_uuid()
        value = uuid.UUID(text)
        assert str(value) == text
        assert value.version == 4 and value.variant == uuid.RFC_4122
        seen.add(text)
    assert len(seen) == 2000
    # every variant nibble appears (the two random bits are not stuck)
    assert {t[19] for t in seen} == set("89ab")


@hypothesis.settings(max_examples=80, deadline=None)
@hypothesis.given(dicts=test_properties.inventories(),
                  ops=test_properties.operations(),
                  policy=st.sampled_from(["pack", "spread"]))
def test_dry_answers_equal_the_full_pipeline(
        dicts: list[dict[str, ty.Any]],
        ops: list[tuple[str, ty.Any, ty.Any]], policy: str) -> None:
    """support_requests stops at the first usable pool only while the
    filters' debug log is off; with it on, every request runs the whole
    pipeline and writes its "Dropped" lines.  Both give the same answer,
    on both sides, in every state a random claim/free sequence reaches."""
    host = test_properties.Host(dicts, policy)
    logger = logging.getLogger("pci_vgpu.pool_filters")
    for op, arg, cells in ops:
        if op == "free":
            host.free(arg)
            continue
        sched = stats.PciDeviceStats(numa_topology=test_properties.TOPOLOGY,
                                     stats=host.s.to_device_pools_obj())
        fast = (host.s.support_requests(arg, cells),
                sched.support_requests(arg, cells))
        old = logger.level
        logger.setLevel(logging.DEBUG)
        try:
            full = (host.s.support_requests(arg, cells),
                    sched.support_requests(arg, cells))
        finally:
            logger.setLevel(old)
        assert fast == full
        # consume_requests too: the same devices with the full pipeline
        logger.setLevel(logging.DEBUG)
        try:
            full_picks = _picks(host.s, arg, cells)
        finally:
            logger.setLevel(old)
        assert _picks(host.s, arg, cells) == full_picks
        host.consume(arg, cells)


def _picks(s: stats.PciDeviceStats, reqs: ty.Any, cells: ty.Any
           ) -> list[tuple[ty.Any, ...]] | None:
    """What consume_requests would pick (then given back)."""
    try:
        got = s.consume_requests(reqs, cells)
    except pool_errors.PciDeviceRequestFailed:
        return None
    picked = [(d.address, d.parent_addr, d.dev_type, d.request_id,
               d.extra_info.get("vgpu_type")) for d in got]
    s.undo_consume(got)
    return picked
