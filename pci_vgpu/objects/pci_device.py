"""``PciDevice`` 1.8 and ``PciDeviceList``: Nova's PCI device record plus vGPUs.

A vGPU realised as a mediated device has no PCI address: its identity is its
``mdev_uuid`` and ``parent_addr`` names the GPU it lives on.  Everything else
(vGPU types a GPU offers, how they share it, the type an mdev has) travels in
``extra_info`` exactly as Nova keeps any non-field key of a device dict.

The claim / allocate / free / remove state machine is in
:mod:`pci_vgpu.objects.device_tree`; these methods only delegate to it.

Persistence is deliberately absent: ``save()`` and ``get_by_*`` belong to the
tracker (``pci_vgpu.db``), so these objects never touch a database.
"""

from __future__ import annotations

import copy
import typing as ty
import uuid

from oslo_serialization import jsonutils
from oslo_utils import uuidutils
from oslo_utils import versionutils

from pci_vgpu import exception
from pci_vgpu import pool_devices
from pci_vgpu.objects import base
from pci_vgpu.objects import device_tree
from pci_vgpu.objects import fields

Status = fields.PciDeviceStatus
DevType = fields.PciDeviceType

#: dev_dict keys that only the state machine or the database may set.
_NOT_FROM_HYPERVISOR = ("status", "instance_uuid", "id", "extra_info")
#: Nullable fields a new record starts with as None, so that the state
#: machine can read them without "in" checks.
_NULL_UNTIL_SET = ("instance_uuid", "request_id", "mdev_uuid")
#: extra_info tags dropped when the hypervisor stops reporting them (Nova's).
_TAGS_TO_CLEAN = ("managed", "live_migratable")


