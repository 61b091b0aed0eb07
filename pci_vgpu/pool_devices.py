"""Reading the facts the pools need from a ``PciDevice`` (or a look-alike).

Kept apart from the bookkeeping so that the rules "what is this device to
the pools" are in one screenful: identity, role (plain device, vGPU-capable
GPU, mdev child, NVIDIA vendor-VFIO VF), vGPU type, and busy-ness.  Only
attributes of ``doc/contract.rst`` are read; ``extra_info`` values are
strings (JSON for non-strings) as Nova stores them.
"""

from __future__ import annotations

import json
import operator
import sys
import typing as ty

from pci_vgpu import capacity
from pci_vgpu import pool_errors
from pci_vgpu import vgpu_sizes

AVAILABLE = "available"
#: An mdev in this status is held outside the tracker's claims (see
#: ``pci_vgpu.db.state``) or hidden by a GPU given whole: never a spare.
UNAVAILABLE = "unavailable"
IN_USE = ("claimed", "allocated")
GONE = ("removed", "deleted")
MDEV = "mdev"
NVIDIA_VF = "nvidia-vf"
#: extra_info keys a vGPU-capable device carries.
_NULLS = ("", "null", "None")


def attr(dev: ty.Any, name: str, default: ty.Any = None) -> ty.Any:
    """Field value of a versioned object or dict, ``default`` when unset.

    A versioned object keeps a set field's value in ``_obj_<name>`` and its
    property getter returns exactly that; reading it there first skips the
    getter's checks (a tracker round trip reads ~40 fields).  An unset
    field goes through the getter as before (``obj_load_attr`` may load
    it); catching the error of an unset field is much cheaper than asking
    ``obj_attr_is_set``.
    """
    value = getattr(dev, "_obj_" + name, _UNSET)  # stored_name, inlined
    if value is not _UNSET:
        return value
    if isinstance(dev, dict):  # (a dict has no such attribute)
        return dev.get(name, default)
    if _never_loads(type(dev), name):
        return default  # what the getter's NotImplementedError means
    try:
        return getattr(dev, name)
    except (NotImplementedError, AttributeError):
        return default


def reader(*names: str) -> ty.Callable[[ty.Any], tuple[ty.Any, ...]]:
    """A function of a device returning ``tuple(attr(dev, n) for n in
    names)``.

    The book reads four or five fields of a device on every change; one
    ``operator.attrgetter`` of their ``_obj_<name>`` storage reads them in
    a fraction of one :func:`attr` call per field.  When one is not stored
    there (unset, or a dict) it raises AttributeError and each field goes
    through :func:`attr`: the answer is :func:`attr`'s in every case (a
    unit test pins the two).  Meant for fields a tracked device always has
    (the fallback is the slow path).
    """
    if len(names) < 2:
        raise ValueError("reader() needs two field names or more, got %r"
                         % (names,))
    fast = operator.attrgetter(*map(stored_name, names))

    def read(dev: ty.Any) -> tuple[ty.Any, ...]:
        try:
            return fast(dev)
        except AttributeError:
            return tuple([attr(dev, n) for n in names])
    read.__doc__ = "(%s) of a device, as attr() reads them." % ", ".join(
        names)
    return read


def _never_loads(cls: type, name: str) -> bool:
    """True when ``cls`` is a versioned object class with field ``name``
    whose ``obj_load_attr`` is the base one, which only raises
    NotImplementedError (building that error's translated message cost more
    than the rest of a read).  Memoised per class."""
    found = _BASE_LOADER.get(cls)
    if found is None:
        # Not imported here: the CLI's light paths never load
        # oslo.versionedobjects, and a versioned object implies it is loaded.
        ovo_base = sys.modules.get("oslo_versionedobjects.base")
        loader = getattr(cls, "obj_load_attr", None)
        found = _BASE_LOADER[cls] = ovo_base is not None and \
            loader is not None and \
            loader is ovo_base.VersionedObject.obj_load_attr
    return found and name in getattr(cls, "fields", ())


_BASE_LOADER: dict[type, bool] = {}


_UNSET = object()
#: field name -> where oslo.versionedobjects stores its value.
_STORED: dict[str, str] = {}


def stored_name(name: str) -> str:
    """Where a versioned object keeps field ``name``'s value
    (``oslo_versionedobjects.base._get_attrname``, memoised)."""
    found = _STORED.get(name)
    if found is None:
        found = _STORED[name] = "_obj_" + name
    return found


