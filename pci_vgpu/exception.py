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