@base.PciVgpuObjectRegistry.register
class PciDevice(base.PciVgpuPersistentObject, base.PciVgpuObject):
    """One assignable device of a compute node: a PCI function or a vGPU."""

    # Version 1.0: Initial version
    # Version 1.1: String attributes updated to support unicode
    # Version 1.2: added request_id field
    # Version 1.3: Added field to represent PCI device NUMA node
    # Version 1.4: Added parent_addr field
    # Version 1.5: Added 2 new device statuses: UNCLAIMABLE and UNAVAILABLE
    # Version 1.6: Added uuid field
    # Version 1.7: Added 'vdpa' to 'dev_type' field
    # Version 1.8: address nullable, added mdev_uuid field, added 'mdev' to
    #              'dev_type' field
    VERSION = "1.8"

    fields = {
        #: Database row id.
        "id": fields.IntegerField(),
        #: The record's own UUID (Nova 1.6); NOT the mdev's UUID.
        "uuid": fields.UUIDField(),
        "compute_node_id": fields.IntegerField(nullable=True),
        #: PCI address "dddd:bb:ss.f"; None for an mdev / XAPI VGPU.
        "address": fields.StringField(nullable=True),
        "vendor_id": fields.StringField(),
        "product_id": fields.StringField(),
        "dev_type": fields.PciDeviceTypeField(),
        "status": fields.PciDeviceStatusField(),
        #: Hypervisor's name for the device (libvirt nodedev name, XAPI ref).
        "dev_id": fields.StringField(nullable=True),
        #: "label_<vendor_id>_<product_id>".
        "label": fields.StringField(nullable=True),
        "instance_uuid": fields.StringField(nullable=True),
        "request_id": fields.StringField(nullable=True),
        #: Every non-field key of the device dict, values as strings.
        "extra_info": fields.DictOfStringsField(default={}),
        "numa_node": fields.IntegerField(nullable=True),
        #: PF of a VF; GPU of an mdev / XAPI VGPU.
        "parent_addr": fields.StringField(nullable=True),
        #: UUID of the mediated device (the vGPU's identity on the host).
        "mdev_uuid": fields.UUIDField(nullable=True),
    }

    def __init__(self, *args: ty.Any, **kwargs: ty.Any) -> None:
        super().__init__(*args, **kwargs)
        # In-memory tree (PF -> VFs, GPU -> mdevs) built by
        # device_tree.build_device_tree; not fields: they would be circular.
        self.parent_device: PciDevice | None = None
        self.child_devices: list[PciDevice] = []

    # -- construction -----------------------------------------------------

    @classmethod
    def create(cls, context: ty.Any, dev_dict: dict[str, ty.Any]) -> PciDevice:
        """Build a new AVAILABLE device from a driver's device dict.

        ``context`` is accepted for Nova's signature and ignored.

        :raises: PciDeviceInvalidField if a field value is not acceptable.
        """
        pci_device = cls()
        pci_device._context = context
        pci_device.obj_set_defaults("extra_info")
        pci_device.update_device(dict(dev_dict))
        for key in _NULL_UNTIL_SET:
            if not pci_device.obj_attr_is_set(key):
                setattr(pci_device, key, None)
        pci_device.status = Status.AVAILABLE
        pci_device.uuid = uuidutils.generate_uuid()
        return pci_device

    def update_device(self, dev_dict: dict[str, ty.Any]) -> None:
        """Sync from a driver's device dict, Nova's rules.

        status, instance_uuid, id and extra_info are never taken from the
        hypervisor; keys that are not fields go to ``extra_info`` (strings
        kept, anything else JSON-dumped).

        :raises: PciDeviceInvalidField naming the field and value.
        """
        dev_dict = {k: v for k, v in dev_dict.items()
                    if k not in _NOT_FROM_HYPERVISOR}
        dev_dict.setdefault("parent_addr", None)
        if not self.obj_attr_is_set("extra_info"):
            self.obj_set_defaults("extra_info")
        extra_info = dict(self.extra_info)
        for key, value in dev_dict.items():
            if key in self.fields:
                self._set_field(key, value, dev_dict)
            else:
                extra_info[key] = (value if isinstance(value, str)
                                   else jsonutils.dumps(value))
        for tag in _TAGS_TO_CLEAN:
            if tag not in dev_dict:
                extra_info.pop(tag, None)
        if extra_info != self.extra_info:
            self.extra_info = extra_info

    def _set_field(self, key: str, value: ty.Any,
                   dev_dict: dict[str, ty.Any]) -> None:
        if key == "mdev_uuid" and value is not None:
            value = _canonical_uuid(value, dev_dict)
        try:
            value = self.fields[key].coerce(self, key, value)
        except (ValueError, TypeError) as exc:
            raise exception.PciDeviceInvalidField(
                device=_ident_of_dict(dev_dict), field=key, value=value,
                reason=str(exc)) from exc
        # Assign only real changes so that a periodic resync of an unchanged
        # device leaves nothing for the tracker to write.
        if not self.obj_attr_is_set(key) or getattr(self, key) != value:
            setattr(self, key, value)

    # -- identity ---------------------------------------------------------

    @property
    def ident(self) -> str:
        """How messages name this device: its address, or its mdev UUID."""
        address = self.address if self.obj_attr_is_set("address") else None
        if address:
            return str(address)
        mdev = self.mdev_uuid if self.obj_attr_is_set("mdev_uuid") else None
        parent = (self.parent_addr if self.obj_attr_is_set("parent_addr")
                  else None)
        return "mdev %s on %s" % (mdev, parent)

    @property
    def is_mdev(self) -> bool:
        return self.obj_attr_is_set("dev_type") and \
            self.dev_type == DevType.MDEV

    def __repr__(self) -> str:
        return "PciDevice(%s, compute_node_id=%s)" % (
            self.ident, self.obj_attr_is_set("compute_node_id")
            and self.compute_node_id or None)

    def __eq__(self, other: object) -> bool:
        """Same device attributes (not timestamps), as Nova compares."""
        if not isinstance(other, PciDevice):
            return False
        for name in self.fields:
            if name in base.PERSISTENT_FIELDS:
                continue
            if self.obj_attr_is_set(name) != other.obj_attr_is_set(name):
                return False
            if self.obj_attr_is_set(name) and \
                    getattr(self, name) != getattr(other, name):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    # -- vGPU accessors over extra_info -------------------------------------

    def _extra(self, key: str) -> str | None:
        if not self.obj_attr_is_set("extra_info"):
            return None
        return ty.cast("str | None", self.extra_info.get(key))

    @property
    def vgpu_types(self) -> dict[str, dict[str, ty.Any]]:
        """``{type_id: {name, description, device_api, available, max,
        identifier}}`` that a vGPU-capable GPU offers; {} otherwise.

        Read by the pools' own parser, so both accept and refuse the same.

        :raises: InvalidVgpuTypes when the value is not a JSON object of
            objects.
        """
        return pool_devices.vgpu_types(self)

    @property
    def vgpu_sharing(self) -> str | None:
        return self._extra("vgpu_sharing")

    @property
    def vgpu_backend(self) -> str | None:
        return self._extra("vgpu_backend")

    @property
    def vgpu_type(self) -> str | None:
        """The type an mdev has / a typed VF was given."""
        return self._extra("vgpu_type") or self._extra("mdev_type")

    @property
    def is_vgpu_capable(self) -> bool:
        """The device can host vGPUs (it reports vGPU types)."""
        return bool(self.vgpu_types)

    def set_vgpu_type(self, vgpu_type: str | None) -> None:
        """Record (or clear) the vGPU type given to this device.

        Reassigns ``extra_info`` so that ``obj_what_changed`` sees it.
        """
        extra_info = dict(self.extra_info)
        if vgpu_type is None:
            extra_info.pop("vgpu_type", None)
        else:
            extra_info["vgpu_type"] = vgpu_type
        self.extra_info = extra_info

    # -- state machine (rules in device_tree) -------------------------------

    def is_available(self) -> bool:
        return bool(self.status == Status.AVAILABLE)

    def claim(self, instance_uuid: str) -> None:
        """Reserve the device for ``instance_uuid`` (AVAILABLE -> CLAIMED).

        :raises: PciDeviceInvalidStatus (or a subclass naming the relative
            that blocks the claim).
        """
        device_tree.claim(self, instance_uuid)

    def allocate(self, instance: ty.Any) -> None:
        """Give the device to ``instance`` (AVAILABLE/CLAIMED -> ALLOCATED).

        ``instance`` is an instance UUID, a dict with ``uuid``, or an object
        with ``uuid``; a copy of the device is appended to its
        ``pci_devices`` when it has one, as Nova does.

        :raises: PciDeviceInvalidStatus, PciDeviceInvalidOwner.
        """
        device_tree.allocate(self, instance)

    def free(self, instance: ty.Any = None) -> list[PciDevice]:
        """Release the device; return every device that became AVAILABLE.

        :raises: PciDeviceInvalidStatus, PciDeviceInvalidOwner.
        """
        return device_tree.free(self, instance)

    def remove(self) -> None:
        """Mark the device REMOVED (gone from the hypervisor).

        :raises: PciDeviceRemoveInUse, PciDeviceRemoveChildrenInUse.
        """
        device_tree.remove(self)

    # -- versioning -------------------------------------------------------

    def obj_make_compatible(self, primitive: dict[str, ty.Any],
                            target_version: str) -> None:
        """Downgrade ``primitive``; refuse when a vGPU would lose identity."""
        super().obj_make_compatible(primitive, target_version)
        target = versionutils.convert_version_to_tuple(target_version)
        if target < (1, 8):
            self._refuse_mdev_downgrade(primitive, target_version)
            primitive.pop("mdev_uuid", None)
        if target < (1, 2):
            primitive.pop("request_id", None)
        if target < (1, 4) and "parent_addr" in primitive:
            parent_addr = primitive.pop("parent_addr")
            if parent_addr is not None:
                extra_info = primitive.setdefault("extra_info", {})
                extra_info["phys_function"] = parent_addr
        if target < (1, 5):
            self._raise_on_too_new(primitive, target_version, "status",
                                   (Status.UNCLAIMABLE, Status.UNAVAILABLE))
        if target < (1, 6):
            primitive.pop("uuid", None)
        if target < (1, 7):
            self._raise_on_too_new(primitive, target_version, "dev_type",
                                   (DevType.VDPA,))

    def _raise_on_too_new(self, primitive: dict[str, ty.Any], target: str,
                          field: str, values: ty.Iterable[str]) -> None:
        base.raise_on_too_new_values("PciDevice", self.ident, target,
                                     primitive, field, values)

    def _refuse_mdev_downgrade(self, primitive: dict[str, ty.Any],
                               target_version: str) -> None:
        reason = None
        if primitive.get("dev_type") == DevType.MDEV:
            reason = ("it is a mediated device (dev_type 'mdev'), which "
                      "versions before 1.8 cannot express")
        elif "address" in primitive and primitive["address"] is None:
            reason = "it has no PCI address, which is required before 1.8"
        elif primitive.get("mdev_uuid") is not None:
            reason = "its mdev_uuid %s would be lost" % primitive["mdev_uuid"]
        if reason:
            raise exception.ObjectDowngradeRefused(
                objname="PciDevice", ident=self.ident,
                target_version=target_version, reason=reason)


