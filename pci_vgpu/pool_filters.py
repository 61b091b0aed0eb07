"""Which pools may serve a request: a pipeline of (reason, filter) pairs.

One loop (:func:`run`) applies the filters in order, logs
"Dropped %(n)d pool(s): %(reason)s" and stops as soon as too few units are
left (STYLE 7).  :func:`explain_request` runs the very same list without
stopping, recording the first filter that rejected each pool, which is the
answer an operator needs when the scheduler says "no valid host".

The rules follow Nova 34's ``PciDeviceStats._filter_pools`` where Nova has
them (spec match, NUMA policies, PFs only when asked for) and add the vGPU
ones (vGPU request vs whole device, type, whole-GPU use, type lock,
capacity).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import typing as ty

from pci_vgpu import capacity
from pci_vgpu import pool
from pci_vgpu import pool_errors
from pci_vgpu import vgpu_types

LOG = logging.getLogger(__name__)

REQUIRED, LEGACY, PREFERRED, SOCKET = "required", "legacy", "preferred", "socket"
NUMA_POLICIES = (REQUIRED, LEGACY, PREFERRED, SOCKET)
#: Spec keys that are not pool properties (Nova's ignored_spec_tags + ours).
IGNORED_SPEC_KEYS = frozenset(
    ("resource_class", "traits", "rp_uuids", "rp_uuid", "vgpu_types",
     "live_migratable"))


def _get(obj: ty.Any, name: str) -> ty.Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


@dataclasses.dataclass
class RequestView:
    """What the filters read of an ``InstancePCIRequest``, parsed once."""

    request_id: str | None
    count: int
    specs: list[dict[str, ty.Any]]
    vgpu_types: frozenset[str]
    numa_policy: str
    #: (vendor_id, product_id) of every spec when all name both; else None.
    ids: list[tuple[str, str]] | None
    #: The specs name nothing but vendor_id and product_id.
    ids_only: bool = False

    @classmethod
    def of(cls, request: ty.Any) -> RequestView:
        """:raises: InvalidPciRequest for a bad count or NUMA policy,
            InvalidVgpuTypesSpec for a spec whose vgpu_types is not a JSON
            list of names."""
        rid, count, policy, specs = _request_fields(request)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise pool_errors.InvalidPciRequest(
                request_id=rid, field="count", value=count,
                reason="allowed: an integer >= 1")
        policy = policy or LEGACY
        if policy not in NUMA_POLICIES:
            raise pool_errors.InvalidPciRequest(
                request_id=rid, field="numa_policy", value=policy,
                reason="allowed: %s" % ", ".join(NUMA_POLICIES))
        specs = specs or [{}]
        try:
            key = ((tuple(specs[0].items()),) if len(specs) == 1
                   else tuple(tuple(s.items()) for s in specs))
            parsed = _parse_specs(key)
        except TypeError:  # a value that is not hashable: parse it anyway
            parsed = _parse_specs.__wrapped__(
                tuple(tuple(s.items()) for s in specs))
        matchable, types, ids, only = parsed
        return cls(rid, count, matchable, types, policy, ids, only)


def _request_fields(request: ty.Any) -> tuple[ty.Any, ty.Any, ty.Any, ty.Any]:
    """(request_id, count, numa_policy, spec): :func:`_get` of each, read
    from a versioned object's storage (``_obj_<name>``, what its getter
    returns) in one look: a scheduler reads them for every request on every
    host.  A stored None is read again through the getter, which returns
    None for it too and loads an unset field."""
    if isinstance(request, dict):
        return (request.get("request_id"), request.get("count"),
                request.get("numa_policy"), request.get("spec"))
    get = getattr(request, "__dict__", _NO_FIELDS).get
    values = (get("_obj_request_id"), get("_obj_count"),
              get("_obj_numa_policy"), get("_obj_spec"))
    if None in values:
        return tuple(  # type: ignore[return-value]
            getattr(request, name, None) if v is None else v
            for v, name in zip(values, _REQUEST_FIELDS))
    return values


_REQUEST_FIELDS = ("request_id", "count", "numa_policy", "spec")
_NO_FIELDS: dict[str, ty.Any] = {}


@functools.lru_cache(maxsize=4096)
def _parse_specs(specs: tuple[tuple[tuple[str, ty.Any], ...], ...]
                 ) -> tuple[list[dict[str, ty.Any]], frozenset[str],
                            list[tuple[str, str]] | None, bool]:
    """What :meth:`RequestView.of` reads of the specs, parsed once per
    distinct spec list (a scheduler asks the same flavor's specs of every
    host; the JSON of ``vgpu_types`` was the costly part).  The results
    are shared, so the filters only read them.

    :raises: InvalidVgpuTypesSpec (not cached).
    """
    dicts = [dict(s) for s in specs]
    types = frozenset().union(*(vgpu_types.vgpu_types_of(s) for s in dicts))
    matchable = [{k: (v.lower() if isinstance(v, str) else v)
                  for k, v in s.items() if k not in IGNORED_SPEC_KEYS}
                 for s in dicts]
    ids = [(s["vendor_id"], s["product_id"]) for s in matchable
           if s.get("vendor_id") and s.get("product_id")]
    all_ids = len(ids) == len(matchable)
    only = all_ids and all(set(s) <= {"vendor_id", "product_id"}
                           for s in matchable)
    return matchable, types, ids if all_ids else None, only


@dataclasses.dataclass
class Context:
    """A request and where the guest lives.

    ``counts`` caches each pool's count for one run: counts cannot change
    while filtering, and deriving them (capacity rules) is the costly part.
    """

    request: RequestView
    numa_cells: list[ty.Any] | None
    numa_topology: ty.Any
    counts: dict[pool.Pool, int] = dataclasses.field(default_factory=dict)
    #: The pools were looked up by (vendor_id, product_id, kind) already.
    indexed: bool = False
    #: ... and, for a vGPU request, by the requested type names.
    typed: bool = False

    def count(self, p: pool.Pool) -> int:
        n = self.counts.get(p)  # pools hash by identity
        if n is None:
            n = self.counts[p] = p.count()
        return n


def effective_count(pools: ty.Iterable[pool.Pool],
                    ctx: Context | None = None) -> int:
    """Units the pools can give one request together.

    vGPU pools of one GPU share it: they give at most the largest of their
    counts (taking one type locks or shrinks the others), not the sum.
    """
    total = 0
    best: dict[str, int] = {}
    for p in pools:
        n = ctx.count(p) if ctx is not None else p.count()
        if isinstance(p, pool.VgpuPool):
            if n > best.get(p.gpu.address, 0):
                best[p.gpu.address] = n
        else:
            total += n
    return total + sum(best.values())


# -- per-pool predicates ------------------------------------------------------


def _kind(ctx: Context, p: pool.Pool) -> bool:
    return p.is_vgpu == bool(ctx.request.vgpu_types)


def _spec(ctx: Context, p: pool.Pool) -> bool:
    view = p.view
    return any(all(view.get(k, _MISSING) == v for k, v in s.items())
               for s in ctx.request.specs)


_MISSING = object()


def _vgpu_type(ctx: Context, p: pool.Pool) -> bool:
    return not p.is_vgpu or bool(
        p.names & ctx.request.vgpu_types)  # type: ignore[attr-defined]


def _unrequested_pf(ctx: Context, p: pool.Pool) -> bool:
    if p.key.dev_type != "type-pf" and p.key.dev_type != "type-PF":
        return True
    return any(s.get("dev_type") == "type-pf" for s in ctx.request.specs)


# ``p.is_vgpu`` guards the VgpuPool attributes below (no ty.cast: these
# run for every candidate of every request).
def _whole_gpu(ctx: Context, p: pool.Pool) -> bool:
    return not p.is_vgpu or not capacity.vgpus_blocked(
        p.gpu)  # type: ignore[attr-defined]


def _type_lock(ctx: Context, p: pool.Pool) -> bool:
    return not p.is_vgpu or capacity.locking_type(
        p.gpu, p.vgpu_type) is None  # type: ignore[attr-defined]


def _capacity(ctx: Context, p: pool.Pool) -> bool:
    return ctx.count(p) > 0


def _vgpu_unit(ctx: Context, p: pool.Pool) -> bool:
    """``_whole_gpu``, ``_type_lock`` and ``_capacity`` in one call: the
    last per-pool steps of every request, asked of each candidate by the
    one-pass decision (a unit test pins it to the three)."""
    if p.is_vgpu:
        gpu = p.gpu  # type: ignore[attr-defined]
        if gpu.whole == capacity.WHOLE_USED:  # capacity.vgpus_blocked
            return False
        if gpu.sharing == capacity.ONE_TYPE and capacity.locking_type(
                gpu, p.vgpu_type) is not None:  # type: ignore[attr-defined]
            return False
    return ctx.count(p) > 0


#: Consecutive predicates that _vgpu_unit stands for.
_FUSED = [_whole_gpu, _type_lock, _capacity]


class Flags(ty.NamedTuple):
    """What decides that a step keeps every pool of a request."""

    #: Pools were looked up by (vendor_id, product_id, kind).
    indexed: bool
    #: ... and by the requested vGPU type names.
    typed: bool
    #: The specs name only vendor_id and product_id.
    ids_only: bool
    #: A vGPU request.
    vgpu: bool


def _flags(ctx: Context) -> Flags:
    return Flags(ctx.indexed, ctx.typed, ctx.request.ids_only,
                 bool(ctx.request.vgpu_types))


def _keep(pred: ty.Callable[[Context, pool.Pool], bool],
          vgpu_only: bool = False,
          skip: ty.Callable[[Flags], bool] | None = None
          ) -> ty.Callable[[Context, list[pool.Pool]], list[pool.Pool]]:
    """A pool-by-pool filter from a predicate.

    ``vgpu_only`` predicates keep every whole-device pool, so they are
    skipped for whole-device requests (those see no vGPU pool past the
    kind filter); ``skip`` says when the pools are known to pass already.
    Both are read off :class:`Flags` (``keeps_all``), so :func:`run`
    decides once per kind of request which steps to skip.
    """
    def keeps_all(flags: Flags) -> bool:
        return (vgpu_only and not flags.vgpu) or (
            skip is not None and skip(flags))

    def run_pred(ctx: Context, pools: list[pool.Pool]) -> list[pool.Pool]:
        if keeps_all(_flags(ctx)):
            return pools
        return [p for p in pools if pred(ctx, p)]
    run_pred.__doc__ = pred.__doc__
    run_pred.keeps_all = keeps_all  # type: ignore[attr-defined]
    run_pred.pred = pred  # type: ignore[attr-defined]
    #: The filter without the keeps_all test, for run(), which asked it.
    run_pred.apply = lambda ctx, pools: [  # type: ignore[attr-defined]
        p for p in pools if pred(ctx, p)]
    return run_pred


# -- NUMA (set-level: what is allowed depends on what is left) ---------------


def _on_nodes(pools: list[pool.Pool], nodes: ty.Collection[ty.Any]
              ) -> list[pool.Pool]:
    return [p for p in pools if p.key.numa_node in nodes]


def _socket_nodes(ctx: Context) -> set[int] | None:
    cells = list(_get(ctx.numa_topology, "cells") or []) \
        if ctx.numa_topology is not None else []
    if not cells or any(_get(c, "socket") is None for c in cells):
        LOG.debug("No socket information in host NUMA cell(s).")
        return None
    guest = {_get(c, "id") for c in ctx.numa_cells or []}
    sockets = {_get(c, "socket") for c in cells if _get(c, "id") in guest}
    return {_get(c, "id") for c in cells if _get(c, "socket") in sockets}


def _numa(ctx: Context, pools: list[pool.Pool]) -> list[pool.Pool]:
    """Nova's policy ladder: strictest affinity that gives enough units."""
    if not ctx.numa_cells:
        return pools
    policy, want = ctx.request.numa_policy, ctx.request.count
    cells = [_get(c, "id") for c in ctx.numa_cells]
    local = _on_nodes(pools, cells)
    if policy == REQUIRED or effective_count(local, ctx) >= want:
        return local
    if policy == SOCKET:
        nodes = _socket_nodes(ctx)
        return _on_nodes(pools, nodes) if nodes is not None else []
    legacy = _on_nodes(pools, cells + [None])
    if policy == LEGACY or effective_count(legacy, ctx) >= want:
        return legacy
    return sorted(pools, key=lambda p: p.key.numa_node not in cells + [None])


