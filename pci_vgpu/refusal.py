"""A refused claim, said the way an operator reads it: one line.

The pools' own error (``PCI device request <uuid> x1 failed: ... 0 usable``)
names a request id nobody typed.  An operator needs the flavor, the alias
and vGPU type it asked for, the host, and for each pool that could have
served it the first rule that rejected it (the ``flavor explain`` verdict)
and what is free there.  Pools of other devices (another vendor/product, a
whole GPU for a vGPU request) are counted by rule rather than listed one by
one: the line stays readable and every pool is still accounted for.
"""

from __future__ import annotations

import collections
import shlex
import typing as ty

from pci_vgpu import vgpu_types

#: Verdicts that only say a pool is of another kind of device.
_OTHER_DEVICES = ("vendor_id/product_id/tags do not match the request spec",
                  "vGPU request vs whole-device pool (a request with vgpu_types uses "
                  "only vGPU pools, one without only whole devices)")


def _request_words(req: ty.Any) -> str:
    spec = (getattr(req, "spec", None) or [{}])[0]
    types = sorted(vgpu_types.vgpu_types_of(spec)) if isinstance(spec, dict) else []
    what = "vGPU type %s" % " or ".join(types) if types else "a whole device"
    ids = "%s:%s" % (spec.get("vendor_id", "*"), spec.get("product_id", "*")) \
        if isinstance(spec, dict) else "*:*"
    return "alias %s x%d (%s of %s)" % (getattr(req, "alias_name", None) or "?",
                                       getattr(req, "count", 0), what, ids)


def _pool_words(verdict: ty.Any) -> str:
    rule = verdict.rejected_by or "usable"
    detail = " (%s)" % verdict.detail if verdict.detail else ""
    return "%s: %s%s, %d free" % (verdict.pool, rule, detail, verdict.count)


def describe(requests: ty.Sequence[ty.Any], explanation: ty.Any,
             flavor: str | None = None) -> str:
    """Every unsatisfied request with its pools' verdicts."""
    by_id = {getattr(r, "request_id", None): r for r in requests}
    parts = []
    for req_exp in explanation.requests:
        if req_exp.satisfied:
            continue
        req = by_id.get(req_exp.request_id)
        head = "%s can use %d of %d" % (_request_words(req) if req is not None
                                        else "request %s" % req_exp.request_id,
                                        req_exp.available, req_exp.count)
        near = [_pool_words(v) for v in req_exp.pools if v.rejected_by not in _OTHER_DEVICES]
        others = collections.Counter(v.rejected_by for v in req_exp.pools
                                     if v.rejected_by in _OTHER_DEVICES)
        tail = ["%d other pool(s): %s" % (n, rule) for rule, n in sorted(others.items())]
        parts.append("%s -- %s" % (head, "; ".join(near + tail) or "the host has no pool"))
    text = " | ".join(parts) or "the pools changed while claiming; try again"
    return "flavor %s: %s" % (flavor, text) if flavor else text


def explain_command(flavor: str | None, numa_node: int | None) -> str:
    """The ``flavor explain`` arguments that show the same verdicts."""
    words = [shlex.quote(flavor or "FLAVOR")]
    if numa_node is not None:
        words.append("--numa-node %d" % numa_node)
    return " ".join(words)
