"""Typed pools: what ``PciDeviceStats`` counts, and their Nova dict shape.

A pool groups interchangeable assignable units under a :class:`PoolKey`
(Nova's pool keys, devspec tags, the parent address and, for vGPUs, the
type).  Its count is always *derived* (STYLE 6), never kept beside the truth:

* :class:`DevicePool` (whole devices): the number of free devices it holds
  (compute side), or the count read from the scheduler's
  ``PciDevicePoolList``; for a vGPU-capable GPU's own pool, whether the GPU's
  :class:`~pci_vgpu.capacity.GpuState` allows giving it whole;
* :class:`VgpuPool`: :func:`pci_vgpu.capacity.free_instances` of its GPU for
  its type.

:func:`to_dict` / :func:`from_dict` convert to and from Nova's flat pool dict
(``PciDevicePool.to_dict``) in this one place.  vGPU pools carry the tags the
scheduler needs to apply the same rules without devices (``vgpu_*``).
"""

from __future__ import annotations

import dataclasses
import typing as ty

from pci_vgpu import capacity
from pci_vgpu import pool_errors

#: Nova's pool keys (``PciDeviceStats.pool_keys``) plus the parent address.
KEY_FIELDS = ("vendor_id", "product_id", "numa_node", "dev_type", "address")
#: Tags of a vGPU pool that describe its GPU state (scheduler side).
VGPU_TAGS = ("vgpu_type", "vgpu_names", "vgpu_max", "vgpu_existing",
             "vgpu_in_use", "vgpu_sharing", "vgpu_whole", "vgpu_backend",
             "vgpu_foreign", "vgpu_size", "vgpu_capacity")
#: Tag of a vGPU-capable GPU's whole-device pool: the GPU it is.
GPU_TAG = "vgpu_gpu"
#: Tag of a GPU's pools when the GPU has a parent (an SR-IOV VF GPU).
PARENT_TAG = "vgpu_parent"
#: Tag of vGPU pools: the host's placement policy, so that the scheduler
#: orders candidates (and so locks types) as the host will.
POLICY_TAG = "vgpu_placement"


@dataclasses.dataclass
class Family:
    """Scheduler side: parents and children taken within this view.

    The compute side derives parent/child exclusivity from device statuses;
    without devices, the scheduler records what it took so that a PF (or a
    GPU) and its VFs are not both handed out by the same ``apply``.
    """

    parents_taken: set[str] = dataclasses.field(default_factory=set)
    children_taken: dict[str, int] = dataclasses.field(default_factory=dict)

    def copy(self) -> Family:
        return Family(set(self.parents_taken), dict(self.children_taken))


@dataclasses.dataclass(frozen=True)
class PoolKey:
    """What makes two units interchangeable for a request."""

    vendor_id: str
    product_id: str
    numa_node: int | None
    dev_type: str
    #: ``parent_addr or address`` of a device (Nova 34); the GPU for vGPUs
    #: and for a vGPU-capable GPU's own pool.
    address: str | None
    #: devspec tags, sorted (key, value) pairs.
    tags: tuple[tuple[str, str | None], ...] = ()
    #: None for whole-device pools.
    vgpu_type: str | None = None

    def match_view(self) -> dict[str, ty.Any]:
        """Flat view for request-spec matching: Nova compares lower-cased."""
        view: dict[str, ty.Any] = {
            "vendor_id": self.vendor_id, "product_id": self.product_id,
            "numa_node": self.numa_node, "dev_type": self.dev_type,
            "address": self.address}
        view.update(self.tags)
        return {k: (v.lower() if isinstance(v, str) else v)
                for k, v in view.items()}


class Pool:
    """Common part of the two pool kinds."""

    is_vgpu = False

    def __init__(self, key: PoolKey, parent: str | None = None) -> None:
        self.key = key
        #: lower-cased key view, computed once (hot path of spec matching).
        self.view = key.match_view()
        #: Address whose use as a whole blocks this pool (PF of VFs).
        self.parent = parent
        #: Address this pool's device *is*, blocked when a child is taken.
        self.own: str | None = None
        #: Scheduler side only: what this view took (None: compute side).
        self.family: Family | None = None
        self._footprint: frozenset[ty.Any] | None = None

    def footprint(self) -> frozenset[ty.Any]:
        """What a take from this pool may change the count of: the pool
        itself, its GPU (all pools of that GPU), and its parent's and own
        address (relatives, blocked by parent/child exclusivity).  Pools
        whose footprints are disjoint cannot change each other's counts.
        Fixed once the pool is built (its relatives and GPU never change).
        """
        if self._footprint is None:
            gpu = getattr(self, "gpu", None)
            self._footprint = frozenset(
                t for t in (self.key, self.parent, self.own,
                            gpu.address if gpu is not None else None)
                if t is not None)
        return self._footprint

    def blocked(self) -> bool:
        """Scheduler side: a relative was taken by this view."""
        fam = self.family
        return fam is not None and (
            (self.parent is not None and self.parent in fam.parents_taken)
            or (self.own is not None
                and fam.children_taken.get(self.own, 0) > 0))

    def count(self) -> int:
        raise NotImplementedError

    def label(self) -> str:
        """Short name for logs and ``explain``."""
        key = self.key
        text = "%s:%s %s@%s numa=%s" % (key.vendor_id, key.product_id,
                                        key.dev_type, key.address,
                                        key.numa_node)
        return text + (" type=%s" % key.vgpu_type if key.vgpu_type else "")