#: The pipeline: (reason, filter); order = the order of ``explain`` causes.
PIPELINE: list[tuple[str, ty.Callable[[Context, list[pool.Pool]],
                                      list[pool.Pool]]]] = [
    ("vGPU request vs whole-device pool (a request with vgpu_types uses "
     "only vGPU pools, one without only whole devices)",
     _keep(_kind, skip=lambda f: f.indexed)),
    ("vendor_id/product_id/tags do not match the request spec",
     _keep(_spec, skip=lambda f: f.indexed and f.ids_only)),
    ("vGPU type not among the requested vgpu_types",
     _keep(_vgpu_type, vgpu_only=True, skip=lambda f: f.typed)),
    # vGPU pools are never PFs, and a vGPU request sees no other pool here.
    ("PF not requested (dev_type type-PF not in the spec)",
     _keep(_unrequested_pf, skip=lambda f: f.vgpu)),
    ("parent GPU is given whole to a guest",
     _keep(_whole_gpu, vgpu_only=True)),
    ("vGPU type locked by another type on this one-type GPU",
     _keep(_type_lock, vgpu_only=True)),
    ("not enough free instances or devices", _keep(_capacity)),
    ("NUMA affinity policy", _numa),
]


def run(ctx: Context, pools: list[pool.Pool]) -> list[pool.Pool] | None:
    """Pools that together can serve the request, or None if they can't."""
    last = len(PIPELINE) - 1
    skipped = _skipped(ctx)
    for step, (reason, fn) in enumerate(PIPELINE):
        if step in skipped:
            continue  # would keep every pool
        kept = getattr(fn, "apply", fn)(ctx, pools)
        dropped = len(pools) - len(kept)
        if dropped:
            LOG.debug("Dropped %(n)d pool(s): %(reason)s",
                      {"n": dropped, "reason": reason})
        pools = kept
        # The total only changes when pools go; check then, and at the end.
        if (dropped or step == last) and \
                effective_count(pools, ctx) < ctx.request.count:
            return None
    return pools


