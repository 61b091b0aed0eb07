"""Pure vGPU capacity rules: how a GPU's vGPU types share it.

No objects, no I/O: plain data in, plain data out, so that pci_vgpu's
``PciDeviceStats`` and Nova's own (in the patch series) call the very same
functions instead of keeping two copies of the rules.

A GPU is summarised by a :class:`GpuState`:

* ``max_instances[T]``: instances of type ``T`` the *empty* GPU can host
  (driver-reported ``vgpu_types[T]["max"]``);
* ``existing[T]``: vGPUs of type ``T`` that exist on the GPU now, in use or
  free (a free existing mdev is reusable capacity, and it still occupies the
  GPU, so it takes part in the sharing rule);
* ``in_use[T]``: of those, how many are claimed or allocated;
* ``whole``: what the GPU itself is doing as a whole PCI device.

Sharing rules (``sharing``), as the hardware does it:

``one-type``  time-sliced GPUs (NVIDIA): once a vGPU of type A exists, other
              types have no room until the GPU is empty again.  The lock is
              decided by what exists, not by configuration.
``budget``    types mix: the GPU has a *capacity* of one or more resources
              and each instance of ``T`` takes ``sizes[T]`` of them; a new
              vGPU fits while every resource it takes has room, and never
              beyond ``max_instances[T]``.  Integers only, no floats.

Budgets, as real drivers keep them (see :mod:`pci_vgpu.vgpu_sizes` for where
the numbers come from):

* Intel GVT-g: aperture (low GM), hidden GM and fence registers; a type
  takes a fixed amount of each (its sysfs description says which);
* the kernel's mbochs sample: one video-memory budget in MB (module
  parameter ``count``), types of 4/16/64 MB that need not divide it;
* a GPU-sharing scheduler's model: 1000 milli-GPUs, any share of them;
* no sizes known: the *1/max rule* -- each instance of ``T`` takes
  ``1/max_instances[T]`` of the GPU, expressed in integers as a capacity of
  ``lcm(max)`` units of which ``T`` takes ``lcm(max) / max[T]``.  Exact for
  mtty (ports), mdpy (one count per parent) and any budget whose sizes divide
  it evenly.

And across both: a GPU given whole has no vGPU capacity; a GPU with any vGPU
in use cannot be given whole.
"""

from __future__ import annotations

import dataclasses
import fractions
import math
import typing as ty

from pci_vgpu import pool_errors

ONE_TYPE = "one-type"
BUDGET = "budget"
SHARING_MODES = (ONE_TYPE, BUDGET)

#: The GPU device is tracked and free to be given whole.
WHOLE_FREE = "free"
#: The GPU is claimed/allocated whole: no vGPU can live on it.
WHOLE_USED = "used"
#: The GPU cannot be given whole (held by a relative) but may host vGPUs.
WHOLE_BLOCKED = "blocked"
#: The GPU device itself is not a tracked assignable device.
WHOLE_ABSENT = "absent"
WHOLE_STATES = (WHOLE_FREE, WHOLE_USED, WHOLE_BLOCKED, WHOLE_ABSENT)

PACK = "pack"
SPREAD = "spread"
#: Ranks GPUs by the fragmentation a new vGPU adds
#: (:mod:`pci_vgpu.fragmentation`); plain orderings here treat it as pack.
FRAGMENTATION = "fragmentation"
PLACEMENT_POLICIES = (PACK, SPREAD, FRAGMENTATION)


#: The one resource of the 1/max rule (no sizes known).
SHARE = "share"

Amounts = ty.Mapping[str, int]


@dataclasses.dataclass
class GpuState:
    """Capacity state of one GPU (or one NVIDIA vendor-VFIO VF)."""

    #: PCI address of the GPU; the identity of the state.
    address: str
    #: ``one-type`` or ``budget``.
    sharing: str
    #: type id -> instances of that type on the empty GPU (>= 1).
    max_instances: dict[str, int]
    #: type id -> vGPUs of that type that exist (free or in use).
    existing: dict[str, int] = dataclasses.field(default_factory=dict)
    #: type id -> vGPUs of that type claimed or allocated.
    in_use: dict[str, int] = dataclasses.field(default_factory=dict)
    #: One of :data:`WHOLE_STATES`.
    whole: str = WHOLE_ABSENT
    #: vGPUs that exist on the GPU with a type it does not offer here (a
    #: device_spec narrowed the types): their share is unknown, so while
    #: any exists nothing new is created (spares stay usable).
    foreign: int = 0
    #: Names of the budget's resources, sorted (``(SHARE,)``: 1/max rule).
    resources: tuple[str, ...] = ()
    #: What the empty GPU has of each resource, in ``resources`` order.
    capacity: tuple[int, ...] = ()
    #: type id -> what one instance takes of each resource.
    sizes: dict[str, tuple[int, ...]] = dataclasses.field(
        default_factory=dict)

    def __post_init__(self) -> None:
        if not self.resources:
            self.resources, self.capacity, self.sizes = _one_over_max(
                self.max_instances)

    def copy(self) -> GpuState:
        """Independent copy; cheaper than ``copy.deepcopy`` (flat dicts).

        The budget (resources, capacity, sizes) never changes: shared.
        """
        return GpuState(self.address, self.sharing, dict(self.max_instances),
                        dict(self.existing), dict(self.in_use), self.whole,
                        self.foreign, self.resources, self.capacity,
                        self.sizes)


