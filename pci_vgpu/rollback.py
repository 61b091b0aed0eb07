"""Undoing the steps of a failed server operation, in reverse order.

Every flow of :class:`pci_vgpu.service.ComputeService` that changes the host
pushes a compensating action after each step it completes; when a later
step fails, :meth:`Undo.run` runs them newest first and :meth:`Undo.summary`
says in one clause what was undone and what could not be.
"""

from __future__ import annotations

import typing as ty

from oslo_log import log as logging

from pci_vgpu import exception
from pci_vgpu import fault

LOG = logging.getLogger(__name__)


def reason(exc: BaseException) -> str:
    """An exception in words: pci_vgpu's own message, else type and text."""
    if isinstance(exc, exception.PciVgpuException):
        return exc.format_message()
    return "%s: %s" % (type(exc).__name__, exc)


class Undo:
    """A stack of compensating actions run in reverse on failure.

    An action may return a sentence that replaces its description (the
    claim "had already been freed").  A *cleanup* action only tidies up
    (re-reading the inventory): its failure is a note, not an incomplete
    rollback.
    """

    def __init__(self) -> None:
        self._steps: list[tuple[str, ty.Callable[[], str | None], bool]] = []
        self.done: list[str] = []
        self.failed: list[str] = []
        self.notes: list[str] = []

    def push(self, what: str, action: ty.Callable[[], str | None],
             cleanup: bool = False) -> None:
        self._steps.append((what, action, cleanup))

    def run(self) -> None:
        """Run every compensating step; a failing one is logged, not raised."""
        fault.point("rollback:started")
        while self._steps:
            what, action, cleanup = self._steps.pop()
            try:
                self.done.append(action() or what)
            except Exception as exc:  # noqa: BLE001 - keep undoing the rest
                LOG.error("Rollback step '%(what)s' failed: %(err)s", {"what": what, "err": exc})
                (self.notes if cleanup else self.failed).append("%s (%s)" % (what, reason(exc)))

    def summary(self) -> str:
        notes = "".join("; could not %s: run 'pci-vgpu pool list --refresh'" % n
                        for n in self.notes)
        if self.failed:
            return "rollback incomplete: %s; run 'pci-vgpu host reconcile'%s" % (
                "; ".join(self.failed), notes)
        if self.done:
            return "rolled back: %s%s" % (", ".join(self.done), notes)
        return "nothing had changed"
