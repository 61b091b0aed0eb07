"""``[pci] device_spec``: which host devices may be given to guests.

Each option value is a JSON object, or a list of them, with Nova's keys:
``vendor_id`` / ``product_id`` (hex, ``*`` or absent = any), ``address``
(a glob string ``[[[[domain]:]bus]:][slot][.[function]]`` with ``*``
wildcards, or a dict of regexes with keys ``domain``, ``bus``, ``slot``,
``function``, each matched from the start of the field as Nova does),
``devname`` and free-form tags (``physical_network``, ``managed``, ...).

vGPU additions:

* a device without a PCI address (an mdev, a XAPI VGPU) matches through its
  parent GPU's address (``parent_addr``);
* an optional ``"vgpu_types": [...]`` narrows which vGPU types of a matched
  GPU are offered for new vGPUs.  A type named in the spec matches a GPU's
  type entry by id, name or identifier (see ``doc/contract.rst``).  A vGPU
  that already exists passes with its GPU whatever its type: it occupies the
  GPU (the pools count a type not offered as foreign and never hand it out),
  and dropping it from the report would let a claim over-commit the GPU.

A virtual mdev parent (the kernel's ``mtty``, ``mdpy``, ``mbochs`` samples:
a device under ``/sys/class/mdev_bus`` that is no PCI function) is named by
its kernel name, ``{"mdev_parent": "mtty", "vgpu_types": ["mtty-2"]}``, in a
key of its own rather than in ``address``: ``address`` keeps Nova's meaning
(a PCI address glob, which ``mtty`` is not), and a spec that names a PCI GPU
never admits a virtual parent or the reverse.  ``mdev_parent`` cannot be
combined with ``address``, ``devname``, ``vendor_id`` or ``product_id``
(such a parent has none; the driver reports it with the ``ffff`` placeholder
ids, see ``doc/contract.rst``), and a PCI address in it is refused with a
pointer to ``address``.  It admits the parent and its mdevs.

A spec giving a PF's exact address also admits its VFs (Nova's rule; the
VF's ``parent_addr`` names its PF, so no sysfs look-up is needed).  ``devname`` matches the ``devname`` key of
a device dict rather than resolving a netdev through sysfs.
"""

from __future__ import annotations

import copy
import json
import re
import typing as ty

from oslo_utils import strutils

from pci_vgpu import exception
from pci_vgpu import pool_devices
from pci_vgpu import vgpu_types

if ty.TYPE_CHECKING:
    from pci_vgpu.objects.pci_device import PciDevice

ANY = "*"
#: (name, maximum, width) of each address field, in address order.
_ADDRESS_FIELDS = (("domain", 0xFFFF, 4), ("bus", 0xFF, 2),
                   ("slot", 0x1F, 2), ("function", 0x7, 1))
_ADDRESS_RE = re.compile(
    r"([0-9a-fA-F]{4}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])")
_BOOL_TAGS = ("managed", "live_migratable", "one_time_use")
#: A virtual mdev parent's kernel name: what ``/sys/class/mdev_bus`` shows.
#: At most 12 characters because the tracker stores it where a PCI address
#: goes (``pci_devices.address`` and ``parent_addr`` are String(12), Nova's
#: width), and a longer name would fail there on MariaDB and PostgreSQL.
#: The characters are those ``virt.libvirt.names.mdev_parent`` accepts.
_MDEV_PARENT_RE = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,11}")
#: Keys a virtual parent does not have, so an ``mdev_parent`` spec refuses.
_NOT_WITH_MDEV_PARENT = ("vendor_id", "product_id", "address", "devname")
#: Keys a spec may have: Nova's matching keys and tags, plus ``vgpu_types``.
#: Nova takes any other key as a tag, which no alias can ask for: almost
#: always a typo (``vendorid``), so ``config check`` reports it.
KNOWN_KEYS = ("vendor_id", "product_id", "address", "devname", "mdev_parent",
              "vgpu_types",
              "physical_network", "trusted", "remote_managed", "managed",
              "live_migratable", "one_time_use", "resource_class", "traits")
#: Tags copied from the spec onto a matched device dict (Nova's).
_DEVICE_TAGS = ("managed", "live_migratable")


