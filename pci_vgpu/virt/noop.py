"""The no-op reference driver: the least a :class:`VirtDriver` must do.

It talks to no hypervisor.  It keeps, in memory, exactly the state a real
driver keeps on the host (the vGPUs it realised and the guests it started),
so that the compute service and the CLI can be exercised end to end on a
machine without a GPU, and so that a driver author can read, method by
method, what each hook must guarantee:

* inventory is a list of Nova-shaped device dicts (here: the list given to the
  constructor, empty by default);
* ``prepare_vgpu`` is idempotent for the same UUID and type and refuses a
  different type under the same UUID;
* ``release_vgpu`` of a vGPU that is already gone is not an error;
* ``spawn`` either defines and starts the guest or leaves nothing behind;
* ``attach_devices`` attaches every device or none.
"""

from __future__ import annotations

import copy
import dataclasses
import typing as ty

from oslo_log import log as logging

from pci_vgpu.virt import driver
from pci_vgpu.virt import exception as virt_exc
from pci_vgpu.virt import report

if ty.TYPE_CHECKING:
    from oslo_config import cfg

    from pci_vgpu.objects.pci_device import PciDevice

LOG = logging.getLogger(__name__)

NAME = "noop"


@dataclasses.dataclass
class _Guest:
    spec: driver.GuestSpec
    devices: list[str]
    running: bool = True


def attr(obj: ty.Any, name: str) -> ty.Any:
    """``obj.name``, or None when a versioned object's field is unset.

    Reading an unset field of an oslo versioned object raises instead of
    returning a default, and ``getattr(obj, name, None)`` does not catch that.
    """
    fields = getattr(obj, "fields", None)
    if fields is not None and name in fields and not obj.obj_attr_is_set(name):
        return None
    return getattr(obj, name, None)


def device_key(device: PciDevice) -> str:
    """Name a device the way a guest refers to it: mdev UUID, else address.

    :raises: VirtDriverError if the device has neither (a caller bug).
    """
    key = attr(device, "mdev_uuid") or attr(device, "address")
    if not key:
        raise virt_exc.VirtDriverError(
            driver=NAME, reason="device %r has neither mdev_uuid nor address" % (device,))
    return str(key)


