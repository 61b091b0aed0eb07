"""The virt driver interface: the only contract between pci_vgpu and a hypervisor.

The tracker and the compute service never import ``libvirt`` or ``XenAPI``;
they hold a :class:`VirtDriver` loaded by name from the stevedore namespace
``pci_vgpu.virt_drivers``.  A driver has four jobs, mirroring what Nova asks of
its virt drivers for PCI devices:

1. *Inventory*: report the host's assignable devices in Nova's
   ``pci_passthrough_devices`` shape (see ``doc/contract.rst``), including the
   vGPU types each GPU offers and the vGPUs that already exist.
2. *vGPU lifecycle*: realise a vGPU the tracker claimed (create the mdev with
   the claimed UUID, type the NVIDIA VF, or nothing yet for XenAPI where the
   VGPU object is created with the guest) and undo it.
3. *Guest hooks*: build guests with their devices, hot-plug where the
   hypervisor allows it, and unplug.
4. *Host start-up*: bring back what a host reboot lost (transient mdevs, VF
   types) for the devices the tracker says are allocated, and list what
   nobody owns.

Every method that changes the host either completes or leaves the host as it
found it, and raises a subclass of :class:`pci_vgpu.virt.exception.VirtDriverError`
naming the device and the operation.
"""

from __future__ import annotations

import abc
import dataclasses
import typing as ty

if ty.TYPE_CHECKING:
    from pci_vgpu.objects.pci_device import PciDevice


@dataclasses.dataclass(frozen=True)
class DriverInfo:
    """What a driver can do, so callers choose a flow without isinstance()."""

    #: Stevedore name of the driver ("libvirt", "xenserver", "noop").
    name: str
    #: Devices can be attached to / detached from a running guest.
    hot_plug: bool
    #: vGPU realisations this driver handles ("mdev", "nvidia-vf", "xenapi").
    vgpu_backends: tuple[str, ...]
    #: The hypervisor connection in words, without secrets.
    connection: str


@dataclasses.dataclass(frozen=True)
class GuestSpec:
    """The guest a device set is built into; small on purpose."""

    uuid: str
    name: str
    memory_mb: int = 64
    vcpus: int = 1
    #: Host NUMA node the guest's CPUs and memory are bound to, if any.
    numa_node: int | None = None


@dataclasses.dataclass(frozen=True)
class GuestInfo:
    """A guest as the hypervisor sees it, for reconciliation."""

    uuid: str
    name: str
    running: bool
    #: PCI addresses of PCI hostdevs attached to the guest.
    pci_addresses: tuple[str, ...] = ()
    #: mdev / VGPU UUIDs attached to the guest.
    mdev_uuids: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class VgpuInfo:
    """A realised vGPU found on the host (an mdev, a typed VF, a XAPI VGPU)."""

    #: mdev UUID (or pci_vgpu's UUID tag of a XAPI VGPU); None for a typed VF.
    mdev_uuid: str | None
    #: Address of the GPU the vGPU lives on (the VF itself for nvidia-vf).
    parent_addr: str | None
    vgpu_type: str
    backend: str
    #: Owner the hypervisor records (guest XML, XAPI other_config), if any.
    instance_uuid: str | None = None


@dataclasses.dataclass
class HostInitReport:
    """What :meth:`VirtDriver.init_host` did and found."""

    #: vGPUs re-created because allocated devices lacked them (mdev UUIDs or VF addresses).
    recreated: list[str] = dataclasses.field(default_factory=list)
    #: vGPUs found on the host that no allocated device owns.
    orphans: list[VgpuInfo] = dataclasses.field(default_factory=list)
    #: Orphans removed because the driver is configured to do so.
    removed: list[str] = dataclasses.field(default_factory=list)


class VirtDriver(abc.ABC):
    """Base class of the libvirt, XenServer and no-op drivers."""

    @abc.abstractmethod
    def describe(self) -> DriverInfo:
        """Say what this driver is and can do."""

    @abc.abstractmethod
    def get_pci_passthrough_devices(self) -> list[dict[str, ty.Any]]:
        """Return the host's assignable devices as Nova-shaped dicts.

        Only devices matched by ``[pci] device_spec`` are returned.  A device
        that disappears while it is being read is skipped with a log line.

        :raises: VirtDriverError if the hypervisor cannot be reached.
        """

    @abc.abstractmethod
    def init_host(self, allocated: ty.Sequence[PciDevice]) -> HostInitReport:
        """Restore vGPUs of ``allocated`` devices lost by a host reboot.

        Re-creates missing mdevs with their recorded UUID and re-applies the
        types of allocated NVIDIA VFs; reports vGPUs that no device owns and
        removes them when configured to.
        """

    @abc.abstractmethod
    def prepare_vgpu(self, device: PciDevice) -> None:
        """Realise the claimed vGPU ``device`` on the host.

        mdev: create it with ``device.mdev_uuid`` on ``device.parent_addr`` and
        type ``device.vgpu_type``; nvidia-vf: type the VF; xenapi: nothing
        (the VGPU is created with the guest).  Idempotent for an mdev that
        already exists with the same UUID and type.

        :raises: VgpuCreateFailed naming the device, type and parent.
        """

    @abc.abstractmethod
    def release_vgpu(self, device: PciDevice) -> None:
        """Undo :meth:`prepare_vgpu`; a vGPU already gone is not an error.

        :raises: VgpuRemoveFailed (the vGPU is still present).
        """

    @abc.abstractmethod
    def spawn(self, guest: GuestSpec, devices: ty.Sequence[PciDevice]) -> None:
        """Define and start ``guest`` with ``devices`` attached.

        On failure nothing of the guest is left defined.

        :raises: GuestSpawnFailed.
        """

    @abc.abstractmethod
    def destroy(self, guest_uuid: str) -> None:
        """Stop and undefine the guest; a guest already gone is not an error."""

    @abc.abstractmethod
    def attach_devices(self, guest_uuid: str, devices: ty.Sequence[PciDevice]) -> None:
        """Hot-plug ``devices`` into the running guest (live and config).

        Either every device is attached or none is.

        :raises: DeviceAttachFailed; HotPlugNotSupported if the driver or the
            guest state does not allow it.
        """

    @abc.abstractmethod
    def detach_devices(self, guest_uuid: str, devices: ty.Sequence[PciDevice]) -> None:
        """Unplug ``devices`` from the guest.

        :raises: DeviceDetachFailed; a device that could not be detached is
            still attached and must stay recorded as such.
        """

    @abc.abstractmethod
    def list_guests(self) -> list[GuestInfo]:
        """Every guest with the devices attached to it."""

    @abc.abstractmethod
    def list_vgpus(self) -> list[VgpuInfo]:
        """Every realised vGPU on the host, owned or not."""

    def close(self) -> None:
        """Release the hypervisor connection (log out, close)."""
