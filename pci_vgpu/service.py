"""The compute service: the device tracker and a virt driver, kept in step.

Nova's compute manager does this job for PCI devices: it claims devices in
the resource tracker, asks the virt driver to build the guest with them, and
records the allocation.  pci_vgpu adds a step for vGPUs (realise the claimed
mdev / VF type before the guest starts) and a reconciliation of the database
with what the hypervisor really has.

Every flow that changes the host is all-or-nothing: when one step fails the
steps already done are undone in reverse order (vGPUs released, claim freed)
and one :class:`ServerOperationFailed` is raised that names the server, the
step and the original error (kept as ``__cause__``).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import typing as ty

from oslo_log import log as logging
from oslo_utils import uuidutils

from pci_vgpu import exception
from pci_vgpu import fault
from pci_vgpu import refusal
from pci_vgpu import rollback
from pci_vgpu import server_names
from pci_vgpu.pool_errors import PciDeviceRequestFailed
from pci_vgpu.virt import driver as virt_driver
from pci_vgpu.virt.noop import attr

if ty.TYPE_CHECKING:
    from pci_vgpu.objects.pci_device import PciDevice
    from pci_vgpu.reconcile import Finding

LOG = logging.getLogger(__name__)


class ServerOperationFailed(exception.PciVgpuException):
    msg_fmt = ("%(operation)s of server %(server)s failed while %(step)s: %(reason)s; "
               "%(undone)s")


class ClaimRefused(ServerOperationFailed):
    """No pool can serve the requests: nothing was claimed or changed."""

    msg_fmt = ("%(operation)s of server %(server)s refused while claiming devices on host "
               "%(host)s: %(why)s; nothing had changed; 'pci-vgpu flavor explain "
               "%(explain)s' lists every pool")


class ServerNotFound(exception.NotFound):
    msg_fmt = "Server %(server)s not found on host %(host)s (known: %(known)s)."


class AmbiguousServerName(exception.Invalid):
    msg_fmt = ("Server name %(server)s is held by several servers (%(uuids)s); "
               "name one by its UUID.")


class ServerNameInUse(exception.Invalid):
    msg_fmt = "Server name %(name)s is already used by %(uuid)s; choose another name."


class InvalidNumaNode(exception.Invalid):
    msg_fmt = "NUMA node %(node)r is not valid: give an integer >= 0."


class NoDevicesRequested(exception.Invalid):
    msg_fmt = ("%(operation)s of server %(server)s asks for no device: the flavor needs "
               "pci_passthrough:alias=<alias>:<count> (pci-vgpu manages guests with "
               "PCI devices or vGPUs only).")


class DeviceUsedByGuest(exception.PciVgpuException):
    msg_fmt = ("device %(device)s is already used by guest %(guest)s (%(uuid)s), which "
               "pci-vgpu does not track; see 'pci-vgpu host reconcile'")


InvalidServerName = server_names.InvalidServerName


class InvalidGuestSize(exception.Invalid):
    msg_fmt = "Guest %(what)s %(value)r is not valid: give an integer >= %(minimum)d."


class NoSuchAttachedDevice(exception.Invalid):
    msg_fmt = ("Device %(device)s is not attached to server %(server)s "
               "(attached: %(attached)s).")


@dataclasses.dataclass(frozen=True)
class InstanceRecord:
    """A server as the database records it."""

    uuid: str
    name: str
    #: "claimed" or "allocated".
    status: str
    numa_node: int | None = None


class Tracker(ty.Protocol):
    """What the service needs from the device tracker (``pci_vgpu.manager``).

    Each call is one database transaction: it either happens or raises.
    """

    hostname: str

    def update_inventory(self, devices: list[dict[str, ty.Any]]) -> None:
        """Sync the driver's device dicts into the database."""

    def devices(self) -> list[PciDevice]:
        """Every live device record of this host."""

    def instances(self) -> list[InstanceRecord]:
        """Every server holding claims or allocations."""

    def devices_of(self, instance_uuid: str) -> list[PciDevice]:
        """The devices claimed or allocated to one server."""

    def group(self, server_uuid: str) -> list[InstanceRecord]:
        """The server's own claim record, then one per hot-plug, with status."""

    def record_devices(self, record_uuid: str) -> list[PciDevice]:
        """The devices of one record of :meth:`group`."""

    def claim(self, instance_uuid: str, name: str, requests: ty.Any,
              numa_node: int | None) -> list[PciDevice]:
        """Claim devices for a new server (new vGPU records included)."""

    def claim_more(self, instance_uuid: str, requests: ty.Any,
                   numa_node: int | None) -> list[PciDevice]:
        """Claim extra devices for an existing server."""

    def allocate(self, instance_uuid: str) -> None:
        """Turn the server's claims into allocations."""

    def free(self, instance_uuid: str) -> None:
        """Free every device of the server and forget it."""

    def free_devices(self, instance_uuid: str, devices: ty.Sequence[PciDevice]) -> None:
        """Free some devices of the server; it keeps the others."""

    def stats(self) -> ty.Any:
        """The node's ``PciDeviceStats`` (pools), freshly read."""

    def allocated_devices(self) -> list[PciDevice]:
        """Every allocated device of the node (for ``VirtDriver.init_host``)."""

    def explain(self, requests: ty.Any,
                numa_node: int | None) -> tuple[ty.Any, list[PciDevice]]:
        """``PciDeviceStats.explain`` and the devices a claim would pick."""

    def check_detachable(self, instance_uuid: str, devices: ty.Sequence[PciDevice]) -> None:
        """Raise if ``free_devices`` would refuse these devices."""