def _one_over_max(max_instances: ty.Mapping[str, int]
                  ) -> tuple[tuple[str, ...], tuple[int, ...],
                             dict[str, tuple[int, ...]]]:
    """The 1/max rule in integers: ``lcm(max)`` units, ``T`` takes lcm/max."""
    units = math.lcm(*max_instances.values()) if max_instances else 1
    return ((SHARE,), (units,),
            {t: (units // m,) for t, m in max_instances.items()})


def new_gpu_state(address: str, sharing: str,
                  max_instances: ty.Mapping[str, ty.Any],
                  whole: str = WHOLE_ABSENT,
                  sizes: ty.Mapping[str, Amounts] | None = None,
                  capacity: Amounts | None = None) -> GpuState:
    """Build a validated, empty :class:`GpuState`.

    :param sizes: type id -> {resource: amount one instance takes}, for
        every type (a resource a type does not name, it does not take);
        None: the 1/max rule.
    :param capacity: {resource: amount the empty GPU has}; None derives it
        from the sizes as the smallest budget that the driver's
        ``max_instances`` imply (``max(max[T] * size[T])`` per resource:
        never more than the GPU has, exact when the smallest type's size
        divides the others').
    :raises: InvalidVgpuSharing for an unknown sharing mode,
        InvalidVgpuMaxInstances for a max that is not an integer >= 1,
        InvalidVgpuSize for sizes or a capacity that are not whole amounts,
        miss a type, or leave a type no room on the empty GPU.
    """
    if sharing not in SHARING_MODES:
        raise pool_errors.InvalidVgpuSharing(
            address=address, value=sharing, allowed=", ".join(SHARING_MODES))
    maxes: dict[str, int] = {}
    for type_id, value in max_instances.items():
        if not _is_count(value) or value < 1:
            raise pool_errors.InvalidVgpuMaxInstances(
                address=address, vgpu_type=type_id, value=value)
        maxes[type_id] = value
    if sizes is None:
        if capacity is not None:
            raise pool_errors.InvalidVgpuSize(
                address=address, vgpu_type="(all)", value=capacity,
                reason="a capacity needs the size of every type")
        return GpuState(address, sharing, maxes, whole=whole)
    resources, vectors = _size_vectors(address, maxes, sizes)
    total = _capacity_vector(address, resources, maxes, vectors, capacity)
    return GpuState(address, sharing, maxes, whole=whole,
                    resources=resources, capacity=total, sizes=vectors)


def _is_count(value: ty.Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _size_vectors(address: str, maxes: dict[str, int],
                  sizes: ty.Mapping[str, Amounts]
                  ) -> tuple[tuple[str, ...], dict[str, tuple[int, ...]]]:
    """Sizes as vectors over the sorted union of resources.

    :raises: InvalidVgpuSize.
    """
    for type_id in maxes:
        size = sizes.get(type_id)
        if not isinstance(size, ty.Mapping) or not size or not all(
                isinstance(r, str) and r and _is_count(n) and n >= 0
                for r, n in size.items()) or not any(size.values()):
            raise pool_errors.InvalidVgpuSize(
                address=address, vgpu_type=type_id, value=size,
                reason="allowed: {resource: integer >= 0}, not all 0")
    resources = tuple(sorted({r for t in maxes for r in sizes[t]}))
    return resources, {t: tuple(sizes[t].get(r, 0) for r in resources)
                       for t in maxes}


def _capacity_vector(address: str, resources: tuple[str, ...],
                     maxes: dict[str, int],
                     sizes: dict[str, tuple[int, ...]],
                     capacity: Amounts | None) -> tuple[int, ...]:
    """The budget, given or derived; every type fits once on the empty GPU.

    :raises: InvalidVgpuSize.
    """
    if capacity is None:
        return tuple(max(maxes[t] * sizes[t][i] for t in maxes)
                     for i in range(len(resources)))
    if not isinstance(capacity, ty.Mapping) or set(capacity) != set(
            resources) or not all(_is_count(n) and n >= 1
                                  for n in capacity.values()):
        raise pool_errors.InvalidVgpuSize(
            address=address, vgpu_type="(capacity)", value=capacity,
            reason="allowed: {resource: integer >= 1} for exactly the "
                   "resources the sizes name (%s)" % ", ".join(resources))
    total = tuple(capacity[r] for r in resources)
    for type_id, size in sizes.items():
        if any(n > c for n, c in zip(size, total)):
            raise pool_errors.InvalidVgpuSize(
                address=address, vgpu_type=type_id, value=dict(
                    zip(resources, size)),
                reason="larger than the GPU's capacity %s" % dict(capacity))
    return total


def spare(state: GpuState, type_id: str) -> int:
    """Existing free vGPUs of ``type_id`` (reusable without creating one)."""
    return max(0, state.existing.get(type_id, 0) - state.in_use.get(type_id, 0))


def total_in_use(state: GpuState) -> int:
    """vGPUs of any type claimed or allocated on the GPU."""
    return sum(state.in_use.values())


def used(state: GpuState) -> tuple[int, ...]:
    """What existing vGPUs take of each resource of the budget."""
    if len(state.resources) == 1:  # the common case, kept cheap
        return (sum(count * state.sizes[t][0]
                    for t, count in state.existing.items() if count),)
    total = [0] * len(state.resources)
    for type_id, count in state.existing.items():
        if count:
            for i, n in enumerate(state.sizes[type_id]):
                total[i] += count * n
    return tuple(total)


def occupied(state: GpuState) -> fractions.Fraction:
    """Fill level of the GPU: its fullest resource (0 = empty, 1 = full).

    The 1/max rule makes this the sum of ``existing[T] / max[T]``, also the
    right fill level for one-type GPUs since only one type exists there.
    """
    return max(fractions.Fraction(n, c)
               for n, c in zip(used(state), state.capacity))


def room(state: GpuState, type_id: str) -> int:
    """New instances of ``type_id`` the budget's free resources allow."""
    size = state.sizes[type_id]
    taken = used(state)
    return min((c - u) // n
               for c, u, n in zip(state.capacity, taken, size) if n)


def locking_type(state: GpuState, type_id: str) -> str | None:
    """The other type that keeps ``type_id`` off a one-type GPU, if any."""
    if state.sharing != ONE_TYPE:
        return None
    found = None
    for other, count in state.existing.items():  # smallest name, no sort
        if count and other != type_id and (found is None or other < found):
            found = other
    return found


def vgpus_blocked(state: GpuState) -> bool:
    """True when the GPU is given whole, so no vGPU may use it."""
    return state.whole == WHOLE_USED


def creatable(state: GpuState, type_id: str) -> int:
    """New vGPUs of ``type_id`` that could still be created on the GPU."""
    maximum = state.max_instances.get(type_id, 0)
    if not maximum or vgpus_blocked(state) or state.foreign:
        return 0
    if state.sharing == ONE_TYPE:
        if locking_type(state, type_id) is not None:
            return 0
        return max(0, maximum - state.existing.get(type_id, 0))
    return max(0, min(room(state, type_id),
                      maximum - state.existing.get(type_id, 0)))


def free_instances(state: GpuState, type_id: str) -> int:
    """vGPUs of ``type_id`` the GPU can hand out now: spare + creatable."""
    # spare() + creatable(), inlined: this is the count of every vGPU pool,
    # read for each candidate of each request (tests pin the two equal).
    maximum = state.max_instances.get(type_id)
    if maximum is None or state.whole == WHOLE_USED:
        return 0
    existing = state.existing.get(type_id, 0)
    free = existing - state.in_use.get(type_id, 0)
    if free < 0:
        free = 0
    if state.foreign:
        return free
    if state.sharing == ONE_TYPE:
        for other, count in state.existing.items():
            if count and other != type_id:
                return free  # locked by another type
        return free + max(0, maximum - existing)
    return free + max(0, min(room(state, type_id), maximum - existing))


def whole_assignable(state: GpuState) -> bool:
    """True when the GPU may be given whole: free and no vGPU in use."""
    return state.whole == WHOLE_FREE and total_in_use(state) == 0


def consume_instance(state: GpuState, type_id: str) -> bool:
    """Take one vGPU of ``type_id``; reuse a spare one before creating one.

    :returns: True when an existing spare vGPU was reused, False when a new
        one is counted as created.
    :raises: VgpuTypeNotSupported, VgpuCapacityExceeded.
    """
    if type_id not in state.max_instances:
        raise pool_errors.VgpuTypeNotSupported(
            vgpu_type=type_id, address=state.address,
            supported=", ".join(sorted(state.max_instances)) or "none")
    if free_instances(state, type_id) < 1:
        raise pool_errors.VgpuCapacityExceeded(
            vgpu_type=type_id, address=state.address,
            reason=explain_no_capacity(state, type_id))
    reused = spare(state, type_id) > 0
    if not reused:
        state.existing[type_id] = state.existing.get(type_id, 0) + 1
    state.in_use[type_id] = state.in_use.get(type_id, 0) + 1
    return reused


def release_instance(state: GpuState, type_id: str, destroy: bool) -> None:
    """Give back one in-use vGPU of ``type_id``.

    :param destroy: the vGPU stops existing (a created mdev that is deleted,
        or a consume undone); otherwise it stays as a spare.
    :raises: VgpuReleaseUnderflow when none of that type is in use.
    """
    if state.in_use.get(type_id, 0) < 1:
        raise pool_errors.VgpuReleaseUnderflow(
            address=state.address, vgpu_type=type_id)
    state.in_use[type_id] -= 1
    if destroy:
        state.existing[type_id] -= 1


def explain_no_capacity(state: GpuState, type_id: str) -> str:
    """A sentence saying why ``type_id`` has no free instance on the GPU."""
    if type_id not in state.max_instances:
        return "type not supported by the GPU"
    if vgpus_blocked(state):
        return "the GPU is given whole to a guest"
    if state.foreign and not spare(state, type_id):
        return ("the GPU hosts %d vGPU(s) of a type not offered here"
                % state.foreign)
    other = locking_type(state, type_id)
    if other is not None:
        return ("the GPU hosts vGPU type %s and can host one type at a time"
                % other)
    if free_instances(state, type_id) >= 1:
        return "it has free instances"
    if state.sharing == BUDGET and state.resources != (SHARE,) and \
            room(state, type_id) < 1:
        return "it needs %s, %s left of %s" % (
            _amounts(state.resources, state.sizes[type_id]),
            _amounts(state.resources, tuple(
                c - u for c, u in zip(state.capacity, used(state)))),
            _amounts(state.resources, state.capacity))
    return ("all %d instance(s) in use (%s sharing)"
            % (state.max_instances[type_id], state.sharing))


def _amounts(resources: tuple[str, ...], amounts: tuple[int, ...]) -> str:
    return ", ".join("%d %s" % (n, r) for r, n in zip(resources, amounts))


def validate_policy(policy: str) -> str:
    """:raises: InvalidPlacementPolicy unless ``policy`` is one of
    :data:`PLACEMENT_POLICIES`."""
    if policy not in PLACEMENT_POLICIES:
        raise pool_errors.InvalidPlacementPolicy(
            value=policy, allowed=", ".join(PLACEMENT_POLICIES))
    return policy


def placement_key(state: GpuState, policy: str
                  ) -> tuple[float | fractions.Fraction, str]:
    """Sort key putting the preferred GPU first for ``policy``.

    ``pack`` fills the fullest GPU first (XenServer depth_first), ``spread``
    uses the emptiest first (breadth_first); the address breaks ties so the
    order is deterministic for the same state.  ``fragmentation`` needs the
    requested type (see ``pci_vgpu.fragmentation.gpu_key``); without it,
    it orders as pack, the tie-break that policy uses too.
    """
    fill = fill_level(state)
    return (fill if policy == SPREAD else -fill, state.address)


#: Capacities below this compare exactly as floats (see :func:`fill_level`).
_EXACT_FLOAT_CAPACITY = 1 << 26


def fill_level(state: GpuState) -> float | fractions.Fraction:
    """:func:`occupied` in a form that is cheap to compare.

    A float where that orders GPUs exactly as the fraction does: for
    integers ``0 <= u <= c < 2**26`` two different fractions ``u/c`` differ
    by more than ``2**-52``, more than the rounding of both divisions, and
    equal fractions round to the same float.  Otherwise the fraction.
    Placement sorts candidates by it on every request, and building a
    ``Fraction`` per candidate was most of that sort.
    """
    if len(state.capacity) == 1:  # the common case: used() inlined
        c, sizes, u = state.capacity[0], state.sizes, 0
        for type_id, count in state.existing.items():
            if count:
                u += count * sizes[type_id][0]
        if 0 <= u <= c < _EXACT_FLOAT_CAPACITY:
            return u / c
        return occupied(state)
    fill = 0.0
    for u, c in zip(used(state), state.capacity):
        if c >= _EXACT_FLOAT_CAPACITY or u > c or u < 0:
            return occupied(state)
        if u / c > fill:
            fill = u / c
    return fill


def order_for_policy(states: ty.Iterable[GpuState],
                     policy: str) -> list[GpuState]:
    """GPUs in the order a ``policy`` placement tries them."""
    validate_policy(policy)
    return sorted(states, key=lambda s: placement_key(s, policy))
