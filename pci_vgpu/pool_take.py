"""Compute-side picking: which device, which mdev, for a pool unit.

Split from :mod:`pci_vgpu.stats` so the public class stays readable.  A pick
*holds* the device in the :class:`~pci_vgpu.pool_book.DeviceBook` (busy
until the tracker claims it) and records what it changed, so that
:meth:`DeviceTaker.undo` restores the device exactly: ``request_id``, the
NVIDIA VF's ``vgpu_type``, and a new mdev is forgotten.

vGPU picking order on the chosen GPU: an existing free mdev of the type
first (lowest UUID, deterministic), then the VF itself for an NVIDIA
vendor-VFIO VF, else a new mdev ``PciDevice``.
"""

from __future__ import annotations

import os
import typing as ty

from pci_vgpu import pool
from pci_vgpu import pool_book
from pci_vgpu import pool_devices as pd
from pci_vgpu import pool_filters as pf


#: What a new mdev copies from its GPU (and compute_node_id when set).
_INHERITED = pd.reader("vendor_id", "product_id", "numa_node", "label")


class DeviceTaker:
    """Picks devices out of a book's pools and gives them back."""

    def __init__(self, book: pool_book.DeviceBook) -> None:
        self.book = book

    def take(self, p: pool.Pool, n: int, view: pf.RequestView,
             out: list[ty.Any]) -> None:
        """Pick ``n`` units of pool ``p`` for ``view``; append them to ``out``."""
        if isinstance(p, pool.VgpuPool):
            out.append(self._take_vgpu(p, view.request_id))
            return
        assert isinstance(p, pool.DevicePool)
        for key in sorted(p.free)[:n]:
            dev = p.free[key]
            self._hold(key, dev, view.request_id, whole=True)
            out.append(dev)

    def _take_vgpu(self, p: pool.VgpuPool, request_id: str | None) -> ty.Any:
        book, gpu_key = self.book, p.gpu.address
        spares = book.spares.get((gpu_key, p.vgpu_type))
        if spares:
            key = min(spares)
            dev = spares[key]
        elif p.backend == pd.NVIDIA_VF:
            key, dev = gpu_key, book.devs[gpu_key]
        else:
            dev = self._new_mdev(book.devs[gpu_key], gpu_key, p.vgpu_type,
                                 request_id)
            key = pd.ident(dev)
            self._hold(key, dev, request_id, whole=False, created=True)
            return dev
        vtype = p.vgpu_type if p.backend == pd.NVIDIA_VF else None
        self._hold(key, dev, request_id, whole=False, vgpu_type=vtype)
        return dev

    def _new_mdev(self, gpu: ty.Any, gpu_key: str, vgpu_type: str,
                  request_id: str | None) -> ty.Any:
        """A new mdev ``PciDevice`` on ``gpu`` (tracked as ``gpu_key``)
        for ``request_id``: address None, fresh UUID."""
        # Built from already valid values rather than through create():
        # the same fields create() would set from this dict, at a fraction
        # of the cost (see _prevalidated).
        mdev_uuid, record_uuid = random_uuids(2)
        vendor_id, product_id, numa_node, label = _INHERITED(gpu)
        values = (pd.MDEV, None, gpu_key, vendor_id, product_id, numa_node,
                  label, mdev_uuid, {"vgpu_type": vgpu_type}, pd.AVAILABLE,
                  record_uuid, request_id)
        node = pd.attr(gpu, "compute_node_id")
        if node is None:
            return _prevalidated(_device_class(), _MDEV_FIELDS, values)
        return _prevalidated(_device_class(), _MDEV_FIELDS_ON_NODE,
                             values + (node,))

    def _hold(self, key: str, dev: ty.Any, request_id: str | None,
              whole: bool, created: bool = False,
              vgpu_type: str | None = None) -> None:
        book = self.book
        # A created mdev is born with its request_id and had none before.
        hold = pool_book.Hold(whole, created, None if created
                              else pd.attr(dev, "request_id"))
        if vgpu_type is not None:
            hold.old_vgpu_type = pd.extra(dev, "vgpu_type")
            _set_vgpu_type(dev, vgpu_type)
        if not created:
            dev.request_id = request_id
        book.held[key] = hold
        if created:
            book.add_mdev(dev, key)
        else:
            book.recount(key)

    def undo(self, devices: ty.Iterable[ty.Any]) -> None:
        """Give back held devices (newest first); others are left alone."""
        book = self.book
        for dev in reversed(list(devices)):
            key = pd.ident(dev)
            hold = book.held.pop(key, None)
            if hold is None:
                continue
            dev.request_id = hold.old_request_id
            if hold.old_vgpu_type is not pool_book._UNSET:
                _set_vgpu_type(dev, hold.old_vgpu_type)
            if hold.created:
                book.remove(key)
            else:
                book.recount(key)


