"""``InstancePCIRequest(s)``: what an instance asks of the PCI tracker.

Field for field Nova's objects.  A vGPU request needs no new field: the
acceptable vGPU types ride in ``spec[i]['vgpu_types']`` as a sorted JSON list
string (see :func:`pci_vgpu.request.vgpu_types_of`), which keeps the object
at Nova's version and hash.  Reading requests from the database is the
tracker's job; ``obj_from_db`` / ``to_json`` convert the JSON blob Nova keeps
in ``instance_extra.pci_requests``.
"""

from __future__ import annotations

import typing as ty

from oslo_serialization import jsonutils
from oslo_utils import versionutils

from pci_vgpu.objects import base
from pci_vgpu.objects import fields


@base.PciVgpuObjectRegistry.register
class InstancePCIRequest(base.PciVgpuObject):
    """``count`` devices matching any dict of ``spec``."""

    # Version 1.0: Initial version
    # Version 1.1: Added request_id field
    # Version 1.2: Added numa_policy field
    # Version 1.3: Added requester_id field
    # Version 1.4: Added 'socket' to numa_policy field
    VERSION = "1.4"

    #: ``source`` of a request from a flavor's pci_passthrough:alias.
    FLAVOR_ALIAS = 0
    #: ``source`` of a request from a Neutron port.
    NEUTRON_PORT = 1

    fields = {
        #: How many devices.
        "count": fields.IntegerField(),
        #: Alternatives; a device matching any one dict satisfies the request.
        "spec": fields.ListOfDictOfNullableStringsField(),
        #: Flavor alias the request came from; None for a Neutron port.
        "alias_name": fields.StringField(nullable=True),
        #: Deprecated by Nova, kept for its hash.
        "is_new": fields.BooleanField(default=False),
        #: Ties the devices claimed for this request back to it.
        "request_id": fields.UUIDField(nullable=True),
        #: Neutron port id of a port request.
        "requester_id": fields.StringField(nullable=True),
        "numa_policy": fields.PCINUMAAffinityPolicyField(nullable=True),
    }

    @property
    def source(self) -> int:
        return (InstancePCIRequest.NEUTRON_PORT if self.alias_name is None
                else InstancePCIRequest.FLAVOR_ALIAS)

    def obj_load_attr(self, attrname: str) -> None:
        # Nova's behaviour: optional fields read as None when never set.
        setattr(self, attrname, None)

    def obj_make_compatible(self, primitive: dict[str, ty.Any],
                            target_version: str) -> None:
        super().obj_make_compatible(primitive, target_version)
        target = versionutils.convert_version_to_tuple(target_version)
        if target < (1, 3):
            primitive.pop("requester_id", None)
        if target < (1, 2):
            primitive.pop("numa_policy", None)
        if target < (1, 1):
            primitive.pop("request_id", None)

    def is_live_migratable(self) -> bool:
        return bool("spec" in self and self.spec is not None and all(
            spec.get("live_migratable") == "true" for spec in self.spec))


@base.PciVgpuObjectRegistry.register
class InstancePCIRequests(base.PciVgpuObject):
    """Every PCI request of one instance."""

    # Version 1.0: Initial version
    # Version 1.1: InstancePCIRequest 1.1
    VERSION = "1.1"

    fields = {
        "instance_uuid": fields.UUIDField(),
        "requests": fields.ListOfObjectsField("InstancePCIRequest"),
    }

    @classmethod
    def obj_from_db(cls, context: ty.Any, instance_uuid: str,
                    db_requests: str | None) -> InstancePCIRequests:
        """Build from Nova's ``instance_extra.pci_requests`` JSON blob."""
        self = cls(context=context, requests=[], instance_uuid=instance_uuid)
        for request in jsonutils.loads(db_requests) if db_requests else []:
            request_obj = InstancePCIRequest(
                count=request["count"], spec=request["spec"],
                alias_name=request["alias_name"], is_new=False,
                numa_policy=request.get(
                    "numa_policy", fields.PCINUMAAffinityPolicy.LEGACY),
                request_id=request["request_id"],
                requester_id=request.get("requester_id"))
            request_obj.obj_reset_changes()
            self.requests.append(request_obj)
        self.obj_reset_changes()
        return self

    def to_json(self) -> str:
        """The JSON blob :meth:`obj_from_db` reads back."""
        return str(jsonutils.dumps([
            {"count": r.count, "spec": r.spec, "alias_name": r.alias_name,
             "is_new": r.is_new, "numa_policy": r.numa_policy,
             "request_id": r.request_id, "requester_id": r.requester_id}
            for r in self.requests]))

    def neutron_requests(self) -> bool:
        """True when every request comes from a Neutron port (Nova's)."""
        return all(r.source == InstancePCIRequest.NEUTRON_PORT
                   for r in self.requests)
