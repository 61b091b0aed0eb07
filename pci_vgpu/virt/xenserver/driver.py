"""The XenServer / XCP-ng virt driver: GPUs and vGPUs through XenAPI.

Inventory comes from XAPI's PGPU / PCI / GPU_group / VGPU_type / VGPU
records (:mod:`.inventory`); guests are XAPI VMs whose vGPUs are ``VGPU``
objects created while the VM is halted (:mod:`.guests`, which also says
what XAPI decides itself: the pGPU is chosen at ``VM.start`` by the GPU
group's allocation algorithm and cannot be pinned through the API).

Because XAPI creates a vGPU together with its guest, :meth:`prepare_vgpu`
only checks that the claimed type and pGPU exist; :meth:`spawn` does the
work and, on any XAPI ``Failure``, destroys what it created before raising
:class:`~pci_vgpu.virt.exception.GuestSpawnFailed` with XAPI's code and
what it means.  vGPUs cannot be hot-plugged on XenServer.

An empty ``[xenserver] connection_url`` starts the bundled XAPI simulator
on 127.0.0.1 with ``[xenserver] simulator_host`` (used by the demo), its
objects kept in ``[host] state_dir`` between processes; it is stopped by
:meth:`close`.
"""

from __future__ import annotations

import logging
import typing as ty

from oslo_config import cfg

from pci_vgpu import exception
from pci_vgpu.virt import driver as virt_driver
from pci_vgpu.virt import exception as virt_exc
from pci_vgpu.virt import report
from pci_vgpu.virt.xenserver import guests
from pci_vgpu.virt.xenserver import inventory
from pci_vgpu.virt.xenserver import session as xsession

if ty.TYPE_CHECKING:
    from pci_vgpu.objects.pci_device import PciDevice

LOG = logging.getLogger(__name__)
NAME = "xenserver"


class InvalidNumaMap(exception.Invalid):
    msg_fmt = ("[xenserver] pci_numa_nodes item %(item)r is invalid: use "
               "PCI_ADDRESS_PREFIX=NODE with a non-negative integer NODE")


def parse_numa_map(items: ty.Sequence[str]) -> dict[str, str]:
    """``["0000:08=0"]`` -> ``{"0000:08": "0"}``.

    :raises: InvalidNumaMap naming the bad item.
    """
    result = {}
    for item in items:
        prefix, sep, node = item.partition("=")
        if not sep or not prefix.strip() or not node.strip().isdigit():
            raise InvalidNumaMap(item=item)
        result[prefix.strip().lower()] = node.strip()
    return result


