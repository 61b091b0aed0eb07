"""Base classes and registry of pci_vgpu's versioned objects.

Mirrors Nova's ``NovaObject`` / ``NovaPersistentObject`` split so that a Nova
developer finds the same shapes: every object lives in the ``pci_vgpu``
namespace, is registered with :class:`PciVgpuObjectRegistry` (which also
exposes it as an attribute of :mod:`pci_vgpu.objects`, like ``nova.objects``)
and the persistent ones carry the soft-delete timestamps of Nova's tables.
"""

from __future__ import annotations

import typing as ty

from oslo_versionedobjects import base as ovo_base
from oslo_versionedobjects import fields as ovo_fields

from pci_vgpu import exception


class PciVgpuObjectRegistry(ovo_base.VersionedObjectRegistry):
    """Registry that publishes each registered class on ``pci_vgpu.objects``."""

    def registration_hook(self, cls: type, index: int) -> None:
        # Imported late: pci_vgpu.objects imports this module first.
        from pci_vgpu import objects

        name = cls.obj_name()  # type: ignore[attr-defined]
        current = getattr(objects, name, None)
        if current is None or _version(cls) >= _version(current):
            setattr(objects, name, cls)


def _version(cls: type) -> tuple[int, ...]:
    return tuple(int(x) for x in getattr(cls, "VERSION").split("."))


class PciVgpuObject(ovo_base.VersionedObject):
    """Base of every pci_vgpu versioned object."""

    OBJ_SERIAL_NAMESPACE = "pci_vgpu_object"
    OBJ_PROJECT_NAMESPACE = "pci_vgpu"


class PciVgpuPersistentObject:
    """Mixin for objects stored in a soft-delete table, as Nova's.

    Only the fields live here; reading and writing rows is the tracker's job
    (``pci_vgpu.db``), so objects stay importable without a database.
    """

    fields: dict[str, ty.Any] = {
        "created_at": ovo_fields.DateTimeField(nullable=True),
        "updated_at": ovo_fields.DateTimeField(nullable=True),
        "deleted_at": ovo_fields.DateTimeField(nullable=True),
        "deleted": ovo_fields.BooleanField(default=False),
    }


#: Field names contributed by :class:`PciVgpuPersistentObject`.
PERSISTENT_FIELDS = frozenset(PciVgpuPersistentObject.fields)


class ObjectListBase(ovo_base.ObjectListBase):  # type: ignore[type-arg]
    """List mixin; Nova's lists use the same one from oslo."""


def raise_on_too_new_values(objname: str, ident: str, target_version: str,
                            primitive: dict[str, ty.Any], field: str,
                            new_values: ty.Iterable[str]) -> None:
    """Refuse a downgrade when ``field`` holds a value the target lacks.

    Nova's helper of the same name raises a bare ``ValueError``; ours raises
    :class:`~pci_vgpu.exception.ObjectDowngradeRefused` (also a ValueError)
    naming the object, the field and the value.

    :raises: ObjectDowngradeRefused
    """
    value = primitive.get(field)
    if value in set(new_values):
        raise exception.ObjectDowngradeRefused(
            objname=objname, ident=ident, target_version=target_version,
            reason="%s=%r does not exist before that version" % (field, value))
