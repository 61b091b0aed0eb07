"""The device tracker: one compute node's devices, claims and allocations.

The role of Nova's ``nova/pci/manager.py`` ``PciDevTracker``, with the state
kept in a database that several worker processes (or hosts) share:

* the hypervisor's ``pci_passthrough_devices`` report adds, updates and
  removes device rows (a vanished device still in use is kept, flagged
  ``pending_removal``, and removed when freed);
* ``claim_instance`` -> ``allocate_instance`` -> ``free_instance`` move an
  instance's devices through the ``PciDevice`` state machine, choosing them
  with ``PciDeviceStats`` (pools, NUMA, vGPU capacity rules);
* a vGPU (mdev) row created by a claim is soft-deleted when freed: the vGPU
  no longer exists, and a free mdev would still occupy its GPU.

Atomicity: every write is one transaction that begins with a
compare-and-swap of the node's generation (``pci_vgpu.db.api``).  The
tracker caches the node's devices and pools with the generation they were
read at; a write whose compare-and-swap fails is retried with the node row
locked and the cache caught up under the lock (only the rows other workers
changed are applied; ``NodeState.catch_up``), so it cannot lose again.  Two
workers racing for the last vGPU: the second one's swap fails, it catches
up, finds no capacity and gets ``PciDeviceRequestFailed``; its transaction
rolled back, so nothing of it is written.  A lost swap happens before any
change, so the cache survives it; a failed write of any other kind drops
the cache, so memory never holds state the database does not.

Deadlocks (and Galera certification failures, which surface as deadlocks
at COMMIT) are retried by ``wrap_db_retry`` and counted in
``PciDevTracker.conflicts``.  A claim's name is taken by the same
transaction (``instances.server_name``, unique per node): two claims of
one name race on the database's unique key, not on a read before.
"""

from __future__ import annotations

import collections
import json
import typing as ty

from oslo_db import api as oslo_db_api
from oslo_db import exception as oslo_db_exc
from oslo_log import log as logging
import sqlalchemy as sa

from pci_vgpu.db import api as db_api
from pci_vgpu.db import exception as db_exc
from pci_vgpu.db import records
from pci_vgpu.db import state as tracker_state
from pci_vgpu.objects import fields
from pci_vgpu.objects import instance_pci_requests
from pci_vgpu.objects import pci_device

LOG = logging.getLogger(__name__)

Status = fields.PciDeviceStatus
InstanceRecord = records.InstanceRecord
#: Attempts before giving up; after the first conflict each one holds the
#: node lock, so more than two means the lock is not being honoured.
MAX_ATTEMPTS = 5
#: Retries of a write that ended in a deadlock: on Galera every write of a
#: compute node that another database node committed first fails its
#: certification at COMMIT, so a storm across nodes needs many (with
#: jittered pauses growing to 1 s: about 15 s before giving up).
DEADLOCK_RETRIES = 20
_Result = ty.TypeVar("_Result")
#: Every database access retries once on a dropped connection: pooled
#: connections are not pinged at checkout (see ``pci_vgpu.db.api``) and the
#: failed attempt has already invalidated the pool.  Writes retry through
#: ``_write_once``'s own decorator.
_read_retry = oslo_db_api.wrap_db_retry(max_retries=1, retry_on_disconnect=True)
#: Writers retry deadlocks too, with growing, jittered pauses (so that
#: retrying workers do not collide again in step).
_write_retry = oslo_db_api.wrap_db_retry(
    max_retries=DEADLOCK_RETRIES, retry_on_deadlock=True,
    retry_on_disconnect=True, retry_interval=0.01, inc_retry_interval=True,
    max_retry_interval=1.0, jitter=True)
_Requests = ty.Union[instance_pci_requests.InstancePCIRequests,
                     ty.Sequence[instance_pci_requests.InstancePCIRequest]]


class _NothingToWrite(Exception):
    """Raised inside a write that changed nothing, to skip the swap."""

    def __init__(self, result: ty.Any) -> None:
        super().__init__()
        self.result = result


