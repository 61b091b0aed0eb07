"""One compute node's devices, instances and pools, as the tracker holds them.

:class:`NodeState` is built from rows at one generation, changed in memory
by the tracker's operations (inside a write transaction), and written back
by :meth:`NodeState.flush`: new rows inserted, changed rows updated (only
the changed columns), gone rows soft-deleted.  If the transaction fails the
tracker throws the whole state away, so nothing here needs undoing.
"""

from __future__ import annotations

import typing as ty

from oslo_log import log as logging
import sqlalchemy as sa

from pci_vgpu import exception
from pci_vgpu.db import api as db_api
from pci_vgpu.db import exception as db_exc
from pci_vgpu.db import records
from pci_vgpu.objects import device_tree
from pci_vgpu.objects import fields
from pci_vgpu.objects import pci_device

LOG = logging.getLogger(__name__)

Status = fields.PciDeviceStatus
PciDevice = pci_device.PciDevice
_REQUIRED_KEYS = ("vendor_id", "product_id", "dev_type")
#: What ``PciDevice.remove`` raises for a device (or child) still in use.
_IN_USE_ERRORS = (exception.PciDeviceInvalidStatus,
                  exception.PciDeviceInvalidOwner)


def validate_device_dict(dev: ty.Any) -> str:
    """Check one entry of a ``pci_passthrough_devices`` report.

    :returns: the entry's device key.
    :raises: InvalidDeviceReport naming the entry and what is wrong.
    """
    if not isinstance(dev, dict):
        raise db_exc.InvalidDeviceReport(reason="entry %r is not a dict" % (dev,))
    missing = [k for k in _REQUIRED_KEYS if not dev.get(k)]
    if missing:
        raise db_exc.InvalidDeviceReport(
            reason="entry %s lacks %s" % (dev.get("address") or
                                          dev.get("mdev_uuid") or dev,
                                          ", ".join(missing)))
    key = records.dict_key(dev)
    if key is None:
        raise db_exc.InvalidDeviceReport(
            reason="entry %s (dev_type %s) has neither an address nor an "
                   "mdev_uuid" % (dev.get("dev_id"), dev.get("dev_type")))
    return key


def cells_arg(numa_cells: ty.Sequence[int] | None) -> list[dict[str, int]] | None:
    """NUMA cell ids in the shape ``PciDeviceStats`` reads (``cell.id``)."""
    if numa_cells is None:
        return None
    return [{"id": int(cell)} for cell in numa_cells]


def _new_stats(args: dict[str, ty.Any]) -> ty.Any:
    # Imported here: pci_vgpu.stats is only needed once a node is loaded.
    from pci_vgpu import stats
    return stats.PciDeviceStats(**args)


def _follow_hypervisor_owner(dev: PciDevice, dev_dict: dict[str, ty.Any]) -> None:
    """Keep an mdev a guest holds outside this tracker's claims UNAVAILABLE.

    The hypervisor names the guest using an mdev (libvirt guest XML, XAPI
    other_config).  A device that reaches here is not claimed through this
    tracker, so any owner is a guest the tracker did not place (created by
    hand, or tracked by a database that was lost): handing that mdev to
    another guest would give one vGPU to two.  When the guest lets go, the
    mdev is a spare again unless an ancestor is in use (a GPU given whole).
    """
    if not dev.is_mdev:
        return
    owner = dev_dict.get("instance_uuid")
    if owner and dev.status == Status.AVAILABLE:
        LOG.warning("mdev %(dev)s is used by guest %(owner)s, which this "
                    "tracker did not place; it will not be handed out",
                    {"dev": dev.ident, "owner": owner})
        dev.status = Status.UNAVAILABLE
    elif (not owner and dev.status == Status.UNAVAILABLE
          and not any(a.status in device_tree.IN_USE
                      for a in device_tree.ancestors(dev))):
        dev.status = Status.AVAILABLE


def _contains(devices: list[PciDevice], dev: PciDevice) -> bool:
    # Identity, not PciDevice.__eq__ (which compares attributes).
    return any(d is dev for d in devices)


