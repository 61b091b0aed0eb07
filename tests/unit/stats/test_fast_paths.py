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
import pytest
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


@hypothesis.given(gpu_states(), st.sampled_from(TYPES + ("zz",)),
                  st.booleans())
def test_vgpu_unit_is_the_three_steps_it_fuses(
        gpu: capacity.GpuState, type_id: str, vgpu: bool) -> None:
    from pci_vgpu import pool
    from pci_vgpu import pool_filters as pf

    key = pool.PoolKey("10de", "1eb8", 0, "mdev" if vgpu else "type-PCI",
                       gpu.address, (), type_id if vgpu else None)
    p: pool.Pool = (pool.VgpuPool(key, gpu, [type_id], "mdev") if vgpu
                    else pool.DevicePool(key, gpu=gpu))
    ctx = pf.Context(pf.RequestView.of(inv.request(1, [type_id])), None,
                     None)
    assert pf._vgpu_unit(ctx, p) == all(f(ctx, p) for f in pf._FUSED)
    typed = pf.Context(ctx.request, None, None, indexed=True, typed=True)
    assert pf._predicates(typed)[-1] is pf._vgpu_unit


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
    fast = pool_take._prevalidated(pci_device.PciDevice, tuple(values),
                                   tuple(values.values()))
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


def _plain_mdev(gpu: ty.Any, vgpu_type: str, request_id: str,
                mdev_uuid: str, record_uuid: str) -> ty.Any:
    """The new mdev of a GPU through the constructor and the getters."""
    values = dict(dev_type="mdev", address=None,
                  parent_addr=gpu.address, vendor_id=gpu.vendor_id,
                  product_id=gpu.product_id, numa_node=gpu.numa_node,
                  label=gpu.label if gpu.obj_attr_is_set("label") else None,
                  mdev_uuid=mdev_uuid, extra_info={"vgpu_type": vgpu_type},
                  status="available", uuid=record_uuid,
                  request_id=request_id)
    if gpu.obj_attr_is_set("compute_node_id") and \
            gpu.compute_node_id is not None:
        values["compute_node_id"] = gpu.compute_node_id
    return pci_device.PciDevice(**values)


@pytest.mark.parametrize("node, label", [(3, True), (None, True),
                                         ("unset", False)])
def test_new_mdev_equals_the_constructor_of_its_gpu(
        monkeypatch: pytest.MonkeyPatch, node: ty.Any, label: bool) -> None:
    """What DeviceTaker builds for a GPU is what the constructor builds
    from the GPU's fields (read through the getters), with or without a
    compute node id and a label."""
    gpu_dict = inv.create_gpu("0000:41:00.0", 1, {"nvidia-222": 4})
    if not label:
        del gpu_dict["label"]
    gpu = pci_device.PciDevice.create(None, gpu_dict)
    if node != "unset":
        gpu.compute_node_id = node
    uuids = [uuidutils.generate_uuid(), uuidutils.generate_uuid()]
    monkeypatch.setattr(pool_take, "random_uuids", lambda n: list(uuids))
    taker = pool_take.DeviceTaker(stats.PciDeviceStats()._book)
    fast = taker._new_mdev(gpu, gpu.address, "nvidia-222", "r-1")
    slow = _plain_mdev(gpu, "nvidia-222", "r-1", *uuids)
    assert fast == slow  # every field but the timestamps
    assert fast.uuid == slow.uuid and fast.mdev_uuid == slow.mdev_uuid
    assert fast.obj_what_changed() == slow.obj_what_changed()
    assert fast.obj_to_primitive()["pci_vgpu_object.data"] == \
        slow.obj_to_primitive()["pci_vgpu_object.data"]


_FIELDS = ("status", "parent_addr", "dev_type", "extra_info", "label",
           "compute_node_id")


def test_reader_reads_what_attr_reads() -> None:
    """pd.reader's attrgetter gives attr()'s answers; a field that is not
    stored (unset, a dict, a lazy loader) takes attr()'s way."""
    read = pd.reader(*_FIELDS)
    full, = inv.to_devices([inv.create_gpu("0000:41:00.0", 0,
                                           {"nvidia-222": 4})])
    bare = pci_device.PciDevice.create(None, {"address": "0000:42:00.0",
                                              "vendor_id": "1002",
                                              "product_id": "692f",
                                              "dev_type": "type-VF"})
    as_dict = {"status": "allocated", "dev_type": "type-PF",
               "compute_node_id": 2}
    for dev in (full, bare, as_dict):
        assert read(dev) == tuple(pd.attr(dev, n) for n in _FIELDS), dev
    assert read(full)[0] == "available" and read(full)[5] == 1
    assert read(bare)[4:] == (None, None)  # unset: attr's default
    assert read(as_dict) == ("allocated", None, "type-PF", None, None, 2)
    lazy = _LazyDevice()
    lazy.status = "claimed"
    nullable = pd.reader("status", "label", "compute_node_id")
    assert nullable(lazy) == ("claimed", None, 7)  # loaded by obj_load_attr
    with pytest.raises(ValueError, match="two field names or more"):
        pd.reader("status")


@pytest.mark.parametrize("kwargs", [
    dict(count=2, spec=[{"vendor_id": "10de"}], numa_policy="required",
         request_id="6f1e5d1a-1d2b-4b0e-9c3e-1b5a3f1e2d4c"),
    dict(count=1, spec=[{"vendor_id": "10de"}]),  # policy, id unset
    dict(count=1, spec=[], numa_policy=None, request_id=None),
])
def test_request_fields_read_what_the_getters_read(
        kwargs: dict[str, ty.Any]) -> None:
    from pci_vgpu import pool_filters as pf
    from pci_vgpu.objects import instance_pci_requests as ipr

    names = ("request_id", "count", "numa_policy", "spec")
    req = ipr.InstancePCIRequest(**kwargs)
    assert pf._request_fields(req) == tuple(getattr(req, n) for n in names)
    as_dict = dict(kwargs)
    assert pf._request_fields(as_dict) == tuple(as_dict.get(n)
                                                for n in names)


def test_one_model_one_type_candidates_equal_the_general_lookup() -> None:
    """A request naming one model and one type reads one index entry; the
    same request written twice goes the general way (two specs)."""
    from pci_vgpu import pool_filters as pf

    s = stats.PciDeviceStats()
    for dev in inv.to_devices(inv.default_host()):
        s.add_device(dev)
    for vtype in ("nvidia-222", "nvidia-222-name", "nvidia-1155", "zz"):
        for product in (inv.T4, inv.L40_VF):
            one = inv.request(1, [vtype], vendor_id=inv.NVIDIA,
                              product_id=product)
            two = inv.request(1, [vtype], vendor_id=inv.NVIDIA,
                              product_id=product)
            two.spec = [dict(one.spec[0]), dict(one.spec[0])]
            fast = s._candidates(pf.RequestView.of(one))
            assert fast == s._candidates(pf.RequestView.of(two))
            assert all(p.is_vgpu and vtype in p.names for p in fast)
    assert s._candidates(pf.RequestView.of(inv.request(
        1, ["nvidia-222"], vendor_id=inv.NVIDIA, product_id=inv.T4)))


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
    several = pool_take.random_uuids(3)
    assert len(set(several)) == 3
    assert all(str(uuid.UUID(t)) == t and uuid.UUID(t).version == 4
               for t in several)


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