class NoopDriver(driver.VirtDriver):
    """An in-memory driver; see the module docstring for what it guarantees."""

    def __init__(self, conf: cfg.ConfigOpts | None = None,
                 devices: ty.Sequence[dict[str, ty.Any]] = (),
                 hot_plug: bool = True) -> None:
        self._devices = [copy.deepcopy(dict(d)) for d in devices]
        self._hot_plug = hot_plug
        self._vgpus: dict[str, driver.VgpuInfo] = {}
        self._guests: dict[str, _Guest] = {}

    # --- inventory -------------------------------------------------------
    def describe(self) -> driver.DriverInfo:
        return driver.DriverInfo(name=NAME, hot_plug=self._hot_plug,
                                 vgpu_backends=("mdev",), connection="noop://")

    def get_pci_passthrough_devices(self) -> list[dict[str, ty.Any]]:
        """The static inventory plus one ``mdev`` dict per realised vGPU."""
        result = [copy.deepcopy(d) for d in self._devices]
        parents = {d.get("address"): d for d in result}
        for gpu in result:
            self._update_available(gpu)
        for uuid, info in sorted(self._vgpus.items()):
            parent = parents.get(info.parent_addr, {})
            result.append(self._mdev_dict(uuid, info, parent))
        return report.checked(NAME, result)

    def _update_available(self, gpu: dict[str, ty.Any]) -> None:
        """Recompute ``available`` from the vGPUs realised on ``gpu``.

        A "one-type" GPU offers only the type already in use; a "budget" GPU
        offers what is left of its budget, each instance of type T costing
        1/max(T) of the GPU.
        """
        types = gpu.get("vgpu_types") or {}
        used = [v.vgpu_type for v in self._vgpus.values()
                if v.parent_addr == gpu.get("address") and v.vgpu_type in types]
        if not used:
            return
        share = sum(1.0 / max(1, int(types[t].get("max", 1))) for t in used)
        for type_id, entry in types.items():
            cap = int(entry.get("max", entry.get("available", 0)))
            left = int(round((1.0 - share) * cap, 6))
            one_type_blocked = (gpu.get("vgpu_sharing") == "one-type"
                                and any(t != type_id for t in used))
            entry["available"] = 0 if one_type_blocked else max(0, left)

    @staticmethod
    def _mdev_dict(uuid: str, info: driver.VgpuInfo,
                   parent: dict[str, ty.Any]) -> dict[str, ty.Any]:
        vendor = parent.get("vendor_id", "0000")
        product = parent.get("product_id", "0000")
        return {
            "dev_id": "mdev_%s" % uuid.replace("-", "_"),
            "address": None, "parent_addr": info.parent_addr,
            "vendor_id": vendor, "product_id": product,
            "numa_node": parent.get("numa_node"),
            "label": "label_%s_%s" % (vendor, product),
            "dev_type": "mdev", "mdev_uuid": uuid, "mdev_type": info.vgpu_type,
            "instance_uuid": info.instance_uuid,
        }

    def init_host(self, allocated: ty.Sequence[PciDevice]) -> driver.HostInitReport:
        """Nothing survives a restart of this driver: re-create every vGPU."""
        report = driver.HostInitReport()
        owned = set()
        for dev in allocated:
            uuid = attr(dev, "mdev_uuid")
            if not uuid:
                continue
            owned.add(uuid)
            if uuid not in self._vgpus:
                self.prepare_vgpu(dev)
                report.recreated.append(uuid)
        report.orphans = [v for u, v in sorted(self._vgpus.items()) if u not in owned]
        return report

    # --- vGPU lifecycle --------------------------------------------------
    def prepare_vgpu(self, device: PciDevice) -> None:
        """Record the vGPU; same UUID and type again is a no-op.

        :raises: VgpuCreateFailed if the UUID exists with another type or the
            device is not an mdev.
        """
        uuid = attr(device, "mdev_uuid")
        vgpu_type = attr(device, "vgpu_type")
        parent = attr(device, "parent_addr")
        if not uuid or not vgpu_type:
            raise virt_exc.VgpuCreateFailed(
                driver=NAME, mdev_uuid=uuid, vgpu_type=vgpu_type, parent_addr=parent,
                reason="an mdev needs both a UUID and a type")
        known = self._vgpus.get(uuid)
        if known is not None and known.vgpu_type != vgpu_type:
            raise virt_exc.VgpuCreateFailed(
                driver=NAME, mdev_uuid=uuid, vgpu_type=vgpu_type, parent_addr=parent,
                reason="it already exists with type %s" % known.vgpu_type)
        self._vgpus[uuid] = driver.VgpuInfo(
            mdev_uuid=uuid, parent_addr=parent, vgpu_type=vgpu_type, backend="mdev",
            instance_uuid=attr(device, "instance_uuid"))

    def release_vgpu(self, device: PciDevice) -> None:
        """Forget the vGPU; one already gone is fine (see the interface)."""
        uuid = attr(device, "mdev_uuid")
        if uuid:
            self._vgpus.pop(uuid, None)

    # --- guests ----------------------------------------------------------
    def spawn(self, guest: driver.GuestSpec, devices: ty.Sequence[PciDevice]) -> None:
        """Start the guest; every vGPU must have been prepared first.

        :raises: GuestSpawnFailed naming the first missing vGPU, and then no
            guest is defined.
        """
        if guest.uuid in self._guests:
            raise virt_exc.GuestSpawnFailed(
                driver=NAME, guest=guest.name, reason="guest %s already exists" % guest.uuid)
        keys = [device_key(d) for d in devices]
        missing = [k for d, k in zip(devices, keys)
                   if attr(d, "mdev_uuid") and k not in self._vgpus]
        if missing:
            raise virt_exc.GuestSpawnFailed(
                driver=NAME, guest=guest.name,
                reason="vGPU %s was not prepared" % missing[0])
        self._guests[guest.uuid] = _Guest(spec=guest, devices=keys)
        self._set_owner(keys, guest.uuid)

    def destroy(self, guest_uuid: str) -> None:
        guest = self._guests.pop(guest_uuid, None)
        if guest is not None:
            self._set_owner(guest.devices, None)

    def attach_devices(self, guest_uuid: str, devices: ty.Sequence[PciDevice]) -> None:
        """Attach all ``devices`` or none.

        :raises: HotPlugNotSupported when built with ``hot_plug=False``;
            DeviceAttachFailed for an unknown guest, an unprepared vGPU or a
            device already attached.
        """
        guest = self._guest_or_fail(guest_uuid, devices, virt_exc.DeviceAttachFailed)
        if not self._hot_plug:
            raise virt_exc.HotPlugNotSupported(
                driver=NAME, device=device_key(devices[0]) if devices else "-",
                guest=guest_uuid, reason="this instance was built with hot_plug=False")
        keys = [device_key(d) for d in devices]
        for dev, key in zip(devices, keys):
            problem = self._attach_problem(guest, dev, key)
            if problem:
                raise virt_exc.DeviceAttachFailed(
                    driver=NAME, device=key, guest=guest_uuid, reason=problem)
        guest.devices.extend(keys)
        self._set_owner(keys, guest_uuid)

    def _attach_problem(self, guest: _Guest, dev: PciDevice, key: str) -> str | None:
        if key in guest.devices:
            return "it is already attached"
        if attr(dev, "mdev_uuid") and key not in self._vgpus:
            return "the vGPU was not prepared"
        return None

    def detach_devices(self, guest_uuid: str, devices: ty.Sequence[PciDevice]) -> None:
        """Detach ``devices``; a device not attached is not an error.

        :raises: DeviceDetachFailed for an unknown guest.
        """
        guest = self._guest_or_fail(guest_uuid, devices, virt_exc.DeviceDetachFailed)
        keys = [device_key(d) for d in devices]
        guest.devices = [k for k in guest.devices if k not in keys]
        self._set_owner(keys, None)

    def _guest_or_fail(self, guest_uuid: str, devices: ty.Sequence[PciDevice],
                       error: type[virt_exc.VirtDriverError]) -> _Guest:
        guest = self._guests.get(guest_uuid)
        if guest is None:
            raise error(driver=NAME, guest=guest_uuid,
                        device=", ".join(device_key(d) for d in devices),
                        reason="no such guest")
        return guest

    def _set_owner(self, keys: ty.Iterable[str], owner: str | None) -> None:
        for key in keys:
            if key in self._vgpus:
                self._vgpus[key] = dataclasses.replace(self._vgpus[key], instance_uuid=owner)

    def list_guests(self) -> list[driver.GuestInfo]:
        return [self._guest_info(g) for _, g in sorted(self._guests.items())]

    def _guest_info(self, guest: _Guest) -> driver.GuestInfo:
        mdevs = tuple(k for k in guest.devices if k in self._vgpus)
        addrs = tuple(k for k in guest.devices if k not in self._vgpus)
        return driver.GuestInfo(uuid=guest.spec.uuid, name=guest.spec.name,
                                running=guest.running, pci_addresses=addrs, mdev_uuids=mdevs)

    def list_vgpus(self) -> list[driver.VgpuInfo]:
        return [v for _, v in sorted(self._vgpus.items())]