class NodeState:
    """Devices (by device key), instances (by UUID) and pools of a node."""

    def __init__(self, generation: int, devices: list[PciDevice],
                 instances: list[records.InstanceRecord],
                 pending_removal: set[str], stats_args: dict[str, ty.Any]) -> None:
        self.generation = generation
        self.devices = {records.device_key(d): d for d in devices}
        self.instances = {r.uuid: r for r in instances}
        self.pending_removal = pending_removal
        device_tree.build_device_tree(devices)
        self.stats = _new_stats(stats_args)
        for dev in devices:
            self.stats.add_device(dev)
        self._new: list[PciDevice] = []
        #: Devices the state machine may have changed since the last flush
        #: (by id()); None means "any" (after an inventory report).
        self._touched: dict[int, PciDevice] | None = {}
        self._gone: list[PciDevice] = []
        self._flags: dict[str, bool] = {}
        #: Instance UUID -> its stored (pci_requests, numa_cells) JSON, for
        #: the instances read from rows (catch_up re-parses only changes).
        self._request_texts: dict[str, tuple[str, str | None]] = {}

    @classmethod
    def from_rows(cls, generation: int, rows: list[sa.Row[ty.Any]],
                  inst_rows: list[sa.Row[ty.Any]],
                  stats_args: dict[str, ty.Any]) -> NodeState:
        devices = [records.device_from_row(r) for r in rows]
        pending = {r.device_key for r in rows if r.pending_removal}
        instances = [records.instance_from_row(r) for r in inst_rows]
        state = cls(generation, devices, instances, pending, stats_args)
        state._request_texts = {r.uuid: (r.pci_requests, r.numa_cells)
                                for r in inst_rows}
        return state

    def catch_up(self, generation: int, rows: list[sa.Row[ty.Any]],
                 inst_rows: list[sa.Row[ty.Any]]) -> bool:
        """Apply what other workers wrote since this state was read.

        Rebuilding every device and pool after each foreign write was most
        of a contended write's time (under the node lock).  Here only rows
        that differ are applied, with the pool calls a writer makes itself
        (remove, update, add: in row order, so a GPU precedes its vGPUs).
        Returns False, changing nothing, if the state has unflushed
        changes: the caller must load afresh.
        """
        if self._new or self._gone or self._flags or self._touched:
            return False
        live = {row.device_key: row for row in rows}
        for key in [k for k in self.devices if k not in live]:
            self._forget(key)
        new, changed = [], []
        for key, row in live.items():
            dev = self.devices.get(key)
            if dev is None:
                dev = self.devices[key] = records.device_from_row(row)
                new.append(dev)
            elif records.refresh_from_row(dev, row):
                changed.append(dev)
        if new or changed:
            device_tree.build_device_tree(self.devices.values())
        for dev in sorted(new + changed, key=lambda d: d.id):
            (self.stats.add_device if _contains(new, dev)
             else self.stats.update_device)(dev)
        self.pending_removal = {k for k, r in live.items() if r.pending_removal}
        self._catch_up_instances(inst_rows)
        self.generation = generation
        return True

    def _forget(self, key: str) -> None:
        """A device another worker deleted: out of the tree and pools."""
        dev = self.devices.pop(key)
        self.stats.remove_device(dev)
        parent = dev.parent_device
        if parent is not None:
            parent.child_devices = [c for c in parent.child_devices
                                    if c is not dev]

    def _catch_up_instances(self, inst_rows: list[sa.Row[ty.Any]]) -> None:
        old, texts = self.instances, self._request_texts
        self.instances, self._request_texts = {}, {}
        for row in inst_rows:
            record = old.get(row.uuid)
            stored = (row.pci_requests, row.numa_cells)
            if record is None or texts.get(row.uuid) != stored:
                record = records.instance_from_row(row)
            record.status = row.status
            record.name = row.name
            self.instances[row.uuid] = record
            self._request_texts[row.uuid] = stored

    def devices_of(self, instance_uuid: str) -> list[PciDevice]:
        return [d for d in self.devices.values()
                if d.instance_uuid == instance_uuid
                and d.status in device_tree.IN_USE]

    # -- inventory ------------------------------------------------------------

    def apply_report(self, reported: dict[str, dict[str, ty.Any]]) -> None:
        """Add, update and remove devices to match the hypervisor's report."""
        self._touched = None
        for key in [k for k in self.devices if k not in reported]:
            self._vanish(key)
        for key, dev_dict in reported.items():
            if key in self.devices:
                self._update(key, dev_dict)
            else:
                self._add(key, dev_dict)
        device_tree.build_device_tree(self.devices.values())

    def _vanish(self, key: str) -> None:
        dev = self.devices[key]
        try:
            dev.remove()
        except _IN_USE_ERRORS as exc:
            if key not in self.pending_removal:
                LOG.warning("Device %(dev)s is gone from the hypervisor but "
                            "in use; removing it when freed: %(err)s",
                            {"dev": dev.ident, "err": exc})
                self._set_pending(key, True)
            return
        self._drop(key)

    def _update(self, key: str, dev_dict: dict[str, ty.Any]) -> None:
        dev = self.devices[key]
        if key in self.pending_removal:
            self._set_pending(key, False)
        if dev.status in device_tree.IN_USE:
            # Nova parks such changes until the device is freed; the next
            # report after the free applies them.
            return
        dev.update_device(dev_dict)
        _follow_hypervisor_owner(dev, dev_dict)
        self.stats.update_device(dev)

    def _add(self, key: str, dev_dict: dict[str, ty.Any]) -> None:
        dev = PciDevice.create(None, dev_dict)
        self._insert(dev)
        device_tree.build_device_tree(self.devices.values())
        _follow_hypervisor_owner(dev, dev_dict)
        self.stats.add_device(dev)

    def _insert(self, dev: PciDevice) -> None:
        self.devices[records.device_key(dev)] = dev
        self._new.append(dev)

    def _drop(self, key: str) -> None:
        """Forget a device: soft-deleted at flush, out of the pools now."""
        dev = self.devices.pop(key)
        self.stats.remove_device(dev)
        dev.status = Status.DELETED
        parent = dev.parent_device
        if parent is not None:
            parent.child_devices = [c for c in parent.child_devices
                                    if c is not dev]
        self.pending_removal.discard(key)
        if _contains(self._new, dev):
            self._new = [d for d in self._new if d is not dev]
        else:
            self._gone.append(dev)

    def _set_pending(self, key: str, flag: bool) -> None:
        (self.pending_removal.add if flag else self.pending_removal.discard)(key)
        self._flags[key] = flag

    # -- claims -----------------------------------------------------------------

    def claim(self, record: records.InstanceRecord,
              node_id: int) -> list[PciDevice]:
        """Pick and claim devices for ``record``'s requests.

        :raises: InstanceAlreadyTracked; PciDeviceRequestFailed.
        """
        existing = self.instances.get(record.uuid)
        if existing is not None:
            raise db_exc.InstanceAlreadyTracked(
                instance_uuid=record.uuid, node=node_id, status=existing.status)
        chosen = self.stats.consume_requests(
            record.requests, numa_cells=cells_arg(record.numa_cells))
        for dev in chosen:
            key = records.device_key(dev)
            if key not in self.devices:
                dev.compute_node_id = node_id
                self._insert(dev)
                device_tree.build_device_tree(self.devices.values())
            dev.claim(record.uuid)
            self._touch(dev)
        self._resync_stats()
        self.instances[record.uuid] = record
        return list(chosen)

    def allocate(self, instance_uuid: str, node: str) -> list[PciDevice]:
        """:raises: InstanceNotTracked if ``instance_uuid`` holds no claim."""
        record = self.instances.get(instance_uuid)
        if record is None or record.status != records.CLAIMED:
            raise db_exc.InstanceNotTracked(
                instance_uuid=instance_uuid, what="claim", node=node)
        devices = self.devices_of(instance_uuid)
        for dev in devices:
            if dev.status == Status.CLAIMED:
                dev.allocate(instance_uuid)
                self._touch(dev)
        self._resync_stats()
        record.status = records.ALLOCATED
        return devices

    def free(self, instance_uuid: str) -> list[PciDevice]:
        """Free the instance's devices; returns every device made available."""
        freed: list[PciDevice] = []
        for dev in self.devices_of(instance_uuid):
            self._touch(dev)
            freed.extend(dev.free())
        for dev in freed:
            if dev.is_mdev:
                # The vGPU is gone from the host with its guest.
                self._drop(records.device_key(dev))
            elif dev.vgpu_backend == "nvidia-vf":
                # The driver untyped the VF on release: it may take any
                # creatable type again, as the next inventory will confirm.
                self._untype_vf(dev)
        for key in [k for k in self.pending_removal if k in self.devices]:
            self._vanish(key)
        self._resync_stats()
        del self.instances[instance_uuid]
        return freed

    @staticmethod
    def _untype_vf(dev: PciDevice) -> None:
        dev.set_vgpu_type(None)
        extra_info = dict(dev.extra_info)
        extra_info.pop("vgpu_current_type", None)
        dev.extra_info = extra_info

    def _touch(self, dev: PciDevice) -> None:
        """Note ``dev`` and the relatives its transition may change."""
        if self._touched is None:
            return
        for each in [dev] + device_tree.ancestors(dev) + \
                device_tree.descendants(dev):
            self._touched[id(each)] = each

    def _candidates(self) -> list[PciDevice]:
        """Live devices that may have unsaved changes."""
        if self._touched is None:
            return list(self.devices.values())
        return [d for d in self._touched.values() if d.status != Status.DELETED]

    def _resync_stats(self) -> None:
        """Tell the pools about every status the state machine changed."""
        for dev in self._candidates():
            if "status" in records.changed_fields(dev):
                self.stats.update_device(dev)

    # -- writing ------------------------------------------------------------------

    def flush(self, conn: sa.Connection, node_id: int) -> bool:
        """Write every change since the last flush; False if there was none."""
        wrote = False
        for dev in self._gone:
            db_api.soft_delete_device(conn, node_id, records.device_key(dev),
                                      Status.DELETED)
            wrote = True
        for dev in self._new:
            dev.compute_node_id = node_id
            dev.id = db_api.insert_device(conn, node_id,
                                          records.row_values(dev))
            wrote = True
        for dev in self._candidates():
            key = records.device_key(dev)
            changed = records.changed_fields(dev)
            if not changed or _contains(self._new, dev):
                continue
            values = records.row_values(dev, changed)
            if key in self._flags:
                values["pending_removal"] = self._flags.pop(key)
            db_api.update_device(conn, node_id, key, values)
            wrote = True
        for key, flag in self._flags.items():
            db_api.update_device(conn, node_id, key, {"pending_removal": flag})
            wrote = True
        for dev in self._candidates():
            dev.obj_reset_changes()
        self._new, self._gone, self._flags = [], [], {}
        self._touched = {}
        return wrote
