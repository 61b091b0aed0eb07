"""Compute-side bookkeeping: devices -> pools and GPU states, incrementally.

The devices are the only truth.  Every tracked device leaves one recorded
*contribution* (is it busy for its parent, which GPU/type it occupies, is it
a reusable spare); a change to a device undoes its old contribution and
applies the new one, then re-derives whether the device, its parent and its
children may be given whole.  So each change costs O(relatives), never
O(devices), and pool counts are read off sets and GPU states in O(1).

Busy = claimed/allocated by the tracker, or *held*: picked by
``consume_requests`` and not yet claimed (so a second pick in the same
process cannot take it again).
"""

from __future__ import annotations

import dataclasses
import logging
import typing as ty

from pci_vgpu import capacity
from pci_vgpu import pool
from pci_vgpu import pool_devices as pd

LOG = logging.getLogger(__name__)

_UNSET = object()


#: What a device's contribution is derived from.
_CONTRIBUTION_FIELDS = pd.reader("status", "parent_addr", "dev_type",
                                 "extra_info")

#: What a whole device's availability is derived from (with the counters).
_REFRESH_FIELDS = pd.reader("status", "parent_addr")


class Contribution(ty.NamedTuple):
    """What one device adds to the counters; undone exactly on change.

    A named tuple (immutable like the frozen dataclass it was, built in a
    fraction of the time: one is built per device change).
    """

    key: str
    parent: str | None
    busy: bool
    gpu: str | None = None
    vgpu_type: str | None = None
    exists: bool = False
    in_use: bool = False


@dataclasses.dataclass
class Hold:
    """A device picked by consume_requests, not yet claimed."""

    whole: bool
    created: bool
    old_request_id: ty.Any
    old_vgpu_type: ty.Any = _UNSET


class PoolMap(ty.Protocol):
    """What the book needs of its owner's pool map."""

    def find_pool(self, key: pool.PoolKey) -> pool.Pool | None: ...

    def add_pool(self, p: pool.Pool) -> None: ...

    def drop_pool(self, p: pool.Pool) -> None: ...