class DevicePool(Pool):
    """Whole devices (plain PCI, PF, VF, or a vGPU-capable GPU itself)."""

    def __init__(self, key: PoolKey, gpu: capacity.GpuState | None = None,
                 stored: int | None = None, parent: str | None = None
                 ) -> None:
        is_vf = key.dev_type == "type-VF" and gpu is None
        super().__init__(key, key.address if is_vf else parent)
        self.own = None if is_vf else key.address
        #: The GPU this pool *is*, for a vGPU-capable GPU's own pool.
        self.gpu = gpu
        #: Scheduler side only: the serialized count of a plain pool.
        self.stored = stored
        #: Compute side: ident -> member device (free or not).
        self.members: dict[str, ty.Any] = {}
        #: Compute side: ident -> member that may be given now.
        self.free: dict[str, ty.Any] = {}

    def count(self) -> int:
        if self.family is not None and self.blocked():
            return 0
        if self.stored is not None:
            return self.stored
        if self.gpu is not None and not self.members:
            return 1 if capacity.whole_assignable(self.gpu) else 0
        return len(self.free)


class VgpuPool(Pool):
    """vGPUs of one type on one GPU."""

    is_vgpu = True

    def __init__(self, key: PoolKey, gpu: capacity.GpuState,
                 names: ty.Iterable[str], backend: str,
                 parent: str | None = None) -> None:
        super().__init__(key, parent)
        self.gpu = gpu
        self.vgpu_type: str = key.vgpu_type or ""
        #: Every way a request may name the type (id, name, identifier).
        self.names = frozenset(n for n in names if n)
        self.backend = backend

    def count(self) -> int:
        if self.family is not None and self.blocked():
            return 0
        return capacity.free_instances(self.gpu, self.vgpu_type)

    def reason_empty(self) -> str:
        return capacity.explain_no_capacity(self.gpu, self.vgpu_type)


def to_dict(pool: Pool) -> dict[str, ty.Any]:
    """Nova's flat pool dict (no devices): key fields, tags, count."""
    key = pool.key
    result: dict[str, ty.Any] = {f: getattr(key, f) for f in KEY_FIELDS}
    result.update(key.tags)
    if isinstance(pool, VgpuPool):
        gpu, vtype = pool.gpu, pool.vgpu_type
        result.update({
            "vgpu_type": vtype, "vgpu_names": ",".join(sorted(pool.names)),
            "vgpu_max": str(gpu.max_instances[vtype]),
            "vgpu_existing": str(gpu.existing.get(vtype, 0)),
            "vgpu_in_use": str(gpu.in_use.get(vtype, 0)),
            "vgpu_sharing": gpu.sharing, "vgpu_whole": gpu.whole,
            "vgpu_backend": pool.backend, "vgpu_foreign": str(gpu.foreign),
            "vgpu_size": _amounts_tag(gpu.resources, gpu.sizes[vtype]),
            "vgpu_capacity": _amounts_tag(gpu.resources, gpu.capacity)})
        if pool.parent:
            result[PARENT_TAG] = pool.parent
    elif isinstance(pool, DevicePool) and pool.gpu is not None:
        result[GPU_TAG] = pool.gpu.address
        if pool.parent:
            result[PARENT_TAG] = pool.parent
    result["count"] = pool.count()
    return result


def _int_tag(pool: dict[str, ty.Any], tag: str) -> int:
    value = pool.get(tag)
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = -1
    if number < 0:
        raise pool_errors.InvalidPoolTag(
            pool=pool.get("address"), tag=tag, value=value,
            reason="expected a non-negative integer")
    return number


