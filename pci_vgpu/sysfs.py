"""Every sysfs read and write of pci_vgpu, through a configurable root.

Following mdevctl's ``Environment``, no code builds ``/sys/...`` paths by
itself: it asks a :class:`SysfsRoot`, whose root is ``/`` in production and a
temporary tree in tests.  Writes go through an injectable writer: oslo.privsep
in production (:func:`pci_vgpu.privsep.write_sysfs`), the unprivileged twin or
a fake kernel in tests.

Every name that becomes part of a path (PCI address, mdev type, UUID, VF
type id) is validated first by :mod:`pci_vgpu.virt.libvirt.names` callers;
:meth:`SysfsRoot.path` additionally refuses components with ``/`` or ``..``
so that no caller can escape the tree.
"""

from __future__ import annotations

import collections.abc
import errno
import os
import typing as ty

from pci_vgpu import exception

Writer = collections.abc.Callable[[str, str], None]


class SysfsPathInvalid(exception.Invalid):
    msg_fmt = ("Refusing sysfs path component %(component)r: it must be a "
               "single non-empty name without '/' or '..'")


class SysfsReadFailed(exception.PciVgpuException):
    msg_fmt = "Cannot read %(path)s: %(reason)s"


def _default_writer() -> Writer:
    # Imported lazily: oslo.privsep pulls eventlet in, which only the
    # production path needs.
    from pci_vgpu import privsep
    return ty.cast(Writer, privsep.write_sysfs)


class SysfsRoot:
    """A sysfs tree rooted at ``root`` (``/`` on a real host)."""

    def __init__(self, root: str = "/", writer: Writer | None = None) -> None:
        self.root = os.path.abspath(root)
        self._writer = writer

    def __repr__(self) -> str:
        return "SysfsRoot(%r)" % self.root

    def path(self, *components: str) -> str:
        """Join validated components under ``<root>/sys``.

        :raises: SysfsPathInvalid for an empty, ``.``/``..`` or slashed part.
        """
        for part in components:
            if not part or "/" in part or part in (".", "..") or "\0" in part:
                raise SysfsPathInvalid(component=part)
        return os.path.join(self.root, "sys", *components)

    def pci_device(self, address: str, *rest: str) -> str:
        """Path of ``/sys/bus/pci/devices/<address>/<rest...>``."""
        return self.path("bus", "pci", "devices", address, *rest)

    def mdev_parent(self, name: str, *rest: str) -> str:
        """Path of ``/sys/class/mdev_bus/<name>/<rest...>``.

        Every mdev parent registers there, named as the kernel names the
        device: a GPU by its PCI address, a virtual parent (the kernel's
        ``mtty``, ``mdpy``, ``mbochs`` samples) by its device name.
        """
        return self.path("class", "mdev_bus", name, *rest)

    def mdev_parents(self) -> list[str]:
        """Names of the registered mdev parents, sorted."""
        return self.listdir(self.path("class", "mdev_bus"))

    def mdev_device(self, mdev_uuid: str, *rest: str) -> str:
        """Path of ``/sys/bus/mdev/devices/<uuid>/<rest...>``."""
        return self.path("bus", "mdev", "devices", mdev_uuid, *rest)

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def read(self, path: str) -> str | None:
        """Return the stripped content of ``path``; None if it does not exist.

        :raises: SysfsReadFailed for any other I/O error.
        """
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                return handle.read().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SysfsReadFailed(path=path, reason=exc.strerror or exc)

    def read_int(self, path: str) -> int | None:
        """Read an integer attribute; None when absent or not a number."""
        text = self.read(path)
        if text is None:
            return None
        try:
            return int(text, 0)
        except ValueError:
            return None

    def listdir(self, path: str) -> list[str]:
        """Sorted entries of ``path``; empty when it does not exist."""
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def link_name(self, path: str) -> str | None:
        """Basename of a symlink's target (sysfs links name devices)."""
        try:
            return os.path.basename(os.readlink(path))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EINVAL):
                return None
            raise SysfsReadFailed(path=path, reason=exc.strerror or exc)

    def write(self, path: str, value: str) -> None:
        """Write ``value`` to the attribute ``path`` through the writer.

        :raises: OSError as the kernel reports it (EINVAL, EPERM, EBUSY);
            pci_vgpu.privsep.SysfsWriteRefused for a path outside the
            writable attributes.
        """
        writer = self._writer or _default_writer()
        writer(path, value)