def extra(dev: ty.Any, key: str) -> str | None:
    """A string from ``extra_info``; JSON null and empty read as None."""
    return extra_in(attr(dev, "extra_info"), key)


def extra_in(info: ty.Mapping[str, ty.Any] | None, key: str) -> str | None:
    """:func:`extra` of a device whose ``extra_info`` is ``info``."""
    value = (info or {}).get(key)
    if value is None or value in _NULLS:
        return None
    return str(value)


def ident(dev: ty.Any) -> str:
    """Stable identity: the PCI address, or ``mdev:<uuid>`` without one."""
    # attr(dev, "address"), its first step inlined: asked of the device on
    # every stats call that takes one.
    address = getattr(dev, "_obj_address", _UNSET)
    if address is _UNSET:
        address = attr(dev, "address")
    if address:
        return str(address)
    return "mdev:%s" % attr(dev, "mdev_uuid")


def is_mdev(dev: ty.Any) -> bool:
    return bool(attr(dev, "dev_type") == MDEV)


def vgpu_types(dev: ty.Any) -> dict[str, dict[str, ty.Any]]:
    """The GPU's ``vgpu_types`` dict; {} for a device that hosts none.

    :raises: InvalidVgpuTypes when the value is not a JSON object of
        objects.
    """
    raw = extra(dev, "vgpu_types")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise pool_errors.InvalidVgpuTypes(
            address=ident(dev), value=raw, reason=str(exc)) from exc
    if not isinstance(value, dict) or \
            not all(isinstance(v, dict) for v in value.values()):
        raise pool_errors.InvalidVgpuTypes(
            address=ident(dev), value=raw, reason="not an object of objects")
    return value


def backend(dev: ty.Any) -> str:
    return extra(dev, "vgpu_backend") or MDEV


def is_nvidia_vf(dev: ty.Any) -> bool:
    return backend(dev) == NVIDIA_VF and bool(extra(dev, "vgpu_types"))


def vgpu_type(dev: ty.Any) -> str | None:
    """Type of an mdev, or of a typed NVIDIA VF (given or current)."""
    return vgpu_type_in(attr(dev, "extra_info"))


def vgpu_type_in(info: ty.Mapping[str, ty.Any] | None) -> str | None:
    """:func:`vgpu_type` of a device whose ``extra_info`` is ``info``."""
    return (extra_in(info, "vgpu_type") or extra_in(info, "mdev_type")
            or extra_in(info, "vgpu_current_type"))


def new_gpu_state(dev: ty.Any) -> capacity.GpuState:
    """Empty capacity state of a vGPU-capable device.

    An NVIDIA vendor-VFIO VF is a GPU with one instance per creatable type
    and one type at a time (the VF itself is the vGPU).  A budget GPU's
    sizes and capacity come from :mod:`pci_vgpu.vgpu_sizes`.

    :raises: InvalidVgpuTypes, InvalidVgpuSharing, InvalidVgpuMaxInstances,
        InvalidVgpuSize.
    """
    types = vgpu_types(dev)
    if is_nvidia_vf(dev):
        return capacity.new_gpu_state(ident(dev), capacity.ONE_TYPE,
                                      {t: 1 for t in types})
    sharing = extra(dev, "vgpu_sharing") or capacity.ONE_TYPE
    return capacity.new_gpu_state(
        ident(dev), sharing, {t: e.get("max") for t, e in types.items()},
        sizes=vgpu_sizes.sizes_of(types), capacity=stated_capacity(dev))


def stated_capacity(dev: ty.Any) -> dict[str, int] | None:
    """The GPU's ``vgpu_capacity`` ({resource: amount}), if the driver
    states it.

    :raises: InvalidVgpuSize when it is not a JSON object.
    """
    raw = extra(dev, "vgpu_capacity")
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if not isinstance(value, dict):
        raise pool_errors.InvalidVgpuSize(
            address=ident(dev), vgpu_type="(capacity)", value=raw,
            reason="expected a JSON object {resource: integer >= 1}")
    return value


def type_names(type_id: str, entry: dict[str, ty.Any]) -> list[str]:
    """Names a request may use for a type: id, name, identifier."""
    return [type_id] + [str(entry[k]) for k in ("name", "identifier")
                        if entry.get(k)]