def _amounts_tag(resources: tuple[str, ...], amounts: tuple[int, ...]) -> str:
    """``"aperture_mb=128,fences=4"``: a budget vector as a pool tag."""
    return ",".join("%s=%d" % pair for pair in zip(resources, amounts))


def _amounts_from_tag(pool: dict[str, ty.Any], tag: str) -> dict[str, int]:
    """:raises: InvalidPoolTag unless the tag reads ``name=int,...``."""
    value = pool.get(tag)
    try:
        pairs = [item.split("=") for item in str(value).split(",")]
        return {name: int(n) for name, n in pairs}
    except ValueError:
        raise pool_errors.InvalidPoolTag(
            pool=pool.get("address"), tag=tag, value=value,
            reason="expected resource=integer pairs joined by commas"
        ) from None


def _budget_from_dicts(pools: list[dict[str, ty.Any]]
                       ) -> dict[str, ty.Any]:
    """``new_gpu_state`` keywords for the sizes the pools carry, if any.

    Pools of an older compute service carry none: the 1/max rule.
    """
    if not all("vgpu_size" in p for p in pools) or \
            "vgpu_capacity" not in pools[0]:
        return {}
    return {"sizes": {str(p["vgpu_type"]): _amounts_from_tag(p, "vgpu_size")
                      for p in pools},
            "capacity": _amounts_from_tag(pools[0], "vgpu_capacity")}


def key_from_dict(pool: dict[str, ty.Any]) -> PoolKey:
    """The :class:`PoolKey` of a flat pool dict (tags = unknown keys)."""
    skip = set(KEY_FIELDS) | set(VGPU_TAGS) | {
        GPU_TAG, PARENT_TAG, POLICY_TAG, "count", "devices"}
    tags = tuple(sorted((k, v) for k, v in pool.items() if k not in skip))
    return PoolKey(str(pool.get("vendor_id")), str(pool.get("product_id")),
                   pool.get("numa_node"), str(pool.get("dev_type")),
                   pool.get("address"), tags, pool.get("vgpu_type"))


def gpu_from_dicts(address: str,
                   pools: list[dict[str, ty.Any]]) -> capacity.GpuState:
    """Rebuild a GPU's state from the tags of its vGPU pools.

    :raises: InvalidPoolTag, InvalidVgpuSharing, InvalidVgpuMaxInstances,
        InvalidVgpuSize.
    """
    first = pools[0]
    whole = first.get("vgpu_whole")
    if whole not in capacity.WHOLE_STATES:
        raise pool_errors.InvalidPoolTag(
            pool=address, tag="vgpu_whole", value=whole,
            reason="allowed: %s" % ", ".join(capacity.WHOLE_STATES))
    gpu = capacity.new_gpu_state(
        address, str(first.get("vgpu_sharing")),
        {str(p["vgpu_type"]): _int_tag(p, "vgpu_max") for p in pools},
        whole=whole, **_budget_from_dicts(pools))
    for p in pools:
        vtype = str(p["vgpu_type"])
        gpu.existing[vtype] = _int_tag(p, "vgpu_existing")
        gpu.in_use[vtype] = _int_tag(p, "vgpu_in_use")
    gpu.foreign = _int_tag(first, "vgpu_foreign") \
        if "vgpu_foreign" in first else 0
    return gpu


def pools_from_dicts(dicts: list[dict[str, ty.Any]]) -> list[Pool]:
    """Scheduler-side pools (counts, no devices) from flat pool dicts.

    vGPU pools of one GPU share one rebuilt :class:`GpuState`, and the
    GPU's own whole-device pool is tied to it, so that the same capacity
    rules apply without devices.
    """
    by_gpu: dict[str, list[dict[str, ty.Any]]] = {}
    for d in dicts:
        if d.get("vgpu_type"):
            by_gpu.setdefault(str(d.get("address")), []).append(d)
    gpus = {addr: gpu_from_dicts(addr, ds) for addr, ds in by_gpu.items()}
    result: list[Pool] = []
    for d in dicts:
        key = key_from_dict(d)
        if d.get("vgpu_type"):
            names = str(d.get("vgpu_names") or "").split(",")
            result.append(VgpuPool(key, gpus[str(d["address"])],
                                   names + [key.vgpu_type or ""],
                                   str(d.get("vgpu_backend") or "mdev"),
                                   d.get(PARENT_TAG)))
        elif d.get(GPU_TAG) in gpus:
            result.append(DevicePool(key, gpu=gpus[d[GPU_TAG]],
                                     parent=d.get(PARENT_TAG)))
        else:
            result.append(DevicePool(key, stored=_int_tag(d, "count")))
    return result
