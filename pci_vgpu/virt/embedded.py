"""Where the embedded hosts keep their state between processes.

The bundled libvirt test host and the XAPI simulator stand in for real
hypervisors, and a real hypervisor keeps its state on disk: guests booted by
one ``pci-vgpu`` command must be there for the next.  Each embedded host
keeps its state in a directory of ``[host] state_dir``, one per host
description (``<kind>/<name>-<hash of its path and content>``: editing the
description starts a fresh host), in the format of its real boundary (see
:mod:`pci_vgpu.virt.libvirt.teststore` and
:mod:`pci_vgpu.virt.xenserver.simulator.store`).

What both need lives here: the directory's name, a process-shared lock that
one thread may take again, and files replaced by rename so that a process
killed while saving leaves the old or the new file, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import typing as ty

import fasteners

from pci_vgpu import exception


class StateDirUnusable(exception.Invalid):
    msg_fmt = ("[host] state_dir %(path)s cannot hold the embedded host's state: "
               "%(reason)s.  Set [host] state_dir (or XDG_STATE_HOME) to a writable "
               "directory.")


def state_subdir(state_dir: str, kind: str, source_path: str) -> str:
    """The directory of the host described by ``source_path``.

    :raises: StateDirUnusable if the description cannot be read.
    """
    path = os.path.abspath(source_path)
    try:
        with open(path, "rb") as handle:
            digest = hashlib.sha256(path.encode() + b"\0" + handle.read()).hexdigest()
    except OSError as exc:
        raise StateDirUnusable(path=state_dir, reason="cannot read %s (%s)" % (
            path, exc.strerror or exc)) from exc
    name = os.path.splitext(os.path.basename(path))[0]
    return os.path.join(state_dir, kind, "%s-%s" % (name, digest[:12]))


def guard(directory: str, what: str, action: ty.Callable[[], ty.Any]) -> ty.Any:
    """Run ``action``; an OSError becomes StateDirUnusable naming ``what``.

    :raises: StateDirUnusable.
    """
    try:
        return action()
    except OSError as exc:
        raise StateDirUnusable(path=directory, reason="%s failed (%s)" % (
            what, exc.strerror or exc)) from exc


#: Ends the name of a file :func:`replace_file` has not renamed yet.
TEMPORARY_SUFFIX = ".tmp"


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a write a ``kill -9`` interrupted before its rename.

    Such a file was never committed: a reader must not take it for state.
    """
    return name.endswith(TEMPORARY_SUFFIX)


def replace_file(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file, then rename)."""
    tmp = "%s.%d%s" % (path, os.getpid(), TEMPORARY_SUFFIX)
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


class HostLock:
    """The lock of one host directory, shared by processes.

    Every call on an embedded host holds it, so each call is atomic as the
    kernel and the hypervisor make theirs.  ``fasteners.InterProcessLock``
    is not reentrant, and a call may run inside another (a lookup inside a
    listing), hence the depth count.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._file: fasteners.InterProcessLock | None = None
        self._local = threading.RLock()
        self._depth = 0

    def _open(self) -> fasteners.InterProcessLock:
        if self._file is None:
            guard(self.directory, "creating the directory",
                  lambda: os.makedirs(self.directory, mode=0o700, exist_ok=True))
            self._file = fasteners.InterProcessLock(os.path.join(self.directory, "lock"))
        return self._file

    @contextlib.contextmanager
    def held(self) -> ty.Iterator[None]:
        """Hold the lock (:raises: StateDirUnusable when it cannot be made)."""
        with self._local:
            if self._depth == 0:
                self._open().acquire()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._open().release()
