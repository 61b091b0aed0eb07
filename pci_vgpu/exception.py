"""Exceptions of pci_vgpu, one class per failure, Nova style.

Each class carries a ``msg_fmt`` whose ``%(name)s`` fields name the objects
involved (alias, config key, device address, type, file).  Families share a
base class so callers can catch a whole area.
"""

from __future__ import annotations

import typing as ty


class PciVgpuException(Exception):
    """Base class: formats ``msg_fmt`` with the keyword arguments."""

    msg_fmt = "An unknown error occurred."

    def __init__(self, message: str | None = None, **kwargs: ty.Any) -> None:
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.msg_fmt % kwargs
            except (KeyError, TypeError, ValueError):
                # A missing keyword is a programming error; keep the template
                # and the arguments visible rather than hiding both.
                message = "%s (%r)" % (self.msg_fmt, kwargs)
        self.message = message
        super().__init__(message)

    def format_message(self) -> str:
        return self.message


class Invalid(PciVgpuException):
    """Bad input: configuration, request or API argument."""

    msg_fmt = "Invalid input: %(reason)s"


class NotFound(PciVgpuException):
    msg_fmt = "Resource could not be found: %(reason)s"


# --- Versioned objects: PCI devices and their state machine ------------------


class PciDeviceError(PciVgpuException):
    """A PCI device or vGPU cannot make the state change asked of it."""

    msg_fmt = "PCI device %(device)s: %(reason)s"


class PciDeviceInvalidStatus(PciDeviceError):
    msg_fmt = "PCI device %(device)s is %(status)s instead of %(hopestatus)s"


class PciDeviceInvalidOwner(PciDeviceError):
    msg_fmt = ("PCI device %(device)s is owned by %(owner)s instead of "
               "%(hopeowner)s")


class PciDeviceVFInvalidStatus(PciDeviceInvalidStatus):
    msg_fmt = ("Not all Virtual Functions of PF %(device)s are free: "
               "%(busy)s")


class PciDevicePFInvalidStatus(PciDeviceInvalidStatus):
    msg_fmt = ("Physical Function %(parent)s, parent of VF %(device)s, "
               "is %(status)s instead of %(hopestatus)s")


class PciDeviceVgpusInUse(PciDeviceInvalidStatus):
    msg_fmt = ("GPU %(device)s cannot be given whole: its vGPUs %(busy)s "
               "are in use")


class PciDeviceGpuInUse(PciDeviceInvalidStatus):
    msg_fmt = ("vGPU %(device)s cannot be used: its GPU %(parent)s is "
               "%(status)s as a whole device (allowed: %(hopestatus)s)")


class PciDeviceRemoveInUse(PciDeviceInvalidStatus):
    msg_fmt = ("Cannot remove PCI device %(device)s: it is %(status)s by "
               "instance %(instance_uuid)s; free it first")


class PciDeviceRemoveChildrenInUse(PciDeviceInvalidStatus):
    msg_fmt = ("Cannot remove PCI device %(device)s: its dependent devices "
               "%(busy)s are in use; free them first")


class PciDeviceInvalidField(PciDeviceError, Invalid):
    msg_fmt = ("Invalid value %(value)r for field %(field)s of PCI device "
               "%(device)s: %(reason)s")


class ObjectDowngradeRefused(PciVgpuException, ValueError):
    """A primitive cannot be expressed at an older version without loss.

    Also a ``ValueError`` because that is what Nova's
    ``raise_on_too_new_values`` raises and what RPC callers catch.
    """

    msg_fmt = ("Cannot convert %(objname)s %(ident)s to version "
               "%(target_version)s: %(reason)s")


# --- Aliases, flavors and PCI requests -------------------------------------


class PciInvalidAlias(Invalid):
    msg_fmt = "Invalid PCI alias definition: %(reason)s"


class PciAliasMalformedJson(PciInvalidAlias):
    msg_fmt = ("Invalid PCI alias definition %(value)r in [pci] alias: not a "
               "JSON object (%(reason)s)")


class PciAliasInvalidKey(PciInvalidAlias):
    msg_fmt = ("Invalid PCI alias %(alias)s: key %(key)r with value "
               "%(value)r: %(reason)s")


class PciAliasConflict(PciInvalidAlias):
    msg_fmt = ("PCI alias %(alias)s is defined more than once with different "
               "%(key)s: %(first)r and %(second)r; use one %(key)s for every "
               "definition of an alias")


class PciAliasMissingIds(PciInvalidAlias):
    msg_fmt = ("PCI alias %(alias)s does not have vendor_id and product_id "
               "set; set both, or request vGPUs with vgpu_types")


class PciRequestAliasNotDefined(NotFound):
    msg_fmt = ("PCI alias %(alias)s named by the flavor is not defined in "
               "[pci] alias (defined: %(defined)s)")


class PciFlavorAliasEntryInvalid(Invalid):
    msg_fmt = ("Invalid entry %(entry)r in flavor extra spec "
               "pci_passthrough:alias=%(value)r: %(reason)s")


class PciInvalidNumaPolicy(Invalid):
    msg_fmt = ("Invalid PCI NUMA affinity policy %(policy)r from %(source)s; "
               "allowed: %(allowed)s")


class InvalidVgpuTypeName(Invalid):
    msg_fmt = ("Invalid vGPU type name %(name)r: %(reason)s; allowed: 1-128 "
               "characters, letters, digits, space and _ . : , + - @ ( ), "
               "starting with a letter or digit, without '/' or '..'")


class InvalidVgpuTypesSpec(Invalid):
    msg_fmt = ("Invalid vgpu_types %(value)r in PCI request spec: %(reason)s; "
               "expected a JSON list of vGPU type names")


# --- [pci] device_spec ------------------------------------------------------


class PciConfigInvalidSpec(Invalid):
    msg_fmt = "Invalid [pci] device_spec config: %(reason)s"


class PciDeviceWrongAddressFormat(PciConfigInvalidSpec):
    msg_fmt = ("The PCI address %(address)s in [pci] device_spec has an "
               "incorrect format; expected [[[[domain]:]bus]:][slot][.[func]] "
               "with hex numbers or '*', or a dict of regexes with keys "
               "domain, bus, slot, function")


class PciDeviceInvalidDeviceName(PciConfigInvalidSpec):
    msg_fmt = ("Invalid [pci] device_spec %(spec)s: devname and address "
               "cannot be used together")