def split_address(address: str) -> tuple[str, str, str, str]:
    """``"0000:41:00.0"`` -> ``("0000", "41", "00", "0")``, lower case.

    :raises: PciDeviceWrongAddressFormat
    """
    match = _ADDRESS_RE.fullmatch(address or "")
    if not match:
        raise exception.PciDeviceWrongAddressFormat(address=address)
    return ty.cast(tuple[str, str, str, str],
                   tuple(part.lower() for part in match.groups()))


def _hex_field(name: str, value: str, maximum: int, width: int,
               spec: ty.Any) -> str:
    """Normalise one hex number of a spec, or ``*``."""
    value = value.strip()
    if value in (ANY, ""):
        return ANY
    try:
        number = int(value, 16)
    except ValueError:
        raise exception.PciConfigInvalidSpec(
            reason="%s %r in %s is not a hex number" % (name, value, spec))
    if number > maximum:
        raise exception.PciConfigInvalidSpec(
            reason="%s %r in %s is greater than the maximum %X" % (
                name, value, spec, maximum))
    return "%0*x" % (width, number)


class AddressGlob:
    """``[[[[domain]:]bus]:][slot][.[function]]``, missing or ``*`` = any."""

    def __init__(self, glob: str) -> None:
        head, _, function = glob.partition(".")
        parts = head.split(":") if head else []
        if len(parts) > 3:
            raise exception.PciDeviceWrongAddressFormat(address=glob)
        parts = [ANY] * (3 - len(parts)) + parts + [function]
        self.fields = tuple(
            _hex_field(name, part, maximum, width, repr(glob))
            for part, (name, maximum, width) in zip(parts, _ADDRESS_FIELDS))

    def match(self, address: str) -> bool:
        return all(want in (ANY, got)
                   for want, got in zip(self.fields, split_address(address)))

    def is_exact(self) -> bool:
        """True when the glob names one function (no field left to ``*``)."""
        return ANY not in self.fields


class AddressRegex:
    """Dict of regexes per field; a missing field matches anything."""

    def __init__(self, regexes: dict[str, ty.Any]) -> None:
        names = [name for name, _, _ in _ADDRESS_FIELDS]
        unknown = sorted(set(regexes) - set(names))
        if unknown:
            raise exception.PciDeviceWrongAddressFormat(address=regexes)
        try:
            self.regexes = tuple(re.compile(str(regexes.get(name, ".*")))
                                 for name in names)
        except re.error:
            raise exception.PciDeviceWrongAddressFormat(address=regexes)

    def match(self, address: str) -> bool:
        return all(regex.match(part) for regex, part in
                   zip(self.regexes, split_address(address)))


def _address_spec(address: ty.Any) -> AddressGlob | AddressRegex:
    if isinstance(address, str):
        return AddressGlob(address)
    if isinstance(address, dict):
        return AddressRegex(address)
    raise exception.PciDeviceWrongAddressFormat(address=address)


