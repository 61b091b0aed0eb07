"""The device tracker as the compute service sees it (servers, attachments).

:class:`pci_vgpu.manager.PciDevTracker` records one claim per instance, as
Nova does: an instance's devices are claimed together and freed together.
Hot plug needs more: a running server gains devices and loses some of them.
Each hot-plug is recorded as an *attachment*: a tracker instance of its own
whose UUID is derived from the server's UUID and the attachment's first
request id (``uuid5``), and whose name is the server's.  The relation is
checked by recomputing the UUID, never by parsing a name, so every
attachment belongs to exactly one server and is freed with it.

A device that came with the server's flavor cannot be detached alone (the
tracker frees an instance whole); :class:`DeviceNotDetachable` says so.
"""

from __future__ import annotations

import copy
import json
import typing as ty
import uuid as uuidlib

from pci_vgpu import exception
from pci_vgpu.db import records
from pci_vgpu.service import InstanceRecord
from pci_vgpu.service import ServerNotFound
from pci_vgpu.service import device_name

if ty.TYPE_CHECKING:
    from pci_vgpu.manager import PciDevTracker
    from pci_vgpu.objects.pci_device import PciDevice


class DeviceNotDetachable(exception.Invalid):
    msg_fmt = ("Device %(device)s of server %(server)s came with its flavor and can only "
               "be freed by deleting the server; only hot-plugged devices can be detached.")


def attachment_uuid(server_uuid: str, request_id: str) -> str:
    """The tracker UUID of the attachment made by request ``request_id``."""
    return str(uuidlib.uuid5(uuidlib.UUID(server_uuid), "attachment:%s" % request_id))


def _is_attachment_of(record: records.InstanceRecord, server: records.InstanceRecord) -> bool:
    if record.uuid == server.uuid or record.name != server.name or not record.requests:
        return False
    request_id = getattr(record.requests[0], "request_id", None)
    return bool(request_id) and record.uuid == attachment_uuid(server.uuid, str(request_id))


