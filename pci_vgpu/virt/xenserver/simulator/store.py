"""The simulator's object database on disk, between processes.

XAPI keeps its objects in a database that outlives the toolstack; sessions
do not survive a restart (clients log in again on ``SESSION_INVALID``).  The
store does the same for the simulator: every table but ``session`` is saved
after each call that changes an object, in XAPI's wire format -- an XML-RPC
document of ``{class: {ref: record}}`` with int64 values as decimal strings,
what ``get_all_records`` answers -- and read again by any process that finds
it newer than what it holds.  Every call holds the store's lock, so the
simulators of several processes serve one host.

Layout: ``<[host] state_dir>/xapi-simulator/<host>-<hash>/state.db`` and
``lock`` (see :mod:`pci_vgpu.virt.embedded`).
"""

from __future__ import annotations

import os
import typing as ty
import xmlrpc.client

from pci_vgpu import fault
from pci_vgpu.virt import embedded
from pci_vgpu.virt.xenserver.simulator.model import Database
from pci_vgpu.virt.xenserver.simulator.model import to_wire

#: Tables kept in memory only, as XAPI keeps sessions.
VOLATILE = ("session",)


class SimulatorStore:
    """One simulated host's directory."""

    def __init__(self, state_dir: str, description_path: str) -> None:
        self.directory = embedded.state_subdir(state_dir, "xapi-simulator", description_path)
        self.path = os.path.join(self.directory, "state.db")
        self._lock = embedded.HostLock(self.directory)

    def lock(self) -> ty.ContextManager[None]:
        """:raises: StateDirUnusable when the directory cannot be created."""
        return self._lock.held()

    def stamp(self) -> tuple[int, int, int]:
        """Changes whenever a process saved the host."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def load(self, db: Database) -> None:
        """Replace ``db``'s persistent tables with the saved ones."""
        def read() -> str:
            with open(self.path, encoding="utf-8") as handle:
                return handle.read()
        params, _method = xmlrpc.client.loads(embedded.guard(self.directory, "reading", read))
        saved = ty.cast(dict[str, dict[str, ty.Any]], params[0])
        for cls, table in db.tables.items():
            if cls not in VOLATILE:
                table.clear()
                table.update(saved.get(cls, {}))

    def save(self, db: Database) -> None:
        """Write ``db``'s persistent tables (replaced by rename)."""
        tables = {cls: to_wire(table) for cls, table in db.tables.items()
                  if cls not in VOLATILE}
        text = xmlrpc.client.dumps((tables,), allow_none=True)

        def write() -> None:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fault.point("host:saving")
            embedded.replace_file(self.path, text)
        embedded.guard(self.directory, "saving the host", write)
