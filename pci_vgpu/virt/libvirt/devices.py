"""Read what the driver needs from a tracker ``PciDevice``.

The driver takes the device objects of ``pci_vgpu.objects`` but only reads
a handful of facts from them; :func:`view` gathers those in one place so
the rest of the driver does not care whether a fact is a field or lives in
``extra_info``.
"""

from __future__ import annotations

import dataclasses
import typing as ty

from pci_vgpu.virt.libvirt import hostdev
from pci_vgpu.virt.libvirt import names
from pci_vgpu.virt.libvirt import nvidia_vf

MDEV = "mdev"
NVIDIA_VF = "nvidia-vf"
PCI = "pci"


@dataclasses.dataclass(frozen=True)
class DeviceView:
    """One tracker device as the libvirt driver sees it."""

    kind: str  # MDEV | NVIDIA_VF | PCI
    address: str | None
    parent_addr: str | None
    mdev_uuid: str | None
    vgpu_type: str | None
    managed: bool

    @property
    def label(self) -> str:
        if self.kind == MDEV:
            return "mdev %s on GPU %s" % (self.mdev_uuid, self.parent_addr)
        return "PCI device %s" % self.address

    def hostdev(self) -> hostdev.Hostdev:
        """The guest hostdev that plugs this device."""
        if self.kind == MDEV:
            return hostdev.mdev(ty.cast(str, self.mdev_uuid))
        return hostdev.pci(ty.cast(str, self.address),
                           managed=self.managed and self.kind != NVIDIA_VF)


def _field(device: ty.Any, name: str) -> ty.Any:
    """A field's value, None when unset (versioned objects raise instead)."""
    is_set = getattr(device, "obj_attr_is_set", None)
    if is_set is not None and name in getattr(device, "fields", {}) and not is_set(name):
        return None
    return getattr(device, name, None)


def _extra(device: ty.Any) -> dict[str, ty.Any]:
    extra = _field(device, "extra_info")
    return dict(extra) if isinstance(extra, dict) else {}


def _vgpu_type(device: ty.Any, extra: dict[str, ty.Any]) -> str | None:
    value = getattr(device, "vgpu_type", None)
    if value is None:
        value = extra.get("vgpu_type") or extra.get("mdev_type")
    return str(value) if value is not None else None


def view(device: ty.Any) -> DeviceView:
    """Classify ``device`` (a PciDevice) and validate what will be used.

    :raises: InvalidVgpuName for a bad UUID, type or address.
    """
    extra = _extra(device)
    backend = getattr(device, "vgpu_backend", None) or extra.get("vgpu_backend")
    vgpu_type = _vgpu_type(device, extra)
    if _field(device, "dev_type") == MDEV:
        return DeviceView(
            kind=MDEV, address=None,
            parent_addr=names.mdev_parent(_field(device, "parent_addr")),
            mdev_uuid=names.mdev_uuid(_field(device, "mdev_uuid")),
            vgpu_type=names.mdev_type(vgpu_type), managed=False)
    address = names.pci_address(_field(device, "address"))
    if backend == NVIDIA_VF:
        # A vendor-VFIO VF is bound to NVIDIA's variant driver: libvirt must
        # never rebind it, hence managed='no' even when used untyped.
        return DeviceView(kind=NVIDIA_VF if vgpu_type else PCI, address=address,
                          parent_addr=_field(device, "parent_addr"),
                          mdev_uuid=None,
                          vgpu_type=nvidia_vf.type_key(nvidia_vf.type_number(vgpu_type))
                          if vgpu_type else None,
                          managed=False)
    managed = str(extra.get("managed", "true")).lower() != "false"
    return DeviceView(kind=PCI, address=address,
                      parent_addr=_field(device, "parent_addr"),
                      mdev_uuid=None, vgpu_type=None, managed=managed)