class DeviceBook:
    """Devices, their relatives, GPU states and the pools they feed."""

    def __init__(self, owner: PoolMap) -> None:
        # The owner object, not its bound methods: copy.deepcopy of the
        # stats then yields a book wired to the *copied* pools.
        self._owner = owner
        self.devs: dict[str, ty.Any] = {}
        self.gpus: dict[str, capacity.GpuState] = {}
        self.held: dict[str, Hold] = {}
        self._pool_of: dict[str, pool.DevicePool] = {}
        self._vgpu_pools: dict[str, list[pool.VgpuPool]] = {}
        self._contrib: dict[str, Contribution] = {}
        self._children: dict[str, set[str]] = {}
        self._busy_children: dict[str, int] = {}
        self.spares: dict[tuple[str, str], dict[str, ty.Any]] = {}
        #: mdevs whose GPU is not tracked (yet): adopted when it arrives.
        self._pending: dict[str, dict[str, ty.Any]] = {}

    # -- queries ---------------------------------------------------------------

    def is_busy(self, key: str) -> bool:
        dev = self.devs.get(key)
        return dev is not None and (pd.attr(dev, "status") in pd.IN_USE
                                    or key in self.held)

    def pool_of(self, key: str) -> pool.DevicePool | None:
        return self._pool_of.get(key)

    def tracks(self, dev: ty.Any) -> bool:
        key = pd.ident(dev)
        return key in self.devs or key in self._pending.get(
            pd.attr(dev, "parent_addr") or "", {})

    # -- adding and removing ---------------------------------------------------

    def add_whole(self, dev: ty.Any, key_: pool.PoolKey) -> None:
        """Track a non-mdev device under the pool ``key_``.

        :raises: InvalidVgpuTypes, InvalidVgpuSharing,
            InvalidVgpuMaxInstances (nothing is tracked then).
        """
        key = pd.ident(dev)
        # Validated before anything is recorded: a bad inventory tracks
        # nothing.
        gpu = pd.new_gpu_state(dev) if pd.vgpu_types(dev) else None
        self.devs[key] = dev
        if gpu is not None:
            self.gpus[key] = gpu
            self._make_vgpu_pools(dev, key_, gpu)
        p = self._pool_for(key_, gpu)
        p.members[key] = dev
        self._pool_of[key] = p
        self._link(key, pd.attr(dev, "parent_addr"))
        self.recount(key)
        for child in list(self._pending.pop(key, {}).values()):
            self.add_mdev(child)

    def add_mdev(self, dev: ty.Any, key: str | None = None) -> None:
        """Track an mdev child; parked until its GPU is tracked.

        :param key: ``pd.ident(dev)``, when the caller has it already.
        """
        key = key or pd.ident(dev)
        parent = pd.attr(dev, "parent_addr")
        if parent not in self.gpus:
            self._pending.setdefault(parent or "", {})[key] = dev
            return
        self.devs[key] = dev
        self._link(key, parent)
        self.recount(key)

    def remove(self, key: str) -> None:
        """Forget a device; a GPU's mdevs wait for it to come back."""
        dev = self.devs[key]
        p = self._pool_of.pop(key, None)
        if p is not None:
            p.members.pop(key, None)
            p.free.pop(key, None)
            if not p.members:
                self._owner.drop_pool(p)
        if key in self.gpus:
            self._remove_gpu(key)
        del self.devs[key]
        self.held.pop(key, None)
        self.recount(key)
        siblings = self._children.get(pd.attr(dev, "parent_addr") or "")
        if siblings:
            siblings.discard(key)

    def _remove_gpu(self, key: str) -> None:
        for child in list(self._children.get(key, ())):
            dev = self.devs[child]
            if pd.is_mdev(dev):
                self.remove(child)
                self._pending.setdefault(key, {})[child] = dev
        for vp in self._vgpu_pools.pop(key, []):
            self._owner.drop_pool(vp)
        del self.gpus[key]

    def forget_pending(self, dev: ty.Any) -> None:
        self._pending.get(pd.attr(dev, "parent_addr") or "", {}).pop(
            pd.ident(dev), None)

    def _link(self, key: str, parent: str | None) -> None:
        if parent:
            self._children.setdefault(parent, set()).add(key)

    def _pool_for(self, key_: pool.PoolKey,
                  gpu: capacity.GpuState | None) -> pool.DevicePool:
        found = self._owner.find_pool(key_)
        if isinstance(found, pool.DevicePool):
            return found
        parent = pd.attr(self.devs[gpu.address], "parent_addr") \
            if gpu is not None else None
        p = pool.DevicePool(key_, gpu=gpu, parent=parent)
        self._owner.add_pool(p)
        return p

    def _make_vgpu_pools(self, dev: ty.Any, key_: pool.PoolKey,
                         gpu: capacity.GpuState) -> None:
        dev_type = "type-VF" if pd.is_nvidia_vf(dev) else pd.MDEV
        pools = []
        for type_id, entry in sorted(pd.vgpu_types(dev).items()):
            vkey = dataclasses.replace(key_, dev_type=dev_type,
                                       vgpu_type=type_id)
            vp = pool.VgpuPool(vkey, gpu, pd.type_names(type_id, entry),
                               pd.backend(dev), pd.attr(dev, "parent_addr"))
            self._owner.add_pool(vp)
            pools.append(vp)
        self._vgpu_pools[gpu.address] = pools

    # -- contributions ---------------------------------------------------------

    def recount(self, key: str) -> None:
        """Re-derive everything that depends on device ``key``."""
        old = self._contrib.get(key)
        dev = self.devs.get(key)
        new = self._contribution(key, dev) if dev is not None else None
        pools = self._pool_of  # _refresh(k) does nothing for k not in it
        if new is not None and new == old:
            # Same counters (a held device being claimed, say): what its
            # relatives derive from them cannot change; only the device
            # itself (its status) and, through is_busy, its children.
            if key in pools:
                self._refresh(key)
            for child in self._children.get(key, ()):
                if child in pools:
                    self._refresh(child)
            return
        if old is not None:
            del self._contrib[key]
            self._apply(old, -1)
        if new is not None:
            self._apply(new, +1)
            self._contrib[key] = new
        if key in pools:
            self._refresh(key)
        parent = old.parent if old is not None else None
        parent = parent or (new.parent if new is not None else None)
        # Each refresh derives one device from the counters alone, so the
        # order does not matter and a device is refreshed once (an mdev's
        # GPU is both its parent and its GPU).
        if old is not None and old.gpu and old.gpu != key and \
                old.gpu != parent:
            self._refresh(old.gpu)
        if parent != key and parent in pools:
            self._refresh(parent)
        for child in self._children.get(key, ()):
            if child in pools:
                self._refresh(child)

    def _contribution(self, key: str, dev: ty.Any) -> Contribution:
        status, parent, dev_type, info = _CONTRIBUTION_FIELDS(dev)
        busy = status in pd.IN_USE or key in self.held
        if dev_type == pd.MDEV:  # pd.is_mdev
            busy = busy or status == pd.UNAVAILABLE
            return Contribution(key, parent, busy, parent,
                                pd.vgpu_type_in(info), status not in pd.GONE,
                                busy)
        if key in self.gpus and pd.is_nvidia_vf(dev):
            given = pd.extra(dev, "vgpu_type")
            hold = self.held.get(key)
            as_vgpu = (hold is not None and not hold.whole) or (
                hold is None and status in pd.IN_USE and given is not None)
            current = pd.vgpu_type(dev)
            return Contribution(key, parent, busy, key, current,
                                current is not None, as_vgpu)
        return Contribution(key, parent, busy)

    def _apply(self, c: Contribution, sign: int) -> None:
        if c.busy and c.parent:
            self._busy_children[c.parent] = \
                self._busy_children.get(c.parent, 0) + sign
        gpu = self.gpus.get(c.gpu or "")
        if gpu is None or not c.exists:
            return
        if c.vgpu_type not in gpu.max_instances:
            # A type the GPU does not offer (narrowed by device_spec, or
            # unknown): it still occupies the GPU.
            gpu.foreign += sign
            return
        vtype = c.vgpu_type
        gpu.existing[vtype] = gpu.existing.get(vtype, 0) + sign
        if c.in_use:
            gpu.in_use[vtype] = gpu.in_use.get(vtype, 0) + sign
        else:
            spares = self.spares.setdefault((gpu.address, vtype), {})
            if sign > 0:
                spares[c.key] = self.devs[c.key]
            else:
                spares.pop(c.key, None)

    # -- whole-device availability ----------------------------------------

    def _refresh(self, key: str | None) -> None:
        """Re-derive whether whole device ``key`` may be given now."""
        p = self._pool_of.get(key or "")
        if p is None or key is None:
            return
        dev = self.devs[key]
        status, parent = _REFRESH_FIELDS(dev)
        parent_busy = bool(parent) and self.is_busy(parent)
        gpu = self.gpus.get(key)
        if gpu is not None:
            in_use = capacity.total_in_use(gpu)
            gpu.whole = self._whole_state(key, dev, status, parent_busy,
                                          in_use)
            # capacity.whole_assignable(gpu), the total counted once
            free = gpu.whole == capacity.WHOLE_FREE and in_use == 0
        else:
            free = (status == pd.AVAILABLE
                    and key not in self.held and not parent_busy
                    and not self._busy_children.get(key, 0))
        if free:
            p.free[key] = dev
        else:
            p.free.pop(key, None)

    def _whole_state(self, key: str, dev: ty.Any, status: str,
                     parent_busy: bool, in_use: int) -> str:
        """The GPU's ``whole`` state; ``in_use``: its vGPUs in use."""
        if pd.extra(dev, "virtual_parent") == "true":
            # A virtual mdev parent (the kernel's mtty) hosts vGPUs but is
            # no device a guest could be given (no PCI function to pass).
            return capacity.WHOLE_ABSENT
        contrib = self._contrib.get(key)
        if contrib is not None and contrib.in_use and contrib.gpu == key:
            return capacity.WHOLE_BLOCKED  # an NVIDIA VF used as a vGPU
        if status in pd.IN_USE or key in self.held or parent_busy:
            return capacity.WHOLE_USED  # busy (is_busy, status read once)
        if self._busy_children.get(key, 0) > in_use:
            return capacity.WHOLE_BLOCKED  # a VF of this GPU is in use
        if status != pd.AVAILABLE:
            # A VF that is its own vGPU cannot be used at all when its PF
            # holds it; a GPU marked by its vGPUs may still host more.
            return (capacity.WHOLE_USED if pd.is_nvidia_vf(dev)
                    else capacity.WHOLE_BLOCKED)
        return capacity.WHOLE_FREE