class ServiceTracker:
    """Implements :class:`pci_vgpu.service.Tracker` over ``PciDevTracker``."""

    def __init__(self, tracker: PciDevTracker) -> None:
        self.tracker = tracker
        self.hostname = tracker.hostname

    # --- reading ---------------------------------------------------------
    def update_inventory(self, devices: list[dict[str, ty.Any]]) -> None:
        self.tracker.update_devices_from_hypervisor_resources(json.dumps(devices))

    def devices(self) -> list[PciDevice]:
        return self.tracker.devices()

    def allocated_devices(self) -> list[PciDevice]:
        return self.tracker.allocated_devices()

    def _groups(self) -> list[tuple[records.InstanceRecord, list[records.InstanceRecord]]]:
        """(server, its attachments) for every server record."""
        all_records = self.tracker.instances()
        # Each pair is checked once (a uuid5 each): attachment -> its server.
        server_of = {r.uuid: s.uuid for s in all_records for r in all_records
                     if _is_attachment_of(r, s)}
        return [(s, [r for r in all_records if server_of.get(r.uuid) == s.uuid])
                for s in all_records if s.uuid not in server_of]

    def instances(self) -> list[InstanceRecord]:
        return [InstanceRecord(uuid=s.uuid, name=s.name or s.uuid, status=s.status,
                               numa_node=s.numa_cells[0] if s.numa_cells else None)
                for s, _ in self._groups()]

    def group(self, server_uuid: str) -> list[InstanceRecord]:
        """The server's own record, then one per attachment, with status."""
        return [InstanceRecord(uuid=r.uuid, name=r.name or r.uuid, status=r.status)
                for r in self._group_of(server_uuid)]

    def record_devices(self, record_uuid: str) -> list[PciDevice]:
        """The devices of one record (the server's own claim, or one attachment)."""
        return self.tracker.devices_of(record_uuid)

    def _group_of(self, server_uuid: str) -> list[records.InstanceRecord]:
        for server, attachments in self._groups():
            if server.uuid == server_uuid:
                return [server] + attachments
        return []

    def _server(self, server_uuid: str) -> records.InstanceRecord:
        """The record of server ``server_uuid``.

        :raises: ServerNotFound (e.g. another process deleted it meanwhile).
        """
        groups = self._groups()
        for server, _attachments in groups:
            if server.uuid == server_uuid:
                return server
        raise ServerNotFound(server=server_uuid, host=self.hostname,
                             known=", ".join(sorted(s.name or s.uuid for s, _ in groups))
                             or "none")

    def devices_of(self, instance_uuid: str) -> list[PciDevice]:
        group = self._group_of(instance_uuid)
        uuids = [r.uuid for r in group] or [instance_uuid]
        return [d for u in uuids for d in self.tracker.devices_of(u)]

    # --- writing ---------------------------------------------------------
    def claim(self, instance_uuid: str, name: str, requests: ty.Any,
              numa_node: int | None) -> list[PciDevice]:
        return self.tracker.claim_instance(
            instance_uuid, requests, [numa_node] if numa_node is not None else None,
            instance_name=name)

    def claim_more(self, instance_uuid: str, requests: ty.Any,
                   numa_node: int | None) -> list[PciDevice]:
        reqs = list(getattr(requests, "requests", requests))
        server = self._server(instance_uuid)
        first_id = reqs[0].request_id if reqs else None
        if not first_id:
            raise exception.Invalid(reason="an attachment needs at least one request")
        return self.tracker.claim_instance(
            attachment_uuid(server.uuid, first_id), reqs,
            [numa_node] if numa_node is not None else None, instance_name=server.name,
            unique_name=False)

    def allocate(self, instance_uuid: str) -> None:
        for record in self._group_of(instance_uuid):
            if record.status == records.CLAIMED:
                self.tracker.allocate_instance(record.uuid)

    def free(self, instance_uuid: str) -> None:
        group = self._group_of(instance_uuid)
        for record in reversed(group):
            self.tracker.free_instance(record.uuid)
        if not group:
            self.tracker.free_instance(instance_uuid)

    def check_detachable(self, instance_uuid: str, devices: ty.Sequence[PciDevice]) -> None:
        """:raises: DeviceNotDetachable for a device of the server's own claim."""
        wanted = {device_name(d) for d in devices}
        for record in self._group_of(instance_uuid)[:1]:
            for dev in self.tracker.devices_of(record.uuid):
                if device_name(dev) in wanted:
                    raise DeviceNotDetachable(device=device_name(dev), server=record.name)

    def free_devices(self, instance_uuid: str, devices: ty.Sequence[PciDevice]) -> None:
        """Free the attachments holding ``devices`` (whole attachments).

        :raises: DeviceNotDetachable for a device of the server's own claim.
        """
        self.check_detachable(instance_uuid, devices)
        wanted = {device_name(d) for d in devices}
        group = self._group_of(instance_uuid)
        for record in group[1:]:
            if wanted & {device_name(d) for d in self.tracker.devices_of(record.uuid)}:
                self.tracker.free_instance(record.uuid)

    # --- pools -----------------------------------------------------------
    def stats(self) -> ty.Any:
        """The node's ``PciDeviceStats``, freshly read."""
        self.tracker.refresh()
        return self.tracker.stats

    def explain(self, requests: ty.Any, numa_node: int | None) -> tuple[ty.Any, list[PciDevice]]:
        """``PciDeviceStats.explain`` plus the devices a claim would pick now.

        The pick runs on a copy of the pools, so nothing is claimed.
        """
        from pci_vgpu.db import state as tracker_state
        from pci_vgpu.pool_errors import PciDeviceRequestFailed

        reqs = list(getattr(requests, "requests", requests))
        cells = tracker_state.cells_arg([numa_node] if numa_node is not None else None)
        stats = self.stats()
        explanation = stats.explain(reqs, numa_cells=cells)
        if not explanation.satisfied:
            return explanation, []
        try:
            picked = copy.deepcopy(stats).consume_requests(reqs, numa_cells=cells) or []
        except PciDeviceRequestFailed:
            picked = []
        return explanation, list(picked)