class XenServerDriver(virt_driver.VirtDriver):
    """vGPUs and whole GPUs on a XenServer host, through XAPI."""

    def __init__(self, conf: cfg.ConfigOpts, dev_filter: ty.Any = None) -> None:
        group = conf.xenserver
        self._numa_map = parse_numa_map(group.pci_numa_nodes)
        self._filter = dev_filter
        self._state_dir = conf.host.state_dir
        self._simulator: ty.Any = None
        url = group.connection_url
        if not url:
            url = self._start_simulator(group)
        self._session = xsession.XapiSession(
            url, group.connection_username, group.connection_password,
            xsession.Timeouts(connect=group.connect_timeout, call=group.call_timeout))

    def _start_simulator(self, group: ty.Any) -> str:
        # Imported here: a real deployment never loads the simulator.
        from pci_vgpu.virt.xenserver.simulator import Simulator

        self._simulator = Simulator(group.simulator_host, group.connection_username,
                                    group.connection_password,
                                    state_dir=str(self._state_dir)).start()
        LOG.info("Started the XAPI simulator (%(host)s) at %(url)s",
                 {"host": group.simulator_host, "url": self._simulator.url})
        return str(self._simulator.url)

    @property
    def simulator(self) -> ty.Any:
        """The bundled simulator this driver started, or None."""
        return self._simulator

    def _call(self, method: str, *args: object) -> ty.Any:
        return self._session.call(method, *args)

    def _snapshot(self) -> inventory.Snapshot:
        return inventory.Snapshot.read(self._call)

    def describe(self) -> virt_driver.DriverInfo:
        return virt_driver.DriverInfo(
            name=NAME, hot_plug=False, vgpu_backends=("xenapi",),
            connection="%s as %s" % (self._session.url, self._session.username))

    def get_pci_passthrough_devices(self) -> list[dict[str, ty.Any]]:
        """GPUs and existing vGPUs that ``[pci] device_spec`` lets through.

        A GPU goes through ``dev_filter.filter_device`` (which may add tags
        and narrow its vGPU types).  A vGPU is reported when a GPU of its
        group passed and, if it runs on a pGPU, the filter admits it.
        """
        snap = self._snapshot()
        devices = inventory.devices(snap, self._call, self._numa_map)
        if self._filter is None:
            return report.checked(NAME, devices)
        gpus = [f for f in (self._filter.filter_device(d) for d in devices
                            if d["dev_type"] != "mdev") if f is not None]
        groups = {snap.pgpus[d["dev_id"]]["GPU_group"] for d in gpus}
        vgpus = [d for d in devices if d["dev_type"] == "mdev"
                 and snap.vgpus[d["dev_id"]]["GPU_group"] in groups
                 and (d["parent_addr"] is None or self._filter.device_assignable(d))]
        return report.checked(NAME, gpus + vgpus)

    def init_host(self, allocated: ty.Sequence[PciDevice]) -> virt_driver.HostInitReport:
        """Nothing to re-create (XAPI keeps VGPUs with their VMs); report orphans."""
        owned = {str(d.mdev_uuid) for d in allocated if d.mdev_uuid}
        result = virt_driver.HostInitReport()
        result.orphans = [v for v in self.list_vgpus() if v.mdev_uuid not in owned]
        return result

    def prepare_vgpu(self, device: PciDevice) -> None:
        """Check the claimed type and pGPU exist; XAPI creates the VGPU at spawn.

        :raises: VgpuCreateFailed naming the device, type and parent.
        """
        try:
            guests.plan(self._snapshot(), "check", [device])
        except guests.PlanError as exc:
            raise virt_exc.VgpuCreateFailed(
                driver=NAME, mdev_uuid=device.mdev_uuid, vgpu_type=device.vgpu_type,
                parent_addr=device.parent_addr, reason=str(exc)) from None

    def release_vgpu(self, device: PciDevice) -> None:
        """Destroy the device's VGPU if it is left on a halted VM.

        :raises: VgpuRemoveFailed while it is attached to a running VM.
        """
        snap = self._snapshot()
        for vgpu in snap.vgpus:
            if snap.vgpu_identity(vgpu) != str(device.mdev_uuid):
                continue
            try:
                self._call("VGPU.destroy", vgpu)
            except virt_exc.VirtDriverError as exc:
                raise virt_exc.VgpuRemoveFailed(
                    driver=NAME, mdev_uuid=device.mdev_uuid,
                    parent_addr=device.parent_addr, reason=str(exc)) from None

    def spawn(self, guest: virt_driver.GuestSpec, devices: ty.Sequence[PciDevice]) -> None:
        """Create the VM halted, add one VGPU per device, start it.

        :raises: GuestSpawnFailed (nothing of the guest is left on the host).
        """
        snap = self._snapshot()
        if guests.find_vm(snap, guest.uuid) is not None:
            raise virt_exc.GuestSpawnFailed(driver=NAME, guest=guest.uuid,
                                            reason="a VM for this guest already exists")
        try:
            plans = guests.plan(snap, guest.uuid, devices)
            vm = guests.build_and_start(self._call, guest, plans)
        except (guests.PlanError, virt_exc.VirtDriverError) as exc:
            raise virt_exc.GuestSpawnFailed(driver=NAME, guest=guest.uuid,
                                            reason=snap.name_refs(str(exc))) from None
        try:
            guests.check_placement(self._call, vm, plans)
        except virt_exc.VirtDriverError as exc:
            # Only a warning rides on it, and the guest already runs: failing
            # spawn now would make the caller free a claim the guest uses.
            LOG.warning("Guest %(guest)s started; its vGPU placement could not be "
                        "checked: %(err)s", {"guest": guest.uuid, "err": exc})

    def destroy(self, guest_uuid: str) -> None:
        """Shut the VM down and destroy it with its VGPUs; gone is fine."""
        vm = guests.find_vm(self._snapshot(), guest_uuid)
        if vm is None:
            return
        try:
            guests.teardown(self._call, vm)
        except virt_exc.VirtDriverError as exc:
            raise virt_exc.VirtDriverError(
                driver=NAME, reason="destroying guest %s: %s" % (guest_uuid, exc)) from None

    def attach_devices(self, guest_uuid: str, devices: ty.Sequence[PciDevice]) -> None:
        """XAPI resolves vGPUs only when a VM starts: no hot-plug.

        :raises: HotPlugNotSupported.
        """
        names = ", ".join(str(d.mdev_uuid or d.address) for d in devices)
        raise virt_exc.HotPlugNotSupported(
            driver=NAME, device=names, guest=guest_uuid,
            reason="XAPI creates vGPUs only on a halted VM; stop, change and start the guest")

    def detach_devices(self, guest_uuid: str, devices: ty.Sequence[PciDevice]) -> None:
        """Destroy the devices' VGPUs on the guest's halted VM.

        :raises: DeviceDetachFailed (e.g. the VM is running); what was not
            destroyed stays attached.
        """
        snap = self._snapshot()
        vm = guests.find_vm(snap, guest_uuid)
        wanted = {str(d.mdev_uuid) for d in devices if d.mdev_uuid}
        for vgpu in (snap.vms[vm]["VGPUs"] if vm else []):
            if snap.vgpu_identity(vgpu) not in wanted:
                continue
            try:
                self._call("VGPU.destroy", vgpu)
            except virt_exc.VirtDriverError as exc:
                raise virt_exc.DeviceDetachFailed(
                    driver=NAME, device=snap.vgpu_identity(vgpu), guest=guest_uuid,
                    reason=str(exc)) from None

    def list_guests(self) -> list[virt_driver.GuestInfo]:
        snap = self._snapshot()
        result = []
        for ref, rec in snap.vms.items():
            if rec.get("is_a_template") or rec.get("is_control_domain"):
                continue
            passthrough = [v for v in rec["VGPUs"] if snap.is_passthrough(snap.vgpus[v]["type"])]
            result.append(virt_driver.GuestInfo(
                uuid=rec["other_config"].get(inventory.VM_INSTANCE_KEY, rec["uuid"]),
                name=rec["name_label"], running=rec["power_state"] == "Running",
                pci_addresses=tuple(a for a in (snap.vgpu_parent(v) for v in passthrough) if a),
                mdev_uuids=tuple(snap.vgpu_identity(v) for v in rec["VGPUs"]
                                 if v not in passthrough)))
        return result

    def list_vgpus(self) -> list[virt_driver.VgpuInfo]:
        snap = self._snapshot()
        return [virt_driver.VgpuInfo(
                    mdev_uuid=d["mdev_uuid"], parent_addr=d["parent_addr"],
                    vgpu_type=d["mdev_type"], backend="xenapi",
                    instance_uuid=d["instance_uuid"])
                for d in (inventory.vgpu_device(snap, v, self._numa_map) for v in snap.vgpus)
                if d is not None]

    def close(self) -> None:
        """Log out, and stop the bundled simulator if this driver started it."""
        self._session.close()
        if self._simulator is not None:
            self._simulator.stop()
            self._simulator = None