def any_unit(ctx: Context, pools: list[pool.Pool]) -> bool:
    """``run(ctx, pools) is not None`` for a request of one unit and no
    guest NUMA cells, stopping at the first pool that passes every step.

    :func:`run` keeps the pools that pass every per-pool step (the NUMA
    step keeps them all without guest cells) and says yes when their
    counts add up to one, which the capacity step alone guarantees: so one
    passing pool is the whole answer.  The scheduler asks this of every
    host for the last request of a flavor; on a host of 16 GPUs the first
    GPU usually answers.  It logs no "Dropped" lines: callers use it only
    while debug logging is off.
    """
    assert ctx.request.count == 1 and not ctx.numa_cells
    preds = _predicates(ctx)
    for p in pools:  # loops, not any(all(...)): no generator per pool
        for pred in preds:
            if not pred(ctx, p):
                break
        else:
            return True
    return False


def usable(ctx: Context, pools: list[pool.Pool]) -> list[pool.Pool]:
    """For one unit without guest NUMA cells (see :func:`any_unit`): the
    pools that pass every step, in one pass and without the "Dropped"
    lines -- the pools :func:`run` keeps, when it keeps any."""
    assert ctx.request.count == 1 and not ctx.numa_cells
    preds = _predicates(ctx)
    kept = []
    for p in pools:
        for pred in preds:
            if not pred(ctx, p):
                break
        else:
            kept.append(p)
    return kept