class PciDeviceSpec:
    """One ``device_spec`` entry: what it matches and the tags it gives."""

    def __init__(self, dev_spec: dict[str, ty.Any]) -> None:
        self.dev_spec_conf = copy.deepcopy(dev_spec)
        tags = dict(dev_spec)
        label = json.dumps(dev_spec, sort_keys=True)
        self.label = label
        #: Keys outside :data:`KNOWN_KEYS` (kept as tags, as Nova does).
        self.unknown_keys = sorted(k for k in dev_spec if k not in KNOWN_KEYS)
        self.vendor_id = _hex_field("vendor_id", _id_string(
            "vendor_id", tags.pop("vendor_id", ANY), label), 0xFFFF, 4, label)
        self.product_id = _hex_field("product_id", _id_string(
            "product_id", tags.pop("product_id", ANY), label), 0xFFFF, 4, label)
        self.devname: str | None = tags.pop("devname", None)
        #: Kernel name of the virtual mdev parent this spec names, or None.
        self.mdev_parent = _mdev_parent(tags.pop("mdev_parent", None),
                                        dev_spec, label)
        address = tags.pop("address", None)
        if address is not None and self.devname:
            raise exception.PciDeviceInvalidDeviceName(spec=label)
        self.address = _address_spec(address if address is not None
                                     else "*:*:*.*")
        self.vgpu_types = _spec_vgpu_types(tags.pop("vgpu_types", None),
                                           label)
        for tag in _BOOL_TAGS:
            if tags.get(tag) is not None:
                tags[tag] = _bool_tag(tag, tags[tag], label)
        self.tags: dict[str, ty.Any] = tags

    def get_tags(self) -> dict[str, ty.Any]:
        return self.tags

    def match(self, dev_dict: ty.Mapping[str, ty.Any]) -> bool:
        """Whether this spec admits the device dict (see module doc)."""
        return self._ids_match(dev_dict) and self._place_matches(dev_dict)

    def _ids_match(self, dev: ty.Mapping[str, ty.Any]) -> bool:
        return (self.vendor_id in (ANY, str(dev.get("vendor_id")).lower())
                and self.product_id in (ANY,
                                        str(dev.get("product_id")).lower()))

    def _place_matches(self, dev: ty.Mapping[str, ty.Any]) -> bool:
        if self.mdev_parent is not None:
            # The parent reports its name as its address; its mdevs name it
            # in parent_addr.  No PCI address is ever equal to such a name.
            return bool(self.mdev_parent in (dev.get("address"),
                                             dev.get("parent_addr")))
        if self.devname:
            return bool(dev.get("devname") == self.devname)
        address = dev.get("address") or dev.get("parent_addr")
        if not address:
            return False
        try:
            return self.address.match(address) or self._names_vfs_pf(dev)
        except exception.PciDeviceWrongAddressFormat:
            return False

    def _names_vfs_pf(self, dev: ty.Mapping[str, ty.Any]) -> bool:
        # Nova: a spec giving a PF's exact address admits its VFs too (it
        # checks in sysfs that the address is a PF; a VF's parent_addr is
        # its PF by definition).
        parent = dev.get("parent_addr")
        return bool(dev.get("dev_type") == "type-VF" and parent
                    and isinstance(self.address, AddressGlob)
                    and self.address.is_exact() and self.address.match(parent))

    def offered_vgpu_types(
            self, vgpu_types: dict[str, dict[str, ty.Any]]
    ) -> dict[str, dict[str, ty.Any]]:
        """The GPU's type entries this spec offers (all when it says none)."""
        if not self.vgpu_types:
            return dict(vgpu_types)
        return {type_id: entry for type_id, entry in vgpu_types.items()
                if self.vgpu_types.intersection(
                    pool_devices.type_names(type_id, entry))}

    def match_pci_obj(self, pci_obj: PciDevice) -> bool:
        return self.match(device_dict_of(pci_obj))

    def enhanced_pci_device_with_spec_tags(self, dev: dict[str, ty.Any]) -> None:
        """Copy the managed / live_migratable tags onto ``dev`` (Nova's)."""
        for tag in _DEVICE_TAGS:
            if self.tags.get(tag) is not None:
                dev[tag] = self.tags[tag]


def _id_string(name: str, value: ty.Any, label: str) -> str:
    """A vendor/product id must be a hex *string*: ``4318`` is not ``"10de"``.

    ``str(4318)`` would be read as hex 0x4318 and match another vendor.

    :raises: PciConfigInvalidSpec naming the key and value.
    """
    if not isinstance(value, str):
        raise exception.PciConfigInvalidSpec(
            reason="%s %r in %s is not a string; write it as a string of 4 hex "
                   "digits, e.g. \"10de\"" % (name, value, label))
    return value


