"""Exceptions of the persistence layer and the device tracker.

Every message that names a database shows its URL masked
(``pci_vgpu.redact``) and says which ``[database]`` option to fix.
"""

from __future__ import annotations

from oslo_db import exception as oslo_db_exc

from pci_vgpu import exception


class DatabaseError(exception.PciVgpuException):
    """Base of the tracker's database failures."""

    msg_fmt = "Device tracker database error: %(reason)s"


class InvalidConnectionUrl(exception.Invalid):
    msg_fmt = ("[database] connection %(url)s is not usable: %(reason)s; use "
               "sqlite:///<file>, mysql+pymysql://user:password@host[:port]/"
               "name or postgresql+psycopg2://user:password@host[:port]/name")


# --- using the database ------------------------------------------------------

class DatabaseUnreachable(DatabaseError, oslo_db_exc.DBConnectionError):  # type: ignore[misc]
    """No connection could be made (also an oslo.db ``DBConnectionError``,
    so ``wrap_db_retry(retry_on_disconnect=True)`` still retries it)."""

    msg_fmt = ("Cannot reach the database server of [database] connection "
               "%(url)s: %(detail)s; check its host and port and that the "
               "server is running (waited up to [database] connect_timeout "
               "= %(timeout)s s)")


class DatabaseAccessDenied(DatabaseError):
    msg_fmt = ("The database server of [database] connection %(url)s refused "
               "the login: %(detail)s; fix the user name or password in "
               "[database] connection")


class DatabaseNotFound(DatabaseError):
    msg_fmt = ("The database named by [database] connection %(url)s does not "
               "exist on its server: %(detail)s; create it, or name an "
               "existing one")


class DatabaseFileCorrupt(DatabaseError):
    msg_fmt = ("Database file %(path)s ([database] connection %(url)s) is "
               "not a usable SQLite database: %(detail)s; move it aside (a "
               "fresh one is then created) or restore it from a backup")


class DatabaseReadOnly(DatabaseError):
    msg_fmt = ("Database file %(path)s ([database] connection %(url)s) is "
               "read-only for this user and this command writes to it "
               "(%(detail)s); make the file and its directory writable, or "
               "point [database] connection at a writable database")


class DatabaseFileUnopenable(DatabaseError):
    msg_fmt = ("Database file %(path)s ([database] connection %(url)s) "
               "cannot be opened: %(detail)s; check that its directory "
               "exists and that this user may read and write it")


class LockWaitTimedOut(DatabaseError):
    msg_fmt = ("Gave up waiting for a lock on database %(url)s after "
               "[database] lock_wait_timeout = %(timeout)s s: %(detail)s; "
               "another process holds it (retry, or raise the timeout)")


class StatementTimedOut(DatabaseError):
    msg_fmt = ("A statement on database %(url)s ran longer than [database] "
               "statement_timeout = %(timeout)s s and was aborted: "
               "%(detail)s")


class DatabaseUnusable(DatabaseError):
    msg_fmt = ("Database %(url)s ([database] connection) cannot be used: "
               "%(detail)s")


# --- the schema --------------------------------------------------------------

class SchemaError(DatabaseError):
    """The schema cannot be brought to the revision this code needs."""


class SchemaUnknownRevision(SchemaError):
    msg_fmt = ("Database %(url)s ([database] connection) records schema "
               "revision %(revision)s, which this pci_vgpu does not know "
               "(it knows %(known)s): it was upgraded by a newer pci_vgpu "
               "(upgrade this one) or belongs to another service (point "
               "[database] connection at pci_vgpu's own database)")


class SchemaNotOurs(SchemaError):
    msg_fmt = ("Database %(url)s ([database] connection) already has tables "
               "(%(tables)s) but no pci_vgpu schema revision: it was not "
               "created by pci_vgpu; point [database] connection at an "
               "empty database, or, for a Nova 34 pci_devices table, stamp "
               "it at revision 0001 first (see migrations/README.rst)")


class SchemaUpgradeFailed(SchemaError):
    msg_fmt = ("Upgrading database %(url)s ([database] connection) from "
               "schema revision %(current)s to %(target)s failed: "
               "%(detail)s; nothing is lost (every step can be repeated): "
               "fix the cause and run any pci-vgpu command again")


class MigrationLockTimedOut(SchemaError):
    msg_fmt = ("Gave up after [database] lock_wait_timeout = %(timeout)s s "
               "waiting for another process to finish upgrading the schema "
               "of database %(url)s (lock %(lock)s); run the command again "
               "once it is done, or look for a stuck pci-vgpu process")


class DowngradeBlocked(DatabaseError):
    msg_fmt = ("Cannot downgrade below revision %(revision)s: %(reason)s")


# --- the tracker -------------------------------------------------------------

class ComputeNodeNotFound(exception.NotFound):
    msg_fmt = "Compute node %(name)s is not in the device tracker database"


class ConcurrentUpdateDetected(DatabaseError):
    msg_fmt = ("Compute node %(node)s changed while it was being updated "
               "(generation %(generation)d is no longer current); reload "
               "and retry")


class TooManyConcurrentUpdates(DatabaseError):
    msg_fmt = ("Gave up %(operation)s on compute node %(node)s after "
               "%(attempts)d attempts: other workers kept changing it")


class TooManyDeadlocks(DatabaseError):
    msg_fmt = ("Gave up %(operation)s on compute node %(node)s after "
               "%(attempts)d attempts that each ended in a deadlock or a "
               "write conflict (Galera certification): %(detail)s; retry, "
               "or send this node's writes to one database node")


class InvalidDeviceReport(exception.Invalid):
    msg_fmt = ("Invalid pci_passthrough_devices report: %(reason)s; expected "
               "a JSON list of device dicts with 'address' or 'mdev_uuid'")


class InstanceAlreadyTracked(exception.Invalid):
    msg_fmt = ("Instance %(instance_uuid)s already holds devices on %(node)s "
               "(status %(status)s); free it before claiming again")


class InstanceNameInUse(exception.Invalid):
    msg_fmt = ("Server name %(name)s is already taken on compute node "
               "%(node)s by %(holder)s; choose another name (nothing was "
               "claimed)")


class InstanceNotTracked(exception.NotFound):
    msg_fmt = ("Instance %(instance_uuid)s holds no %(what)s on compute "
               "node %(node)s")