@base.PciVgpuObjectRegistry.register
class PciDeviceList(base.ObjectListBase, base.PciVgpuObject):
    """The devices of a compute node or of an instance."""

    # Version 1.0: Initial version
    #              PciDevice <= 1.1
    # Version 1.1: PciDevice 1.2
    # Version 1.2: PciDevice 1.3
    # Version 1.3: Adds get_by_parent_address
    # Version 1.4: PciDevice 1.8
    VERSION = "1.4"

    fields = {
        "objects": fields.ListOfObjectsField("PciDevice"),
    }

    obj_relationships = {
        "objects": [("1.0", "1.1"), ("1.1", "1.2"), ("1.2", "1.3"),
                    ("1.3", "1.7"), ("1.4", "1.8")],
    }

    def __init__(self, *args: ty.Any, **kwargs: ty.Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.obj_attr_is_set("objects"):
            self.objects = []
            self.obj_reset_changes(["objects"])


def _canonical_uuid(value: ty.Any, dev_dict: dict[str, ty.Any]) -> str:
    if not isinstance(value, str) or not uuidutils.is_uuid_like(value):
        raise exception.PciDeviceInvalidField(
            device=_ident_of_dict(dev_dict), field="mdev_uuid", value=value,
            reason="not a UUID")
    return str(uuid.UUID(value))


def _ident_of_dict(dev_dict: dict[str, ty.Any]) -> str:
    return str(dev_dict.get("address") or dev_dict.get("mdev_uuid")
               or dev_dict.get("dev_id") or "<unnamed>")


def copy_device(device: PciDevice) -> PciDevice:
    """Shallow copy kept outside the tree (what Nova appends to instances)."""
    return copy.copy(device)
