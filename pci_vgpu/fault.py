"""Test-only fault hook: kill this process with SIGKILL at a named point.

The fault-injection suite (``tests/fault/``) proves that a ``kill -9`` at
any step of a flow, followed by ``pci-vgpu host reconcile --apply``, leaves
the database and the host consistent.  "Any step" needs a way to stop a
process exactly between two steps; timers alone hit the same few places.

``PCI_VGPU_FAULT=<point>[@<n>][,...]`` names the points: when the process
reaches ``<point>`` for the ``n``-th time (default 1) it sends itself
SIGKILL -- no cleanup, no ``finally``, no ``atexit``, as an OOM kill or a
power cut would.  Points are listed in :data:`POINTS` (a name not there
is a bug in the caller and raises).  With the variable unset,
:func:`point` costs one dictionary lookup.  Never set it in production.
"""

from __future__ import annotations

import os
import signal

ENV = "PCI_VGPU_FAULT"

#: Every named point, in the order a create/delete/reconcile reaches them.
POINTS: tuple[str, ...] = (
    "create:claimed",          # the claim is committed, no vGPU yet
    "create:vgpu-prepared",    # after each vGPU is created on the host
    "create:spawned",          # the guest runs, the allocation is not recorded
    "create:allocated",        # the allocation is recorded, before the reply
    "rollback:started",        # a failed create or attach is being undone
    "delete:destroyed",        # the guest is gone, its vGPUs are not
    "delete:vgpu-released",    # after each vGPU is removed
    "attach:claimed",          # the extra claim is committed
    "attach:attached",         # devices are plugged, not yet recorded
    "reconcile:fixed",         # after each fix of host reconcile --apply
    "host:saving",             # an embedded host is half-way writing its state
)

_parsed: tuple[str, dict[str, int]] = ("", {})
_seen: dict[str, int] = {}


class UnknownFaultPoint(ValueError):
    """A caller named a point that :data:`POINTS` does not list."""


def _armed() -> dict[str, int]:
    global _parsed
    raw = os.environ.get(ENV, "")
    if raw != _parsed[0]:
        wanted: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in raw.split(","))):
            name, _, nth = item.partition("@")
            wanted[name] = int(nth) if nth.isdigit() and int(nth) > 0 else 1
        _parsed = (raw, wanted)
        _seen.clear()
    return _parsed[1]


def point(name: str) -> None:
    """Die here (SIGKILL) if ``PCI_VGPU_FAULT`` arms ``name``.

    :raises: UnknownFaultPoint for a name not in :data:`POINTS`.
    """
    armed = _armed()
    if not armed:
        return
    if name not in POINTS:
        raise UnknownFaultPoint("unknown fault point %r; known: %s" % (name, ", ".join(POINTS)))
    if name not in armed:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] >= armed[name]:
        os.kill(os.getpid(), signal.SIGKILL)