def _predicates(ctx: Context) -> list[ty.Callable[[Context, pool.Pool],
                                                  bool]]:
    """The per-pool predicates of the steps :func:`run` does not skip."""
    flags = (ctx.indexed, ctx.typed, ctx.request.ids_only,
             bool(ctx.request.vgpu_types))  # equal to (hashes as) Flags
    found = _PREDICATES.get(flags)
    if found is None:
        skipped = _skipped(ctx)
        found = [fn.pred for step, (_, fn) in enumerate(PIPELINE)
                 if step not in skipped and hasattr(fn, "pred")]
        if found[-len(_FUSED):] == _FUSED:
            found[-len(_FUSED):] = [_vgpu_unit]
        _PREDICATES[flags] = found
    return found


_PREDICATES: dict[tuple[bool, ...], list[ty.Callable[[Context, pool.Pool], bool]]] = {}


def _skipped(ctx: Context) -> frozenset[int]:
    """Steps of :data:`PIPELINE` that keep every pool for this request.

    They depend on :class:`Flags` only, so the answer is memoised per flag
    set instead of asked of each step on every call (the pipeline runs for
    every request on every host).
    """
    flags = (ctx.indexed, ctx.typed, ctx.request.ids_only,
             bool(ctx.request.vgpu_types))  # equal to (hashes as) Flags
    found = _SKIPPED.get(flags)
    if found is None:
        flags = Flags(*flags)
        found = _SKIPPED[flags] = frozenset(
            step for step, (_, fn) in enumerate(PIPELINE)
            if getattr(fn, "keeps_all", None) is not None
            and fn.keeps_all(flags))  # type: ignore[attr-defined]
    return found


