"""What one vGPU of a type takes of its GPU, read from the driver's data.

:mod:`pci_vgpu.capacity` shares a budget GPU by *sizes* against a
*capacity* when it knows them, and by the 1/max rule otherwise.  This module
finds them, in this order, for a GPU's ``vgpu_types`` entries:

1. what the driver states: ``entry["size"]`` = ``{resource: amount}`` on
   every type and, optionally, the GPU's ``vgpu_capacity`` =
   ``{resource: amount}`` (a driver that knows its budget, or a model such
   as ``{"gpu_milli": 1000}``);
2. what the type's sysfs ``description`` says, for the drivers that write it
   in a known shape:

   ======================  ======================================  =========
   driver                  description                             resources
   ======================  ======================================  =========
   Intel GVT-g (kvmgt)     ``low_gm_size: 128MB`` /                aperture_mb,
                           ``high_gm_size: 512MB`` / ``fence: 4``  hidden_mb,
                                                                   fences
   kernel sample mbochs    ``virtual display, 16 MB video memory`` video_mb
   ======================  ======================================  =========

3. nothing: None, and the 1/max rule applies (exact for mtty ports, mdpy's
   per-parent count, and any budget whose sizes divide it).

Sizes count only when *every* offered type has one, and all from the same
source: a budget cannot be judged with some of its tenants unmeasured.  No
capacity stated: ``capacity.new_gpu_state`` derives it from the types' max
(the empty GPU's); :func:`capacity_from_available` derives it from what the
driver sees now, for a driver whose max may be stale.
"""

from __future__ import annotations

import re
import typing as ty

Amounts = dict[str, int]

_GVTG_RE = {
    "aperture_mb": re.compile(r"^low_gm_size:\s*(\d+)\s*MB\s*$", re.M),
    "hidden_mb": re.compile(r"^high_gm_size:\s*(\d+)\s*MB\s*$", re.M),
    "fences": re.compile(r"^fence:\s*(\d+)\s*$", re.M),
}
_MBOCHS_RE = re.compile(r"\b(\d+) MB video memory\b")


def gvtg_size(description: str) -> Amounts | None:
    """Aperture, hidden graphics memory and fences of a GVT-g type."""
    found = {r: rx.search(description) for r, rx in _GVTG_RE.items()}
    if not all(found.values()):
        return None
    return {r: int(m.group(1)) for r, m in found.items() if m is not None}


def mbochs_size(description: str) -> Amounts | None:
    """Video memory of a kernel mbochs type ("N MB video memory")."""
    match = _MBOCHS_RE.search(description)
    return {"video_mb": int(match.group(1))} if match else None


#: Description readers, tried in order; the first that fits every type wins.
DESCRIPTION_READERS: tuple[ty.Callable[[str], Amounts | None], ...] = (
    gvtg_size, mbochs_size)


def stated_size(entry: ty.Mapping[str, ty.Any]) -> Amounts | None:
    """The driver's own ``size`` of a type entry, as given (checked later
    by :func:`pci_vgpu.capacity.new_gpu_state`)."""
    size = entry.get("size")
    return ty.cast(Amounts, size) if size is not None else None


def sizes_of(types: ty.Mapping[str, ty.Mapping[str, ty.Any]]
             ) -> dict[str, Amounts] | None:
    """Sizes of every type from one source, or None for the 1/max rule.

    Stated sizes win when any type states one (a type missing it is then
    the driver's error, reported by ``capacity.new_gpu_state``).
    """
    if not types:
        return None
    if any(entry.get("size") is not None for entry in types.values()):
        return {t: stated_size(e) for t, e in types.items()}  # type: ignore[misc]
    for reader in DESCRIPTION_READERS:
        sizes = {t: reader(str(e.get("description") or ""))
                 for t, e in types.items()}
        if all(sizes.values()):
            return ty.cast(dict[str, Amounts], sizes)
    return None


def capacity_from_available(sizes: ty.Mapping[str, ty.Mapping[str, int]],
                            available: ty.Mapping[str, int],
                            existing: ty.Mapping[str, int]) -> Amounts:
    """A GPU's budget from what its driver says is free now.

    Per resource: what existing vGPUs take plus the most any one type's
    ``available`` instances take -- a lower bound of the true budget (the
    free part can hide a remainder smaller than every size), exact when the
    smallest type's size divides the others'.  For drivers (mbochs) whose
    per-type max cannot be read while other types hold part of the budget.
    """
    resources = sorted({r for s in sizes.values() for r in s})
    result: Amounts = {}
    for r in resources:
        taken = sum(n * sizes[t].get(r, 0) for t, n in existing.items()
                    if t in sizes)
        free = max((available.get(t, 0) * s.get(r, 0)
                    for t, s in sizes.items()), default=0)
        result[r] = taken + free
    return result
