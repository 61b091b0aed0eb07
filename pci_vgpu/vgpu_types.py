"""vGPU type names in aliases and request specs: the one implementation.

pci_vgpu's own alias parser (:mod:`pci_vgpu.request`) and the Nova patch
series (``nova/pci/request.py``, ``nova/pci/vgpu.py``) both need to check a
type name, merge an alias' two spellings of its types and encode/decode the
request spec value.  They call this module so that those rules exist once.

Nova cannot import :mod:`pci_vgpu.request`: it pulls in
:mod:`pci_vgpu.objects`, whose oslo.versionedobjects registrations would
clash with Nova's own.  So this module imports nothing but
:mod:`pci_vgpu.exception` (itself free of objects) and the standard library;
a test holds it to that.

An alias names its types as ``"vgpu_types": "t"`` or ``[...]``, or inside
``"capabilities": {"vgpu_types": ...}``; the request spec stores them as
``spec["vgpu_types"]`` = the sorted JSON list of names, because Nova's spec
values are strings.
"""

from __future__ import annotations

import json
import re
import typing as ty

from pci_vgpu import exception

VGPU_TYPES_TAG = "vgpu_types"
#: How the nested spelling is named in error messages.
CAPABILITIES_KEY = "capabilities.vgpu_types"

MAX_TYPE_NAME = 128
_TYPE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.:,+\-@()]*")


class VgpuTypesInvalid(exception.Invalid):
    """vGPU types given in configuration (alias, device_spec) are unusable.

    ``key`` (which spelling), ``value`` (the offending value) and ``reason``
    are kept as attributes so that a caller can re-word the error for its
    own context (pci_vgpu's PciAliasInvalidKey, Nova's PciInvalidAlias or
    PciConfigInvalidSpec) without parsing the message.
    """

    msg_fmt = "%(key)s %(value)r: %(reason)s"

    @property
    def key(self) -> str:
        return ty.cast(str, self.kwargs["key"])

    @property
    def value(self) -> ty.Any:
        return self.kwargs["value"]

    @property
    def reason(self) -> str:
        return ty.cast(str, self.kwargs["reason"])


class VgpuTypesMalformed(VgpuTypesInvalid):
    """The value is neither a type name nor a non-empty list of them."""


class VgpuTypeNameInvalid(VgpuTypesInvalid):
    """One of the names breaks :func:`validate_vgpu_type_name`."""


class VgpuTypesConflict(VgpuTypesInvalid):
    """Both spellings are given and name different types."""


def validate_vgpu_type_name(name: ty.Any) -> str:
    """Return ``name`` if it is a safe vGPU type name.

    Type names end up in sysfs paths and XML, so anything that could climb a
    path or break a line is refused: letters, digits, space and
    ``_ . : , + - @ ( )``, starting with a letter or digit, 1-128 characters,
    no ``/`` and no ``..``.

    :raises: InvalidVgpuTypeName naming the value and the rule it breaks.
    """
    reason = _type_name_problem(name)
    if reason:
        raise exception.InvalidVgpuTypeName(name=name, reason=reason)
    return ty.cast(str, name)


def _type_name_problem(name: ty.Any) -> str | None:
    if not isinstance(name, str):
        return "not a string"
    if not name:
        return "empty"
    if len(name) > MAX_TYPE_NAME:
        return "longer than %d characters" % MAX_TYPE_NAME
    if "/" in name:
        return "contains '/'"
    if ".." in name:
        return "contains '..'"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a control character"
    if not name[0].isascii() or not name[0].isalnum():
        return "does not start with a letter or digit"
    if not _TYPE_NAME_RE.fullmatch(name):
        bad = next(c for c in name if not _TYPE_NAME_RE.fullmatch("a" + c))
        return "contains %r" % bad
    return None


def encode_vgpu_types(names: ty.Iterable[str]) -> str:
    """The spec value for a set of acceptable types: sorted JSON list.

    Sorted and de-duplicated so that equal sets give equal specs, whatever
    order or spelling the alias used.
    """
    return json.dumps(sorted(set(names)))


def vgpu_types_of(spec: ty.Mapping[str, ty.Any]) -> frozenset[str]:
    """Decode ``spec['vgpu_types']``; empty when the spec is not a vGPU one.

    :raises: InvalidVgpuTypesSpec if the value is not a JSON list of names.
    """
    raw = spec.get(VGPU_TYPES_TAG)
    if raw is None:
        return frozenset()
    try:
        value = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise exception.InvalidVgpuTypesSpec(value=raw, reason=str(exc))
    if not isinstance(value, list) or not all(
            isinstance(v, str) for v in value):
        raise exception.InvalidVgpuTypesSpec(
            value=raw, reason="not a list of strings")
    return frozenset(value)


def type_names(value: ty.Any, key: str = VGPU_TYPES_TAG) -> frozenset[str]:
    """The validated names of one spelling (a name, a list or None).

    Used for each spelling of an alias and for a device_spec's
    ``vgpu_types``; ``key`` names the spelling in errors.

    :raises: VgpuTypesMalformed if ``value`` is neither a name nor a
        non-empty list; VgpuTypeNameInvalid naming the first bad name.
    """
    if value is None:
        return frozenset()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names:
        raise VgpuTypesMalformed(
            key=key, value=value,
            reason="must be a vGPU type name or a non-empty list of them")
    for name in names:
        try:
            validate_vgpu_type_name(name)
        except exception.InvalidVgpuTypeName as exc:
            raise VgpuTypeNameInvalid(
                key=key, value=name, reason=exc.format_message()) from exc
    return frozenset(names)


def merge_alias_vgpu_types(top: ty.Any, nested: ty.Any) -> frozenset[str]:
    """Merge an alias' ``vgpu_types`` and ``capabilities.vgpu_types``.

    Either may be absent (None); when both are given they must name the same
    set of types, because silently preferring one would hide a typo in the
    other.  An empty result means the alias is not a vGPU alias.

    :raises: a VgpuTypesInvalid subclass: malformed value, bad name
        (top-level spelling checked first) or the two spellings disagree.
    """
    top_set = type_names(top, VGPU_TYPES_TAG)
    nested_set = type_names(nested, CAPABILITIES_KEY)
    if top is not None and nested is not None and top_set != nested_set:
        raise VgpuTypesConflict(
            key=CAPABILITIES_KEY, value=nested,
            reason="disagrees with vgpu_types %r; give the types once"
            % (top,))
    return top_set or nested_set
