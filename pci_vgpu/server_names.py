"""What a server name may be, checked before anything is claimed.

A server name becomes a libvirt domain name (a file name under
``/etc/libvirt/qemu``, so ``/`` is refused there, but only after pci-vgpu
would already have claimed devices and created vGPUs), a XAPI
``name_label``, a column of the database and a word an operator types back
into ``server delete``.  So the rules are checked first, at the service
boundary:

* 1 to 255 characters (Nova's ``display_name``), printable (no control or
  format characters: no newline, tab, NUL, BOM, right-to-left override);
* no ``/`` and no ``\\``;
* no space at either end (``"vm1 "`` and ``"vm1"`` would look the same);
* not a UUID: ``server delete X`` looks servers up by name *or* UUID, and a
  name that reads as another server's UUID would be ambiguous.
"""

from __future__ import annotations

import typing as ty
import unicodedata

from oslo_utils import uuidutils

from pci_vgpu import exception

MAX_LENGTH = 255


class InvalidServerName(exception.Invalid):
    msg_fmt = ("Server name %(name)r is not valid: %(reason)s.  Use 1 to 255 printable "
               "characters without '/', '\\' or spaces at either end, not a UUID.")


def problem(name: ty.Any) -> str | None:
    """Why ``name`` is refused, or None."""
    if not isinstance(name, str):
        return "it is not a string"
    if not name.strip():
        return "it is empty or only spaces"
    if len(name) > MAX_LENGTH:
        return "it has %d characters" % len(name)
    bad = [c for c in name if not c.isprintable() or unicodedata.category(c) in ("Cc", "Cf")]
    if bad:
        return "it contains the control character %r" % bad[0]
    for char in "/\\":
        if char in name:
            return "it contains %r" % char
    if name != name.strip():
        return "it starts or ends with a space"
    if uuidutils.is_uuid_like(name):
        return "it reads as a UUID, which 'server delete' would take for a server's UUID"
    return None


def validate(name: ty.Any) -> str:
    """Return ``name`` if it is a valid server name.

    :raises: InvalidServerName naming the value and the rule it breaks.
    """
    reason = problem(name)
    if reason is not None:
        raise InvalidServerName(name=name, reason=reason)
    return ty.cast(str, name)