class PciDevTracker:
    """Tracks the devices of compute node ``compute_node_name``.

    ``database`` is a :class:`pci_vgpu.db.api.Database` (the session
    factory); ``dev_filter`` a ``Whitelist`` (or None: every reported
    device is assignable); ``placement_policy`` "pack" or "spread".
    """

    def __init__(self, database: db_api.Database, compute_node_name: str,
                 dev_filter: ty.Any = None, placement_policy: str = "pack",
                 numa_topology: ty.Any = None) -> None:
        """:raises: DBError subclasses if the database is unreachable."""
        self._db = database
        self.hostname = compute_node_name
        self._stats_args = dict(numa_topology=numa_topology,
                                dev_filter=dev_filter,
                                placement_policy=placement_policy)
        self.dev_filter = dev_filter
        #: Conflicts met by this tracker's writes, by kind: "generation"
        #: (a lost compare-and-swap, retried under the node lock),
        #: "deadlock" (a deadlock or Galera certification failure, retried
        #: by ``wrap_db_retry``), "disconnect" (retried on a new connection).
        self.conflicts: collections.Counter[str] = collections.Counter()
        self.node_id = self._get_or_create_node()
        self._state: tracker_state.NodeState | None = None
        #: Other workers wrote lately: lock before writing (saves the
        #: attempt that would fail its compare-and-swap).
        self._contended = False

    @_write_retry  # type: ignore[untyped-decorator]
    def _get_or_create_node(self) -> int:
        """The node's id; read first, so a read-only database still works."""
        with self._db.reader() as conn:
            found = db_api.find_compute_node(conn, self.hostname)
        if found is not None:
            return found
        for _ in range(2):
            try:
                with self._db.writer() as session:
                    node_id, _gen = db_api.get_or_create_compute_node(
                        session, self.hostname)
                    return node_id
            except oslo_db_exc.DBDuplicateEntry:
                # Another worker created it first: read theirs.
                continue
        raise db_exc.DatabaseError(
            reason="could not create compute node %s" % self.hostname)

    # -- reading ------------------------------------------------------------

    def refresh(self) -> None:
        """Bring the cache up to date if another worker changed the node."""
        if self._state is None or self._state.generation != self._generation():
            self._state = self._read_state()

    @_read_retry  # type: ignore[untyped-decorator]
    def _generation(self) -> int:
        with self._db.reader() as conn:
            return db_api.get_generation(conn, self.node_id)

    @_read_retry  # type: ignore[untyped-decorator]
    def _read_state(self) -> tracker_state.NodeState:
        # The generation is read first: rows read after it are at least as
        # new, so a stale pairing only makes the next swap fail and reload.
        with self._db.reader() as conn:
            generation = db_api.get_generation(conn, self.node_id)
            rows = db_api.get_devices(conn, self.node_id)
            inst_rows = db_api.get_instances(conn, self.node_id)
        return self._caught_up(generation, rows, inst_rows)

    def _current(self) -> tracker_state.NodeState:
        if self._state is None:
            self._state = self._read_state()
        return self._state

    @property
    def stats(self) -> ty.Any:
        """The ``PciDeviceStats`` of the node as last read or written."""
        return self._current().stats

    def devices(self) -> list[pci_device.PciDevice]:
        """Copies of every live device of the node, freshly read."""
        self.refresh()
        return [pci_device.copy_device(d)
                for d in self._current().devices.values()]

    def devices_of(self, instance_uuid: str) -> list[pci_device.PciDevice]:
        """Copies of the devices ``instance_uuid`` holds, freshly read."""
        self.refresh()
        return [pci_device.copy_device(d)
                for d in self._current().devices_of(instance_uuid)]

    def instances(self) -> list[InstanceRecord]:
        """Every instance holding claims or allocations, freshly read."""
        self.refresh()
        return list(self._current().instances.values())

    def allocated_devices(self) -> list[pci_device.PciDevice]:
        """Allocated devices (for ``VirtDriver.init_host``), freshly read."""
        return [d for d in self.devices() if d.status == Status.ALLOCATED]

    # -- writing ------------------------------------------------------------

    def _write(self, operation: str,
               change: ty.Callable[[sa.Connection, tracker_state.NodeState],
                                   _Result]) -> _Result:
        """Run ``change`` in a generation-checked transaction.

        First optimistically on the cached state; after a conflict, again
        with the node locked and reloaded (see ``pci_vgpu.db.api``).
        """
        for _attempt in range(MAX_ATTEMPTS):
            try:
                return ty.cast(_Result, self._write_once(change))
            except db_exc.ConcurrentUpdateDetected:
                # Raised by the swap, before any change was made: the
                # cache is still a consistent (old) view; the locked retry
                # catches it up.
                self.conflicts["generation"] += 1
                self._contended = True
            except oslo_db_exc.DBDeadlock as exc:
                LOG.warning("Giving up %(op)s on %(node)s after %(n)d "
                            "deadlocks", {"op": operation,
                                          "node": self.hostname,
                                          "n": DEADLOCK_RETRIES + 1})
                raise db_exc.TooManyDeadlocks(
                    operation=operation, node=self.hostname,
                    attempts=DEADLOCK_RETRIES + 1,
                    detail=str(exc).strip().splitlines()[0]) from exc
        LOG.warning("Giving up %(op)s on %(node)s after %(n)d attempts",
                    {"op": operation, "node": self.hostname, "n": MAX_ATTEMPTS})
        raise db_exc.TooManyConcurrentUpdates(
            operation=operation, node=self.hostname, attempts=MAX_ATTEMPTS)

    @_write_retry  # type: ignore[untyped-decorator]
    def _write_once(self, change: ty.Callable[
            [sa.Connection, tracker_state.NodeState], _Result]) -> _Result:
        # Locked after any conflict (a deadlock retry too: the node lock
        # at least serialises the writers on one database server).
        locked = self._state is None or self._contended
        try:
            with self._db.writer() as session:
                state = self._locked_state(session) if locked \
                    else self._current()
                generation = db_api.bump_generation(
                    session, self.node_id, state.generation)
                result = change(session, state)
                if not state.flush(session, self.node_id):
                    raise _NothingToWrite(result)
        except _NothingToWrite as nothing:
            return ty.cast(_Result, nothing.result)
        except db_exc.ConcurrentUpdateDetected:
            raise
        except BaseException as exc:
            self._state = None
            self._count_conflict(exc)
            raise
        state.generation = generation
        return result

    def _count_conflict(self, exc: BaseException) -> None:
        if isinstance(exc, oslo_db_exc.DBDeadlock):
            self.conflicts["deadlock"] += 1
            self._contended = True
        elif isinstance(exc, oslo_db_exc.DBConnectionError):
            self.conflicts["disconnect"] += 1

    def _locked_state(self, session: sa.Connection) -> tracker_state.NodeState:
        """Lock the node, then reuse the cache if current, else reload."""
        generation = db_api.lock_node(session, self.node_id)
        # Nobody wrote since our last write: go back to optimistic writes.
        self._contended = (self._state is None
                           or self._state.generation != generation)
        if self._contended:
            self._state = self._caught_up(
                generation, db_api.get_devices(session, self.node_id),
                db_api.get_instances(session, self.node_id))
        assert self._state is not None
        return self._state

    def _caught_up(self, generation: int, rows: list[sa.Row[ty.Any]],
                   inst_rows: list[sa.Row[ty.Any]]) -> tracker_state.NodeState:
        """The cache brought to ``generation``: incrementally if possible."""
        state = self._state
        if state is not None:
            try:
                if state.catch_up(generation, rows, inst_rows):
                    return state
            except Exception as exc:  # a partial catch-up is thrown away
                LOG.debug("Reloading %(node)s after a failed catch-up: "
                          "%(err)s", {"node": self.hostname, "err": exc})
        return tracker_state.NodeState.from_rows(
            generation, rows, inst_rows, self._stats_args)

    def update_devices_from_hypervisor_resources(self, devices_json: str) -> None:
        """Apply the driver's ``pci_passthrough_devices`` report.

        New devices are added, changed free ones updated, vanished ones
        removed; a vanished device that is claimed or allocated is kept
        (``pending_removal``) until freed.  Devices ``dev_filter`` does not
        allow are ignored.

        :raises: InvalidDeviceReport naming the bad entry (nothing written);
            PciDeviceInvalidField for a bad field value;
            TooManyConcurrentUpdates.
        """
        reported = self._parse_report(devices_json)
        self._write("inventory update",
                    lambda session, state: state.apply_report(reported))

    def _parse_report(self, devices_json: str) -> dict[str, dict[str, ty.Any]]:
        try:
            devices = json.loads(devices_json)
        except (TypeError, ValueError) as exc:
            raise db_exc.InvalidDeviceReport(reason="not JSON (%s)" % exc)
        if not isinstance(devices, list):
            raise db_exc.InvalidDeviceReport(
                reason="top level is %s" % type(devices).__name__)
        reported: dict[str, dict[str, ty.Any]] = {}
        for dev in devices:
            key = tracker_state.validate_device_dict(dev)
            if self.dev_filter is not None and \
                    not self.dev_filter.device_assignable(dev):
                continue
            reported[key] = dev
        return reported

    def claim_instance(self, instance_uuid: str, pci_requests: _Requests,
                       numa_cells: ty.Sequence[int] | None = None,
                       instance_name: str | None = None,
                       unique_name: bool = True
                       ) -> list[pci_device.PciDevice]:
        """Claim devices for every request of ``instance_uuid``.

        ``numa_cells`` are the host NUMA node ids of the guest's cells.
        ``instance_name``, when given with ``unique_name``, is taken as the
        node's unique server name in the claim's own transaction (the
        database's unique key decides between racing claims, not a read
        before); ``unique_name=False`` records a name shared with another
        claim (a hot-plug attachment of that server).
        Returns copies of the claimed devices (vGPUs created by the claim
        included, with their new ``mdev_uuid``).

        :raises: PciDeviceRequestFailed when the node cannot satisfy the
            requests; InstanceNameInUse when another claim holds the name;
            InstanceAlreadyTracked; InvalidPciRequest;
            TooManyConcurrentUpdates; TooManyDeadlocks.  Nothing is
            written when any of them is raised.
        """
        requests = _request_list(pci_requests)
        record = InstanceRecord(
            uuid=instance_uuid, name=instance_name, status=records.CLAIMED,
            requests=requests,
            numa_cells=list(numa_cells) if numa_cells is not None else None)

        def change(session: sa.Connection,
                   state: tracker_state.NodeState) -> list[pci_device.PciDevice]:
            devices = state.claim(record, self.node_id)
            db_api.insert_instance(session, self.node_id,
                                   records.instance_values(record, unique_name))
            return devices

        try:
            claimed = self._write("claim", change)
        except oslo_db_exc.DBDuplicateEntry as exc:
            # The whole transaction rolled back: no device was claimed.
            raise self._duplicate(exc, record) from exc
        return [pci_device.copy_device(d) for d in claimed]

    def _duplicate(self, exc: oslo_db_exc.DBDuplicateEntry,
                   record: InstanceRecord) -> Exception:
        """The error for a claim that broke an ``instances`` unique key."""
        if "server_name" in (exc.columns or ()) and record.name:
            holder = self._name_holder(record.name)
            return db_exc.InstanceNameInUse(
                name=record.name, node=self.hostname,
                holder=holder or "another server")
        if "uuid" in (exc.columns or ()):
            return db_exc.InstanceAlreadyTracked(
                instance_uuid=record.uuid, node="another compute node",
                status="unknown")
        return ty.cast(Exception, exc)

    @_read_retry  # type: ignore[untyped-decorator]
    def _name_holder(self, name: str) -> str | None:
        with self._db.reader() as conn:
            return db_api.get_server_name_holder(conn, self.node_id, name)

    def allocate_instance(self, instance_uuid: str) -> list[pci_device.PciDevice]:
        """Turn the claim of ``instance_uuid`` into an allocation.

        :raises: InstanceNotTracked if it holds no claim;
            TooManyConcurrentUpdates.
        """
        def change(session: sa.Connection,
                   state: tracker_state.NodeState) -> list[pci_device.PciDevice]:
            devices = state.allocate(instance_uuid, self.hostname)
            db_api.set_instance_status(session, instance_uuid,
                                       records.ALLOCATED)
            return devices

        allocated = self._write("allocate", change)
        return [pci_device.copy_device(d) for d in allocated]

    def free_instance(self, instance_uuid: str) -> list[pci_device.PciDevice]:
        """Free every device ``instance_uuid`` holds (claimed or allocated).

        vGPU rows are soft-deleted; devices pending removal are removed.
        Freeing an instance that holds nothing is a no-op (undo paths and
        ``clean_usage`` may free twice).

        :raises: TooManyConcurrentUpdates.
        """
        def change(session: sa.Connection,
                   state: tracker_state.NodeState) -> list[pci_device.PciDevice]:
            if instance_uuid not in state.instances:
                return []
            freed = state.free(instance_uuid)
            db_api.delete_instance(session, instance_uuid)
            return freed

        freed = self._write("free", change)
        return [pci_device.copy_device(d) for d in freed]

    def clean_usage(self, existing_instance_uuids: ty.Iterable[str]) -> list[str]:
        """Free the devices of every instance not in ``existing_instance_uuids``.

        Returns the UUIDs of the instances freed.

        :raises: TooManyConcurrentUpdates.
        """
        keep = set(existing_instance_uuids)
        self.refresh()
        gone = [uuid for uuid in self._current().instances if uuid not in keep]
        for uuid in gone:
            LOG.info("Freeing devices of vanished instance %(uuid)s on "
                     "%(node)s", {"uuid": uuid, "node": self.hostname})
            self.free_instance(uuid)
        return gone

    def support_requests(self, pci_requests: _Requests,
                         numa_cells: ty.Sequence[int] | None = None) -> bool:
        """Whether the node could satisfy the requests now (no claim made)."""
        self.refresh()
        requests = _request_list(pci_requests)
        cells = tracker_state.cells_arg(numa_cells)
        return bool(self._current().stats.support_requests(
            requests, numa_cells=cells))


def _request_list(pci_requests: _Requests
                  ) -> list[instance_pci_requests.InstancePCIRequest]:
    """Accept an ``InstancePCIRequests`` or a plain list of requests."""
    if isinstance(pci_requests, instance_pci_requests.InstancePCIRequests):
        return list(pci_requests.requests)
    return list(pci_requests)