def _set_vgpu_type(dev: ty.Any, vgpu_type: str | None) -> None:
    setter = getattr(dev, "set_vgpu_type", None)
    if setter is not None:
        setter(vgpu_type)
        return
    info = dict(pd.attr(dev, "extra_info") or {})
    if vgpu_type is None:
        info.pop("vgpu_type", None)
    else:
        info["vgpu_type"] = vgpu_type
    dev.extra_info = info


def _prevalidated(cls: ty.Any, names: tuple[str, ...],
                  values: tuple[ty.Any, ...]) -> ty.Any:
    """``cls(**dict(zip(names, values)))`` for values that are already of
    their fields' types.

    The mdev's values are copied from its GPU (set, so coerced, when the GPU
    was tracked), constants, and UUIDs we just generated: coercing them
    again is what made a new mdev cost more than the rest of a claim
    (oslo.versionedobjects checks a UUID field under
    ``warnings.catch_warnings``).  So each value is stored where the field's
    setter stores it (:func:`pd.stored_name`) and recorded as changed, as
    the setter does, and nothing else differs: a unit test pins the result
    (values and ``obj_what_changed()``) to the constructor's.
    """
    dev = cls()
    stored = _STORED_NAMES.get(names)
    if stored is None:  # one entry per tuple of field names (two here)
        stored = _STORED_NAMES[names] = tuple(map(pd.stored_name, names))
    vars(dev).update(zip(stored, values))
    dev._changed_fields.update(names)
    return dev


#: field names -> where a versioned object stores each (see _prevalidated).
_STORED_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}
#: The fields a new mdev is born with, in _new_mdev's order (and its
#: compute node's id when its GPU has one).
_MDEV_FIELDS = ("dev_type", "address", "parent_addr", "vendor_id",
                "product_id", "numa_node", "label", "mdev_uuid",
                "extra_info", "status", "uuid", "request_id")
_MDEV_FIELDS_ON_NODE = _MDEV_FIELDS + ("compute_node_id",)


def _device_class() -> ty.Any:
    """``pci_vgpu.objects.pci_device.PciDevice``, imported on first use
    (the objects import the world; the pools must not at import time)."""
    global _PCI_DEVICE
    if _PCI_DEVICE is None:
        from pci_vgpu.objects import pci_device

        _PCI_DEVICE = pci_device.PciDevice
    return _PCI_DEVICE


_PCI_DEVICE: ty.Any = None


def random_uuid() -> str:
    """A random (version 4, RFC 4122 variant) UUID string.

    What ``uuidutils.generate_uuid()`` returns, formatted from 16 random
    bytes directly rather than through ``uuid.UUID`` (two per new mdev:
    they were a fifth of a claim).
    """
    return random_uuids(1)[0]


def random_uuids(n: int) -> list[str]:
    """``n`` :func:`random_uuid` strings from one read of random bytes."""
    h = os.urandom(16 * n).hex()
    # 8-4-4-4-12 hex digits; the version digit is 4 and the variant
    # digit's top two bits are 10 (_VARIANT maps a random digit to 8-b).
    return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-"
            f"{_VARIANT[h[i + 16]]}{h[i + 17:i + 20]}-{h[i + 20:i + 32]}"
            for i in range(0, 32 * n, 32)]


#: A random hex digit -> the RFC 4122 variant digit keeping its low bits.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