def _mdev_parent(value: ty.Any, dev_spec: dict[str, ty.Any],
                 label: str) -> str | None:
    """The ``mdev_parent`` of a spec, checked (see the module doc).

    :raises: PciConfigInvalidSpec naming the value and what is allowed.
    """
    if value is None:
        return None
    if isinstance(value, str) and _ADDRESS_RE.fullmatch(value):
        raise exception.PciConfigInvalidSpec(
            reason="mdev_parent %r in %s is a PCI address; name a PCI GPU "
                   "with \"address\" and keep mdev_parent for a parent that "
                   "is no PCI device, such as \"mtty\"" % (value, label))
    if not isinstance(value, str) or not _MDEV_PARENT_RE.fullmatch(value) \
            or ".." in value:
        raise exception.PciConfigInvalidSpec(
            reason="mdev_parent %r in %s is not a virtual mdev parent's "
                   "kernel name: expected 1-12 lower-case letters, digits, "
                   "'_', '.', ':' or '-' as under /sys/class/mdev_bus, such as "
                   "\"mtty\"" % (value, label))
    clashing = [key for key in _NOT_WITH_MDEV_PARENT if key in dev_spec]
    if clashing:
        raise exception.PciConfigInvalidSpec(
            reason="mdev_parent %r in %s cannot be combined with %s: a "
                   "virtual mdev parent has no PCI address, vendor, product "
                   "or netdev" % (value, label, ", ".join(clashing)))
    return value


def _spec_vgpu_types(value: ty.Any, label: str) -> frozenset[str]:
    try:
        return vgpu_types.type_names(value)
    except vgpu_types.VgpuTypesInvalid as exc:
        raise exception.PciConfigInvalidSpec(
            reason="%s in %s" % (exc.format_message(), label))


def _bool_tag(tag: str, value: ty.Any, label: str) -> str:
    try:
        return "true" if strutils.bool_from_string(value, strict=True) \
            else "false"
    except ValueError:
        raise exception.PciConfigInvalidSpec(
            reason="cannot parse tag %r value %r in %s: expected a boolean "
                   "such as 'true' or 'false'" % (tag, value, label))


def device_dict_of(pci_obj: PciDevice) -> dict[str, ty.Any]:
    """The keys of a PciDevice that spec matching looks at."""
    return {
        "vendor_id": pci_obj.vendor_id, "product_id": pci_obj.product_id,
        "address": pci_obj.address, "parent_addr": pci_obj.parent_addr,
        "dev_type": pci_obj.dev_type, "vgpu_type": pci_obj.vgpu_type,
    }


def parse_device_specs(values: ty.Iterable[str]) -> list[PciDeviceSpec]:
    """Parse every ``device_spec`` option value.

    :raises: PciConfigInvalidSpec naming the value.
    """
    specs: list[PciDeviceSpec] = []
    for raw in values:
        try:
            parsed = json.loads(raw)
        except ValueError as exc:
            raise exception.PciConfigInvalidSpec(
                reason="invalid entry %r: not JSON (%s)" % (raw, exc))
        entries = [parsed] if isinstance(parsed, dict) else parsed
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) for e in entries):
            raise exception.PciConfigInvalidSpec(
                reason="invalid entry %r: expected a JSON object or a list "
                       "of objects" % raw)
        specs.extend(PciDeviceSpec(entry) for entry in entries)
    return specs


class Whitelist:
    """The parsed ``[pci] device_spec``; the first matching spec wins."""

    def __init__(self, specs: ty.Iterable[str] | None = None) -> None:
        self.specs = parse_device_specs(specs or [])

    def device_assignable(
            self, dev_dict: ty.Mapping[str, ty.Any]) -> PciDeviceSpec | None:
        """The spec admitting ``dev_dict``, or None."""
        for spec in self.specs:
            if spec.match(dev_dict):
                return spec
        return None

    def get_devspec(self, pci_dev: PciDevice) -> PciDeviceSpec | None:
        """The spec admitting a PciDevice object, or None."""
        return self.device_assignable(device_dict_of(pci_dev))

    def filter_device(
            self, dev_dict: ty.Mapping[str, ty.Any]) -> dict[str, ty.Any] | None:
        """A copy of ``dev_dict`` as the spec offers it, or None.

        The copy carries the spec's managed / live_migratable tags and, for a
        vGPU-capable GPU, only the vGPU types the spec offers.
        """
        spec = self.device_assignable(dev_dict)
        if spec is None:
            return None
        result = copy.deepcopy(dict(dev_dict))
        spec.enhanced_pci_device_with_spec_tags(result)
        types = result.get("vgpu_types")
        if isinstance(types, str):
            types = json.loads(types)
        if isinstance(types, dict):
            result["vgpu_types"] = spec.offered_vgpu_types(types)
        return result