_SKIPPED: dict[tuple[bool, ...], frozenset[int]] = {}


@dataclasses.dataclass
class PoolVerdict:
    """One pool's fate for one request."""

    pool: str
    count: int
    #: First rule that rejected the pool; None when it could serve.
    rejected_by: str | None
    detail: str = ""


@dataclasses.dataclass
class RequestExplanation:
    """Why one request can or cannot be served."""

    request_id: str | None
    count: int
    available: int
    satisfied: bool
    pools: list[PoolVerdict]

    def __str__(self) -> str:
        head = "request %s: %d wanted, %d usable -> %s" % (
            self.request_id, self.count, self.available,
            "OK" if self.satisfied else "NOT SATISFIED")
        lines = [head] + [
            "  %s (free %d): %s%s" % (
                v.pool, v.count, v.rejected_by or "usable",
                " [%s]" % v.detail if v.detail else "")
            for v in self.pools]
        return "\n".join(lines)


def _detail(p: pool.Pool, reason: str) -> str:
    if isinstance(p, pool.VgpuPool) and reason in (PIPELINE[4][0],
                                                   PIPELINE[5][0],
                                                   PIPELINE[6][0]):
        return p.reason_empty()
    return ""


def explain_request(ctx: Context, pools: list[pool.Pool]
                    ) -> RequestExplanation:
    """Run the whole pipeline, recording each pool's first rejecting rule."""
    verdict: dict[int, PoolVerdict] = {
        id(p): PoolVerdict(p.label(), p.count(), None) for p in pools}
    left = pools
    for reason, fn in PIPELINE:
        kept = fn(ctx, left)
        kept_ids = {id(p) for p in kept}
        for p in left:
            if id(p) not in kept_ids:
                verdict[id(p)].rejected_by = reason
                verdict[id(p)].detail = _detail(p, reason)
        left = kept
    available = effective_count(left, ctx)
    return RequestExplanation(
        ctx.request.request_id, ctx.request.count, available,
        available >= ctx.request.count, [verdict[id(p)] for p in pools])
