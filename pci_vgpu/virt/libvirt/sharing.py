"""How the vGPU types of one GPU share it: the per-vendor data table.

Neither libvirt nor sysfs says whether a GPU can mix types.  The rule is a
property of the vendor's host driver, so it lives here, in one table, instead
of ``if vendor == ...`` branches across the driver:

=======  ==========  =====================================================
vendor   sharing     ``max`` (instances of a type on the *empty* GPU)
=======  ==========  =====================================================
10de     one-type    ``max_instance=N`` in the sysfs type description (the
                     NVIDIA host driver writes it); else derived (below)
8086     budget      the type id's ``_N`` suffix (``i915-GVTg_V5_4`` -> 4:
                     the type takes 1/N of the aperture); else derived
other    observed    derived
=======  ==========  =====================================================

*Observed* (vendors not in the table): if the GPU holds mdevs of one type
and another type still has available instances, the types mix ("budget");
otherwise "one-type", the rule every known mdev driver but GVT-g follows.

*Derived* max: ``available + existing mdevs of that type on that GPU`` --
exact for a one-type GPU that holds no mdev of another type and for a GPU
without mdevs.  When it cannot be exact (another type is in use, so libvirt
reports 0) the driver keeps the largest value it has derived for that
(GPU, type) since start, see :class:`MaxMemory`.
"""

from __future__ import annotations

import dataclasses
import re
import typing as ty

ONE_TYPE = "one-type"
BUDGET = "budget"

_NVIDIA_MAX_RE = re.compile(r"max_instance=(\d+)")
_SUFFIX_MAX_RE = re.compile(r"_(\d+)$")


def _nvidia_max(type_id: str, description: str | None) -> int | None:
    match = _NVIDIA_MAX_RE.search(description or "")
    return int(match.group(1)) if match else None


def _suffix_max(type_id: str, description: str | None) -> int | None:
    match = _SUFFIX_MAX_RE.search(type_id)
    return int(match.group(1)) if match else None


@dataclasses.dataclass(frozen=True)
class VendorRule:
    """What one vendor's mdev host driver does."""

    sharing: str | None
    #: Explicit max for a type from (type id, sysfs description), if known.
    explicit_max: ty.Callable[[str, str | None], int | None]


#: The one place that knows vendor behaviour.  Keys are PCI vendor ids.
VENDOR_RULES: dict[str, VendorRule] = {
    "10de": VendorRule(sharing=ONE_TYPE, explicit_max=_nvidia_max),
    "8086": VendorRule(sharing=BUDGET, explicit_max=_suffix_max),
}

_OBSERVED = VendorRule(sharing=None, explicit_max=lambda t, d: None)


def rule_for(vendor_id: str) -> VendorRule:
    return VENDOR_RULES.get(vendor_id, _OBSERVED)


def decide_sharing(vendor_id: str, available: ty.Mapping[str, int],
                   existing: ty.Mapping[str, int]) -> str:
    """Return the GPU's sharing rule from the table, else from observation.

    :param available: type id -> available instances now.
    :param existing: type id -> mdevs of that type on the GPU now.
    """
    rule = rule_for(vendor_id)
    if rule.sharing is not None:
        return rule.sharing
    in_use = {t for t, n in existing.items() if n > 0}
    others_open = any(n > 0 for t, n in available.items() if t not in in_use)
    return BUDGET if in_use and others_open else ONE_TYPE


class MaxMemory:
    """Largest derived max per (GPU address, type) seen since start.

    Covers the case where libvirt reports 0 available for a type only
    because another type is in use on a one-type GPU.
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}

    def remember(self, address: str, type_id: str, value: int) -> int:
        key = (address, type_id)
        best = max(value, self._seen.get(key, 0))
        self._seen[key] = best
        return best


def max_instances(vendor_id: str, address: str, type_id: str, *,
                  available: int, existing_same: int,
                  description: str | None, memory: MaxMemory) -> int:
    """Instances of ``type_id`` the empty GPU ``address`` can host."""
    explicit = rule_for(vendor_id).explicit_max(type_id, description)
    if explicit is not None:
        return memory.remember(address, type_id, explicit)
    return memory.remember(address, type_id, available + existing_same)
