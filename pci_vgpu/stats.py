"""``PciDeviceStats``: pools of whole devices, SR-IOV VFs and vGPUs.

It answers the two questions Nova asks of its own
``nova.pci.stats.PciDeviceStats`` with the same method names and meaning:

* scheduler side (built from a ``PciDevicePoolList``, counts only):
  "can this host satisfy these requests?" (:meth:`support_requests`) and
  "account for them" (:meth:`apply_requests`);
* compute side (built from devices): "which devices exactly?"
  (:meth:`consume_requests`), plus :meth:`support_requests` for claims.

Both sides run the same filter pipeline (:mod:`pci_vgpu.pool_filters`) over
the same typed pools (:mod:`pci_vgpu.pool`) whose counts derive from the
same capacity rules (:mod:`pci_vgpu.capacity`), and the same fulfilment loop
that takes one pool at a time in a deterministic order (NUMA affinity first,
then the host's ``pack``/``spread`` policy for vGPUs), so the two answers
agree on the same state.

Where it differs from Nova, on purpose: ``support_requests`` never deep-copies
(scheduler side: a journal of the few touched counters is rolled back;
compute side: the picks are undone), building is linear (pools are found by
key in a dict), and ``add_device`` accepts devices of any status (claimed
and allocated ones count as usage).  Placement allocations
(``provider_mapping``/``rp_uuids``) are not supported: pci_vgpu runs with
``[filter_scheduler]pci_in_placement`` off.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as ty

from pci_vgpu import capacity
from pci_vgpu import fragmentation
from pci_vgpu import pool
from pci_vgpu import pool_book
from pci_vgpu import pool_devices as pd
from pci_vgpu import pool_errors
from pci_vgpu import pool_filters as pf
from pci_vgpu import pool_take

LOG = logging.getLogger(__name__)
#: The filter pipeline's logger: while it logs debug, every dry run goes
#: through the whole pipeline so that each "Dropped" line is written.
LOG_FILTERS = pf.LOG

#: Devspec tags that never become pool keys (Nova's ignored_pool_tags).
IGNORED_POOL_TAGS = frozenset(("resource_class", "traits", "rp_uuids",
                               "rp_uuid"))

Taker = ty.Callable[[pool.Pool, int, pf.RequestView, list[ty.Any]], None]


@dataclasses.dataclass
class Explanation:
    """``explain`` result: one :class:`RequestExplanation` per request."""

    requests: list[pf.RequestExplanation]

    @property
    def satisfied(self) -> bool:
        return all(r.satisfied for r in self.requests)

    def __str__(self) -> str:
        return "\n".join(str(r) for r in self.requests)


class _Journal:
    """Scheduler-side undo log: old values of the counters a dry run touched."""

    def __init__(self) -> None:
        self._gpus: dict[int, tuple[capacity.GpuState, dict[str, int],
                                    dict[str, int], str, int]] = {}
        self._stored: dict[int, tuple[pool.DevicePool, int | None]] = {}
        self._family: tuple[pool.Family, pool.Family] | None = None

    def save_family(self, family: pool.Family) -> None:
        if self._family is None:
            self._family = (family, family.copy())

    def save_gpu(self, gpu: capacity.GpuState) -> None:
        # Only the counters a take changes (the budget never does).
        if id(gpu) not in self._gpus:
            self._gpus[id(gpu)] = (gpu, dict(gpu.existing),
                                   dict(gpu.in_use), gpu.whole, gpu.foreign)

    def save_stored(self, p: pool.DevicePool) -> None:
        self._stored.setdefault(id(p), (p, p.stored))

    def rollback(self) -> None:
        for gpu, existing, in_use, whole, foreign in self._gpus.values():
            gpu.existing, gpu.in_use, gpu.whole, gpu.foreign = (
                existing, in_use, whole, foreign)
        for p, stored in self._stored.values():
            p.stored = stored
        if self._family is not None:
            family, saved = self._family
            family.parents_taken = saved.parents_taken
            family.children_taken = saved.children_taken


class PciDeviceStats:
    """Pools of assignable devices and vGPUs of one compute node."""

    def __init__(self, numa_topology: ty.Any = None,
                 stats: ty.Iterable[ty.Any] | None = None,
                 dev_filter: ty.Any = None,
                 placement_policy: str = capacity.PACK,
                 task_mix: fragmentation.TaskMix | None = None) -> None:
        """
        :param numa_topology: host NUMA topology (``cells`` with ``id`` and
            ``socket``); only the ``socket`` policy reads it, as in Nova.
        :param stats: a ``PciDevicePoolList`` (or pool dicts): builds the
            scheduler-side view, with counts and no devices.
        :param dev_filter: a ``Whitelist``; devices it does not accept are
            ignored and its tags become pool keys.  None accepts every
            device with no tags (the tracker already filtered them).
        :param placement_policy: ``pack``, ``spread`` or
            ``fragmentation`` among vGPU candidates; on the scheduler side
            the host's policy carried by the pools wins.
        :param task_mix: the tasks the ``fragmentation`` policy expects;
            None: every vGPU type of the GPU equally likely, and whole GPUs.
        :raises: InvalidPlacementPolicy, InvalidPoolTag.
        """
        self.task_mix = task_mix
        self.numa_topology = numa_topology
        self.dev_filter = dev_filter
        self.placement_policy = capacity.validate_policy(placement_policy)
        self._pools: dict[pool.PoolKey, pool.Pool] = {}
        self._index: dict[tuple[str, str, bool], list[pool.Pool]] = {}
        #: vGPU pools by (vendor_id, product_id, one of the type's names).
        self._type_index: dict[tuple[str, str, str], list[pool.Pool]] = {}
        self._book = pool_book.DeviceBook(self)
        self._taker = pool_take.DeviceTaker(self._book)
        self._scheduler_side = stats is not None
        self._family = pool.Family()
        if stats is not None:
            dicts = [p if isinstance(p, dict) else p.to_dict() for p in stats]
            self.placement_policy = capacity.validate_policy(next(
                (d[pool.POLICY_TAG] for d in dicts if pool.POLICY_TAG in d),
                self.placement_policy))
            for p in pool.pools_from_dicts(dicts):
                p.family = self._family
                self._add_pool(p)

    # -- pool map ------------------------------------------------------------

    def find_pool(self, key: pool.PoolKey) -> pool.Pool | None:
        """The pool of ``key``, if any (for the device book)."""
        return self._pools.get(key)

    def add_pool(self, p: pool.Pool) -> None:
        """Register a pool (for the device book)."""
        self._add_pool(p)

    def drop_pool(self, p: pool.Pool) -> None:
        """Forget a pool (for the device book)."""
        self._drop_pool(p)

    def _add_pool(self, p: pool.Pool) -> None:
        self._pools[p.key] = p
        vendor, product = p.view["vendor_id"], p.view["product_id"]
        self._index.setdefault((vendor, product, p.is_vgpu), []).append(p)
        for name in getattr(p, "names", ()):
            self._type_index.setdefault((vendor, product, name), []).append(p)

    def _drop_pool(self, p: pool.Pool) -> None:
        del self._pools[p.key]
        vendor, product = p.view["vendor_id"], p.view["product_id"]
        self._index[(vendor, product, p.is_vgpu)].remove(p)
        for name in getattr(p, "names", ()):
            self._type_index[(vendor, product, name)].remove(p)

    def _candidates(self, view: pf.RequestView) -> list[pool.Pool]:
        """Pools worth filtering: by (vendor, product, kind) when known,
        and by vGPU type name for a vGPU request (so the kind and type
        filters have nothing left to drop)."""
        if view.ids is None:
            return list(self._pools.values())
        if view.vgpu_types:
            if len(view.ids) == 1 and len(view.vgpu_types) == 1:
                # One model, one type name (a flavor's usual alias): one
                # index entry, already without duplicates.
                (vendor, product), = view.ids
                name, = view.vgpu_types
                return list(self._type_index.get((vendor, product, name), ()))
            typed: dict[pool.Pool, None] = {}  # pools hash by identity
            for vendor, product in dict.fromkeys(view.ids):
                for name in view.vgpu_types:
                    typed.update(dict.fromkeys(self._type_index.get(
                        (vendor, product, name), ())))
            return list(typed)
        found: list[pool.Pool] = []
        for ids in dict.fromkeys(view.ids):
            found.extend(self._index.get((ids[0], ids[1], False), ()))
        return found

    # -- devices (compute side) ------------------------------------------------

    def _pool_key(self, dev: ty.Any) -> pool.PoolKey | None:
        tags: tuple[tuple[str, str | None], ...] = ()
        if self.dev_filter is not None:
            spec = self.dev_filter.get_devspec(dev)
            if spec is None:
                return None
            tags = tuple(sorted(
                (k, v if v is None else str(v))
                for k, v in spec.get_tags().items()
                if k not in IGNORED_POOL_TAGS))
        address = pd.attr(dev, "address")
        if not pd.vgpu_types(dev):
            address = pd.attr(dev, "parent_addr") or address
        return pool.PoolKey(
            str(pd.attr(dev, "vendor_id")), str(pd.attr(dev, "product_id")),
            pd.attr(dev, "numa_node"), str(pd.attr(dev, "dev_type")),
            address, tags)

    def add_device(self, dev: ty.Any) -> None:
        """Track a device of any status.

        Free devices are capacity; claimed/allocated mdev children count as
        usage of their GPU; a GPU claimed/allocated whole blocks its vGPUs.
        An mdev is tracked through its GPU (it may arrive first and waits);
        a device already tracked is updated instead.  Devices the
        ``dev_filter`` rejects are ignored, as in Nova.

        :raises: InvalidVgpuTypes, InvalidVgpuSharing,
            InvalidVgpuMaxInstances for a bad GPU inventory (nothing is
            tracked then).
        """
        if self._book.tracks(dev):
            self.update_device(dev)
        elif pd.is_mdev(dev):
            self._book.add_mdev(dev)
        else:
            key = self._pool_key(dev)
            if key is not None:
                self._book.add_whole(dev, key)

    def remove_device(self, dev: ty.Any) -> None:
        """Forget a device (vanished from the host, or a deleted mdev).

        :raises: PciDevicePoolEmpty when the device is not tracked.
        """
        key = pd.ident(dev)
        if key in self._book.devs:
            self._book.remove(key)
        elif self._book.tracks(dev):
            self._book.forget_pending(dev)
        else:
            raise pool_errors.PciDevicePoolEmpty(device=key)

    def update_device(self, dev: ty.Any) -> None:
        """Re-derive after a device's status or attributes changed.

        The tracker calls it after claim/allocate/free.  A device picked by
        :meth:`consume_requests` stays held until its status leaves
        ``available``; then its status is the truth again.
        """
        key = pd.ident(dev)
        book = self._book
        if key not in book.devs:
            if book.tracks(dev):
                book.forget_pending(dev)
            self.add_device(dev)
            return
        if pd.attr(dev, "status") != pd.AVAILABLE:
            book.held.pop(key, None)
        p = book.pool_of(key)
        if p is not None and (self._pool_key(dev) != p.key or
                              self._gpu_changed(key, dev)):
            book.remove(key)
            self.add_device(dev)
            return
        book.devs[key] = dev  # the tracker may hand a fresh copy
        if p is not None:
            p.members[key] = dev
        book.recount(key)

    def _gpu_changed(self, key: str, dev: ty.Any) -> bool:
        gpu = self._book.gpus.get(key)
        if gpu is None:
            return bool(pd.vgpu_types(dev))
        new = pd.new_gpu_state(dev)
        return _budget(new) != _budget(gpu)

    # -- fulfilment --------------------------------------------------------------

    def _order(self, ctx: pf.Context, count: ty.Callable[[pool.Pool], int]
               ) -> ty.Callable[[pool.Pool], tuple[ty.Any, ...]]:
        cells = [pf._get(c, "id") for c in ctx.numa_cells or []]
        policy = self.placement_policy

        def key(p: pool.Pool) -> tuple[ty.Any, ...]:
            node = p.key.numa_node
            rank = 0 if not cells or node in cells else (
                1 if node is None else 2)
            if isinstance(p, pool.VgpuPool):
                if policy == capacity.FRAGMENTATION:
                    return (rank, self._fragmentation_key(p), p.vgpu_type)
                fill, addr = capacity.placement_key(p.gpu, policy)
                return (rank, fill, -count(p), addr, p.vgpu_type)
            # whole devices: a request never mixes them with vGPU pools
            return (rank, p.key.address or "")
        return key

    def _fragmentation_key(self, p: pool.VgpuPool) -> tuple[ty.Any, ...]:
        mix = self.task_mix or fragmentation.mix_of_types(p.gpu.max_instances)
        return fragmentation.gpu_key(
            fragmentation.HostGpu(p.gpu, p.key.product_id), p.vgpu_type, mix)

    def _fulfil(self, view: pf.RequestView, numa_cells: ty.Any,
                take: Taker, out: list[ty.Any], dry: bool = False,
                candidates: list[pool.Pool] | None = None) -> bool:
        """Serve one request, one pool at a time; False if impossible.

        ``dry``: only say whether it could be served, and take nothing when
        that needs no take: one unit, which any pool the filters kept
        gives (they keep pools only while their counts add up to the
        request).  ``support_requests`` serves so each request whose take
        no later request could see (:meth:`_dry_flags`).
        """
        indexed = view.ids is not None
        ctx = pf.Context(view, numa_cells, self.numa_topology,
                         indexed=indexed,
                         typed=indexed and bool(view.vgpu_types))
        if candidates is None:
            candidates = self._candidates(view)
        if view.count == 1 and not numa_cells and \
                not LOG_FILTERS.isEnabledFor(logging.DEBUG):
            # One unit, no guest cells: one pass (pf.any_unit, pf.usable).
            if dry:
                return pf.any_unit(ctx, candidates)
            live = pf.usable(ctx, candidates)
            if not live:
                return False
            take(live[0] if len(live) == 1 else
                 min(live, key=self._order(ctx, ctx.count)), 1, view, out)
            return True
        pools = pf.run(ctx, candidates)
        if pools is None:
            return False
        if dry and view.count == 1:
            return True
        remaining = view.count
        count: ty.Callable[[pool.Pool], int] = ctx.count  # fresh until a take
        while remaining:
            live = [p for p in pools if count(p) > 0]
            if not live:
                return False
            if len(live) == 1:
                best = live[0]
            else:
                best = min(live, key=self._order(ctx, count))
            count = _live_count
            n = 1 if best.is_vgpu else min(remaining, best.count())
            take(best, n, view, out)
            remaining -= n
        return True

    def _take_counts(self, journal: _Journal | None) -> Taker:
        def take(p: pool.Pool, n: int, view: pf.RequestView,
                 out: list[ty.Any]) -> None:
            if isinstance(p, pool.VgpuPool):
                if journal is not None:
                    journal.save_gpu(p.gpu)
                capacity.consume_instance(p.gpu, p.vgpu_type)
            elif isinstance(p, pool.DevicePool) and p.gpu is not None:
                if journal is not None:
                    journal.save_gpu(p.gpu)
                p.gpu.whole = capacity.WHOLE_USED
            elif isinstance(p, pool.DevicePool) and p.stored is not None:
                if journal is not None:
                    journal.save_stored(p)
                p.stored -= n
            self._take_family(p, n, journal)
        return take

    def _take_family(self, p: pool.Pool, n: int,
                     journal: _Journal | None) -> None:
        """Record parent/child use so relatives are not taken too."""
        fam = self._family
        if journal is not None:
            journal.save_family(fam)
        if p.parent is not None:
            fam.children_taken[p.parent] = \
                fam.children_taken.get(p.parent, 0) + n
        if p.own is not None and not p.is_vgpu:
            fam.parents_taken.add(p.own)

    # -- public requests API ---------------------------------------------------

    def support_requests(self, requests: ty.Iterable[ty.Any],
                         numa_cells: ty.Any = None) -> bool:
        """True when every request can be served together; no side effects.

        Scheduler side: a dry run of :meth:`apply_requests` rolled back from
        a journal of the touched counters.  Compute side: a dry run of
        :meth:`consume_requests` whose picks are undone.  Neither copies
        the pools or the devices.

        :raises: InvalidPciRequest for a malformed request.
        """
        views = [pf.RequestView.of(r) for r in requests]
        candidates = [self._candidates(v) for v in views]
        dry = [d and v.count == 1
               for d, v in zip(self._dry_flags(candidates), views)]
        if self._scheduler_side and all(dry):  # nothing taken, no journal
            return all(self._fulfil(v, numa_cells, _no_take, [], True, c)
                       for v, c in zip(views, candidates))
        if self._scheduler_side:
            journal = _Journal()
            take = self._take_counts(journal)
            try:
                return all(self._fulfil(v, numa_cells, take, [], d, c)
                           for v, d, c in zip(views, dry, candidates))
            finally:
                journal.rollback()
        picked: list[ty.Any] = []
        try:
            return all(self._fulfil(v, numa_cells, self._taker.take, picked,
                                    d, c)
                       for v, d, c in zip(views, dry, candidates))
        finally:
            self.undo_consume(picked)

    @staticmethod
    def _dry_flags(candidates: list[list[pool.Pool]]) -> list[bool]:
        """Per request: True when no later request's candidate pools share
        anything with its own (:meth:`pool.Pool.footprint`), so what it
        would take cannot change a later answer and a yes/no suffices.
        Always True for the last request."""
        flags = [True] * len(candidates)
        if len(candidates) < 2:
            return flags
        later: set[ty.Any] = set()
        for i in range(len(candidates) - 1, -1, -1):
            mine = set().union(*(p.footprint() for p in candidates[i]))
            flags[i] = later.isdisjoint(mine)
            later |= mine
        return flags

    def _apply_views(self, views: list[pf.RequestView], numa_cells: ty.Any,
                     journal: _Journal | None) -> bool:
        take = self._take_counts(journal)
        return all(self._fulfil(v, numa_cells, take, []) for v in views)

    def apply_requests(self, requests: ty.Iterable[ty.Any],
                       numa_cells: ty.Any = None) -> None:
        """Account for the requests in the counts (scheduler side).

        On a compute-side object the picked devices are held, as by
        :meth:`consume_requests`.  All-or-nothing.

        :raises: PciDeviceRequestFailed when the host cannot serve them.
        """
        requests = list(requests)
        if not self._scheduler_side:
            self.consume_requests(requests, numa_cells)
            return
        views = [pf.RequestView.of(r) for r in requests]
        journal = _Journal()
        if not self._apply_views(views, numa_cells, journal):
            journal.rollback()
            raise pool_errors.PciDeviceRequestFailed(
                requests=_names(views), reason=self._why(views, numa_cells))

    def consume_requests(self, requests: ty.Iterable[ty.Any],
                         numa_cells: ty.Any = None) -> list[ty.Any]:
        """Pick the devices for the requests (compute side).

        Returns ``PciDevice`` objects with ``request_id`` set: whole
        devices, existing free mdevs, new mdev ``PciDevice`` objects (address
        None, fresh ``mdev_uuid``, ``extra_info['vgpu_type']``), or NVIDIA
        VFs with ``extra_info['vgpu_type']`` set.  They are held (not free)
        in this object until the tracker claims them or
        :meth:`undo_consume` gives them back.  All-or-nothing.

        :raises: PciDeviceRequestFailed, InvalidPciRequest.
        """
        views = [pf.RequestView.of(r) for r in requests]
        picked: list[ty.Any] = []
        for view in views:
            if not self._fulfil(view, numa_cells, self._taker.take, picked):
                self.undo_consume(picked)
                raise pool_errors.PciDeviceRequestFailed(
                    requests=_names(views),
                    reason=self._why(views, numa_cells))
        return picked

    def undo_consume(self, devices: ty.Iterable[ty.Any]) -> None:
        """Give back what :meth:`consume_requests` returned, not yet claimed.

        Restores ``request_id`` and the VF type; new mdevs are forgotten.
        Devices no longer held (already claimed) are left alone.
        """
        self._taker.undo(devices)

    # -- explain -----------------------------------------------------------------

    def explain(self, requests: ty.Iterable[ty.Any],
                numa_cells: ty.Any = None) -> Explanation:
        """Per request, per pool: the first rule that rejected it.

        Requests are explained in order against the state left by the
        earlier ones (as they would be served), then everything is undone.
        """
        return self._explain_views([pf.RequestView.of(r) for r in requests],
                                   numa_cells)

    def _explain_views(self, views: list[pf.RequestView],
                       numa_cells: ty.Any) -> Explanation:
        journal, picked = _Journal(), []  # type: ignore[var-annotated]
        take = (self._take_counts(journal) if self._scheduler_side
                else self._taker.take)
        result = []
        try:
            for view in views:
                ctx = pf.Context(view, numa_cells, self.numa_topology)
                result.append(pf.explain_request(ctx, list(self._pools.values())))
                self._fulfil(view, numa_cells, take, picked)
        finally:
            journal.rollback()
            self.undo_consume(picked)
        return Explanation(result)

    def _why(self, views: list[pf.RequestView], numa_cells: ty.Any) -> str:
        failed = [r for r in self._explain_views(views, numa_cells).requests
                  if not r.satisfied]
        if not failed:
            return "the requests cannot all be served together"
        r = failed[0]
        return "request %s wants %d, %d usable" % (r.request_id, r.count,
                                                     r.available)

    # -- serialisation -----------------------------------------------------------

    def __iter__(self) -> ty.Iterator[dict[str, ty.Any]]:
        """Pool dicts in Nova's shape (no devices), counts derived."""
        for p in list(self._pools.values()):
            d = pool.to_dict(p)
            if p.is_vgpu:
                d[pool.POLICY_TAG] = self.placement_policy
            yield d

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PciDeviceStats):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def to_device_pools_obj(self) -> ty.Any:
        """``PciDevicePoolList`` for ``ComputeNode.pci_device_pools``."""
        from pci_vgpu.objects import pci_device_pool

        return pci_device_pool.PciDevicePoolList(objects=[
            pci_device_pool.PciDevicePool.from_dict(d) for d in self])

    def get_free_devs(self) -> list[ty.Any]:
        """Whole devices that may be given now (Nova's name)."""
        return [d for p in self._pools.values()
                if isinstance(p, pool.DevicePool) for d in p.free.values()]


def _names(views: list[pf.RequestView]) -> str:
    return ", ".join("%s x%d" % (v.request_id, v.count) for v in views)


def _budget(gpu: capacity.GpuState) -> tuple[ty.Any, ...]:
    """What a GPU's inventory says of its sharing (not of its use)."""
    return (gpu.sharing, gpu.max_instances, gpu.resources, gpu.capacity,
            gpu.sizes)


def _no_take(p: pool.Pool, n: int, view: pf.RequestView,
             out: list[ty.Any]) -> None:
    raise AssertionError("a dry run of one unit takes nothing")


def _live_count(p: pool.Pool) -> int:
    return p.count()