@dataclasses.dataclass(frozen=True)
class Server:
    """A guest as the service knows it: database record plus hypervisor view."""

    uuid: str
    name: str
    numa_node: int | None
    devices: tuple[PciDevice, ...]
    #: True/False as the hypervisor reports it; None when it has no such guest.
    running: bool | None


def device_name(dev: PciDevice) -> str:
    """How an operator names a device: mdev UUID, else PCI address."""
    return str(attr(dev, "mdev_uuid") or attr(dev, "address") or "?")


def is_vgpu(dev: PciDevice) -> bool:
    return bool(attr(dev, "mdev_uuid")) or bool(
        attr(dev, "dev_type") == "type-VF" and dev.extra_info.get("vgpu_type"))


class ComputeService:
    """Orchestrates one host's tracker and virt driver."""

    def __init__(self, driver: virt_driver.VirtDriver, tracker: Tracker) -> None:
        self.driver = driver
        self.tracker = tracker
        #: The device dicts of the last :meth:`sync_inventory`.
        self.last_inventory: list[dict[str, ty.Any]] = []

    # --- inventory -------------------------------------------------------
    def sync_inventory(self) -> list[dict[str, ty.Any]]:
        """Read the hypervisor's devices into the database; return the dicts."""
        devices = self.driver.get_pci_passthrough_devices()
        self.tracker.update_inventory(devices)
        self.last_inventory = devices
        return devices

    def init_host(self) -> virt_driver.HostInitReport:
        """What a compute service does at start-up, after a host reboot.

        The driver re-creates the vGPUs of allocated devices that the reboot
        lost (transient mdevs, VF types) and reports vGPUs nobody owns.
        """
        return self.driver.init_host(self.tracker.allocated_devices())

    def _resync(self) -> None:
        self.sync_inventory()

    def _free_claim(self, uuid: str) -> str | None:
        """Free a claim being rolled back; say so when someone else did first."""
        if uuid not in {r.uuid for r in self.tracker.instances()}:
            return "the claim had already been freed"
        self.tracker.free(uuid)
        return None

    def _resync_quietly(self, why: str) -> None:
        """Re-read the inventory after vGPUs went away, so types a GPU could
        not offer while they held it are offered again; a failure is logged."""
        try:
            self.sync_inventory()
        except Exception as exc:  # noqa: BLE001 - the operation itself succeeded
            LOG.warning("Could not re-read the inventory after %(why)s: %(err)s; run "
                        "'pci-vgpu pool list --refresh'", {"why": why, "err": _reason(exc)})

    # --- servers ---------------------------------------------------------
    def create_server(self, name: str, requests: ty.Any, numa_node: int | None = None,
                      memory_mb: int = 64, vcpus: int = 1,
                      flavor: str | None = None) -> Server:
        """Claim devices, realise vGPUs, start the guest, record the allocation.

        ``flavor`` names the flavor in a refusal (how the operator gave it).

        :raises: InvalidServerName, ServerNameInUse, InvalidNumaNode (before
            any claim); ClaimRefused when no pool can serve the requests;
            ServerOperationFailed (after rolling back) when a claim, a vGPU
            or the guest fails.
        """
        self._check_new_server(name, numa_node)
        _check_requests("Create", name, requests)
        _check_size("memory_mb", memory_mb, 1)
        _check_size("vcpus", vcpus, 1)
        uuid = uuidutils.generate_uuid()
        undo = rollback.Undo()
        step = "claiming devices"
        try:
            devices = self._claim("Create", name, requests, numa_node, flavor,
                                  lambda: self.tracker.claim(uuid, name, requests, numa_node))
            fault.point("create:claimed")
            # Runs last: freeing drops the rows of vGPUs that existed before
            # the claim; the host still has them, so read it again.
            undo.push("re-read the inventory", self._resync, cleanup=True)
            undo.push("freed the claim", functools.partial(self._free_claim, uuid))
            self._refuse_foreign(devices, uuid)
            step = "creating vGPUs"
            self._prepare_all(devices, undo, "create:vgpu-prepared")
            guest_node = numa_node if numa_node is not None else _majority_node(devices)
            step = "starting the guest"
            self.driver.spawn(virt_driver.GuestSpec(
                uuid=uuid, name=name, memory_mb=memory_mb, vcpus=vcpus,
                numa_node=guest_node), devices)
            undo.push("destroyed the guest", lambda: self.driver.destroy(uuid))
            fault.point("create:spawned")
            step = "recording the allocation"
            self.tracker.allocate(uuid)
            fault.point("create:allocated")
        except ClaimRefused:
            raise
        except Exception as exc:
            undo.run()
            raise ServerOperationFailed(operation="Create", server=name, step=step,
                                        reason=_reason(exc), undone=undo.summary()) from exc
        return self.get_server(uuid)

    def _claim(self, operation: str, server: str, requests: ty.Any, numa_node: int | None,
               flavor: str | None, claim: ty.Callable[[], list[PciDevice]]
               ) -> list[PciDevice]:
        """Run ``claim``; a refusal by the pools is explained pool by pool.

        :raises: ClaimRefused naming the flavor, aliases, types, host and
            each pool's verdict; whatever else ``claim`` raises.
        """
        try:
            return claim()
        except PciDeviceRequestFailed as exc:
            try:
                explanation, _picked = self.tracker.explain(requests, numa_node)
                why = refusal.describe(list(getattr(requests, "requests", requests)),
                                       explanation, flavor)
            except Exception:  # noqa: BLE001 - the refusal itself is what matters
                LOG.exception("Could not explain why the claim was refused")
                why = exc.format_message()
            raise ClaimRefused(operation=operation, server=server,
                               host=self.tracker.hostname, why=why,
                               explain=refusal.explain_command(flavor, numa_node)) from exc

    def _check_new_server(self, name: str, numa_node: int | None) -> None:
        server_names.validate(name)
        if numa_node is not None and (isinstance(numa_node, bool)
                                      or not isinstance(numa_node, int) or numa_node < 0):
            raise InvalidNumaNode(node=numa_node)
        # An early, friendlier refusal only: two creates racing past it are
        # decided by the database's unique key (InstanceNameInUse).
        for record in self.tracker.instances():
            if record.name == name:
                raise ServerNameInUse(name=name, uuid=record.uuid)

    def _refuse_foreign(self, devices: ty.Sequence[PciDevice], owner: str) -> None:
        """Refuse devices another guest already uses (never touch them).

        The database may list a vGPU made outside pci-vgpu as free while a
        guest uses it; giving it to a second guest would break both.  The
        claim is then rolled back and ``host reconcile`` names the guest.

        :raises: DeviceUsedByGuest naming the device and the guest.
        """
        users = {key: guest for guest in self.driver.list_guests() if guest.uuid != owner
                 for key in guest.mdev_uuids + guest.pci_addresses}
        for dev in devices:
            guest = users.get(device_name(dev))
            if guest is not None:
                raise DeviceUsedByGuest(device=device_name(dev), guest=guest.name,
                                        uuid=guest.uuid)

    def _prepare_all(self, devices: ty.Sequence[PciDevice], undo: rollback.Undo,
                     point: str) -> None:
        for dev in devices:
            if not is_vgpu(dev):
                continue
            self.driver.prepare_vgpu(dev)
            undo.push("removed vGPU %s" % device_name(dev),
                      functools.partial(self.driver.release_vgpu, dev))
            fault.point(point)

    def delete_server(self, server: str) -> Server:
        """Stop the guest, remove its vGPUs, free its devices.

        The database is freed only once the hypervisor let go of everything,
        so a vGPU that cannot be removed stays recorded (and reported by
        reconcile) instead of being handed to the next guest.

        :raises: ServerNotFound; ServerOperationFailed naming the step.
        """
        found = self.get_server(server)
        step = "destroying the guest"
        try:
            self.driver.destroy(found.uuid)
            fault.point("delete:destroyed")
            step = "removing vGPUs"
            for dev in found.devices:
                if is_vgpu(dev):
                    self.driver.release_vgpu(dev)
                    fault.point("delete:vgpu-released")
            step = "freeing devices"
            self.tracker.free(found.uuid)
        except Exception as exc:
            raise ServerOperationFailed(operation="Delete", server=found.name, step=step,
                                        reason=_reason(exc),
                                        undone="the database still records its devices") from exc
        if any(is_vgpu(d) for d in found.devices):
            self._resync_quietly("deleting server %s" % found.name)
        return found

    def attach(self, server: str, requests: ty.Any, flavor: str | None = None
               ) -> list[PciDevice]:
        """Hot-plug the devices ``requests`` ask for into a running server.

        :raises: ServerNotFound; ClaimRefused; ServerOperationFailed after
            rolling back the extra claim and vGPUs (the server keeps what it
            had).
        """
        found = self.get_server(server)
        _check_requests("Attach", found.name, requests)
        undo = rollback.Undo()
        step = "claiming devices"
        try:
            added = self._claim("Attach", found.name, requests, found.numa_node, flavor,
                                lambda: self.tracker.claim_more(found.uuid, requests,
                                                                found.numa_node))
            fault.point("attach:claimed")
            undo.push("re-read the inventory", self._resync, cleanup=True)
            undo.push("freed the new claim", lambda: self.tracker.free_devices(found.uuid, added))
            self._refuse_foreign(added, found.uuid)
            step = "creating vGPUs"
            self._prepare_all(added, undo, "create:vgpu-prepared")
            step = "attaching devices"
            self.driver.attach_devices(found.uuid, added)
            fault.point("attach:attached")
            step = "recording the allocation"
            self.tracker.allocate(found.uuid)
        except ClaimRefused:
            raise
        except Exception as exc:
            undo.run()
            raise ServerOperationFailed(operation="Attach", server=found.name, step=step,
                                        reason=_reason(exc), undone=undo.summary()) from exc
        return list(added)

    def detach(self, server: str, device: str) -> PciDevice:
        """Unplug one device (mdev UUID or PCI address) and free it.

        :raises: ServerNotFound, NoSuchAttachedDevice; ServerOperationFailed
            (the device then stays attached and recorded).
        """
        found = self.get_server(server)
        matches = [d for d in found.devices
                   if device in (attr(d, "mdev_uuid"), attr(d, "address"))]
        if not matches:
            raise NoSuchAttachedDevice(device=device, server=found.name,
                                       attached=", ".join(map(device_name, found.devices)) or "none")
        dev = matches[0]
        self.tracker.check_detachable(found.uuid, [dev])
        step = "detaching the device"
        try:
            self.driver.detach_devices(found.uuid, [dev])
            step = "removing the vGPU"
            if is_vgpu(dev):
                self.driver.release_vgpu(dev)
            step = "freeing the device"
            self.tracker.free_devices(found.uuid, [dev])
        except Exception as exc:
            raise ServerOperationFailed(operation="Detach", server=found.name, step=step,
                                        reason=_reason(exc),
                                        undone="the device stays recorded") from exc
        return dev

    def list_servers(self) -> list[Server]:
        """Every server the database or the hypervisor knows, by name."""
        guests = {g.uuid: g for g in self.driver.list_guests()}
        servers = [self._server(r, guests.get(r.uuid)) for r in self.tracker.instances()]
        return sorted(servers, key=lambda s: (s.name, s.uuid))

    def get_server(self, server: str) -> Server:
        """Find a server by UUID, else by name (never one of several).

        The database keeps names unique per host (``instances.server_name``),
        so two matches can only be a name that is another server's UUID.

        :raises: ServerNotFound listing the known names; AmbiguousServerName.
        """
        records = self.tracker.instances()
        matches = ([r for r in records if r.uuid == server]
                   or [r for r in records if r.name == server])
        if len(matches) > 1:
            raise AmbiguousServerName(server=server,
                                      uuids=", ".join(sorted(r.uuid for r in matches)))
        for record in matches:
            guests = {g.uuid: g for g in self.driver.list_guests()}
            return self._server(record, guests.get(record.uuid))
        raise ServerNotFound(server=server, host=self.tracker.hostname,
                             known=", ".join(sorted(r.name for r in records)) or "none")

    def _server(self, record: InstanceRecord,
                guest: virt_driver.GuestInfo | None) -> Server:
        devices = tuple(self.tracker.devices_of(record.uuid))
        node = record.numa_node if record.numa_node is not None else _majority_node(devices)
        return Server(uuid=record.uuid, name=record.name, numa_node=node, devices=devices,
                      running=None if guest is None else guest.running)

    # --- reconciliation --------------------------------------------------
    def reconcile(self, apply: bool = False) -> list[Finding]:
        """Compare database, hypervisor vGPUs and guests; fix with ``apply``.

        See :mod:`pci_vgpu.reconcile` for what is found and how it is fixed.
        """
        from pci_vgpu import reconcile as _reconcile
        return _reconcile.run(self, apply)


def _check_requests(operation: str, server: str, requests: ty.Any) -> None:
    if not list(getattr(requests, "requests", requests) or ()):
        raise NoDevicesRequested(operation=operation, server=server)


def _check_size(what: str, value: ty.Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidGuestSize(what=what, value=value, minimum=minimum)


def _majority_node(devices: ty.Sequence[PciDevice]) -> int | None:
    """The NUMA node most of ``devices`` sit on: where the guest should run."""
    nodes: list[int] = [attr(d, "numa_node") for d in devices
                        if attr(d, "numa_node") is not None]
    if not nodes:
        return None
    return collections.Counter(nodes).most_common(1)[0][0]


_reason = rollback.reason
