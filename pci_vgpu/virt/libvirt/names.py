"""Validation of the names that end up in sysfs paths and libvirt XML.

A vGPU type id, an mdev UUID, a PCI address and an NVIDIA VF type id all come
from configuration, the database or a flavor; each is checked here before it
can touch a path (no ``..``, no ``/``) or an XML document (UUIDs canonical).
"""

from __future__ import annotations

import re
import uuid

from pci_vgpu import request
from pci_vgpu.virt import exception

_ADDRESS_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$")
_DEVICE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
_VF_TYPE_RE = re.compile(r"^[1-9][0-9]{0,5}$")


def mdev_type(value: object) -> str:
    """Return ``value`` if it is a safe vGPU type id.

    The project's single rule for type names (:mod:`pci_vgpu.request`):
    no ``/``, no ``..``, no control characters.

    :raises: pci_vgpu.exception.InvalidVgpuTypeName naming the value.
    """
    return request.validate_vgpu_type_name(value)


def mdev_uuid(value: object) -> str:
    """Return the canonical lower-case form of the UUID ``value``.

    :raises: InvalidVgpuName unless ``value`` is a UUID string.
    """
    try:
        parsed = uuid.UUID(str(value)) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or len(value) not in (32, 36):  # type: ignore[arg-type]
        raise exception.InvalidVgpuName(
            kind="mdev UUID", value=value,
            reason="expected a UUID such as 4b20d080-1b54-4048-85b3-a6a62d165c01")
    return str(parsed)


def pci_address(value: object) -> str:
    """Return ``value`` if it is a full lower-case PCI address.

    :raises: InvalidVgpuName naming the expected ``dddd:bb:ss.f`` form.
    """
    if not isinstance(value, str) or not _ADDRESS_RE.match(value):
        raise exception.InvalidVgpuName(
            kind="PCI address", value=value,
            reason="expected lower-case hex dddd:bb:ss.f such as 0000:41:00.0")
    return value


def mdev_parent(value: object) -> str:
    """Return ``value`` if it names an mdev parent as the kernel does.

    A GPU is named by its PCI address; a virtual parent (``mtty``,
    ``mbochs``) by its device name: lower-case letters, digits, ``_.:-``.

    :raises: InvalidVgpuName naming both accepted forms.
    """
    if isinstance(value, str) and (_ADDRESS_RE.match(value) or (
            _DEVICE_NAME_RE.match(value) and ".." not in value)):
        return value
    raise exception.InvalidVgpuName(
        kind="mdev parent", value=value,
        reason="expected a PCI address such as 0000:41:00.0 or a device "
               "name such as mtty")


def vf_type_id(value: object) -> str:
    """Return ``value`` if it is a non-zero NVIDIA vGPU type id ("1155").

    :raises: InvalidVgpuName; 0 is the "untyped" marker, never a type.
    """
    text = str(value) if isinstance(value, (str, int)) else None
    if text is None or not _VF_TYPE_RE.match(text):
        raise exception.InvalidVgpuName(
            kind="NVIDIA vGPU type id", value=value,
            reason="expected a positive decimal number as listed in "
                   "nvidia/creatable_vgpu_types")
    return text

