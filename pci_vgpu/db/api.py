"""Connections and the SQL of the device tracker.

Concurrency: every write to a compute node's devices or instances happens
in one transaction that includes :func:`bump_generation`, a
compare-and-swap on ``compute_nodes.generation`` (placement's
``increment_generation``)::

    UPDATE compute_nodes SET generation = generation + 1
     WHERE id = :id AND generation = :seen AND deleted = 0

``rowcount != 1`` means another worker wrote since this one read the node:
:class:`ConcurrentUpdateDetected` is raised and the transaction rolls back.
The caller (``pci_vgpu.manager``) then retries with :func:`lock_node` first
(``SELECT ... FOR UPDATE``) and reloads the node under that lock, so the
retry cannot lose the race again: optimistic when uncontended (no extra
read), pessimistic after a conflict (no starvation with many workers).
Either way the node row stays locked until commit on MariaDB and
PostgreSQL, so writers of one node are serialised and never deadlock on it.  On
SQLite every write transaction starts with ``BEGIN IMMEDIATE`` (the
database-wide write lock, waited for up to ``busy_timeout``) and WAL
journalling lets readers run meanwhile.  Deadlocks the server reports anyway
(MariaDB gap locks between nodes) are retried separately by
``oslo_db.api.wrap_db_retry`` around the whole writer function.

Speed: the tracker's hot path is a handful of small statements per
transaction, so statement building would dominate.  Every statement here is
built once, at import, with bind parameters (SQLAlchemy then finds its
compiled form in the engine's cache by a memoised key), executed on a Core
``Connection`` (no ORM session), and the engine keeps its connections open
(a pool, on SQLite too).  There is no ping at checkout: a connection the
server dropped fails its statement, SQLAlchemy invalidates the pool, and
the tracker's ``wrap_db_retry(retry_on_disconnect=True)`` runs the
transaction again on a fresh connection.

Galera (several MariaDB nodes taking writes): ``SELECT ... FOR UPDATE``
locks only on the node that runs it, but the generation swap makes every
write of a compute node update the same row, so two nodes' concurrent
writes conflict at certification and the later COMMIT fails as a deadlock:
the same ``wrap_db_retry`` runs it again (see README, "Databases").

Passwords: :attr:`Database.safe_url` is the URL to log, password and
secret-named query values masked (``pci_vgpu.redact``); the raw URL is
never logged.  Engines, timeouts and error wording live in
:mod:`pci_vgpu.db.engine` and :mod:`pci_vgpu.db.errors`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import typing as ty

from oslo_config import cfg
from oslo_log import log as logging
import sqlalchemy as sa

from pci_vgpu.db import direct
from pci_vgpu.db import engine as db_engine
from pci_vgpu.db import exception as db_exc
from pci_vgpu.db import migration
from pci_vgpu.db import models

LOG = logging.getLogger(__name__)

Settings = db_engine.Settings


class Database:
    """One database: its engine, opened on first use.

    Not a process-global facade: tests and the benchmark open several
    databases in one process.  A forked child must build its own.
    """

    def __init__(self, connection: str,
                 settings: Settings | None = None) -> None:
        """:raises: InvalidConnectionUrl naming the masked URL and the fix."""
        self.url = db_engine.parse_url(connection)
        self.safe_url = db_engine.safe_url(self.url)
        self.settings = settings or Settings()
        self._engine: sa.Engine | None = None
        #: Per thread: (pid, the connection writers of that thread reuse).
        self._local = threading.local()
        #: Every connection a writer thread held, with its process id.
        self._held: list[tuple[int, sa.Connection]] = []

    @classmethod
    def from_config(cls, conf: cfg.ConfigOpts) -> Database:
        """Open ``[database] connection`` (SQLite in the state dir if unset)
        with the ``[database]`` timeouts.

        :raises: InvalidConnectionUrl; OSError if the embedded SQLite's
            ``[host] state_dir`` cannot be created.
        """
        from pci_vgpu.conf import database as db_conf
        return cls(db_conf.connection_url(conf), Settings.from_conf(conf))

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = db_engine.create_engine(self.url, self.settings)
            LOG.debug("Opened device tracker database %s", self.safe_url)
        return self._engine

    @contextlib.contextmanager
    def writer(self) -> ty.Iterator[sa.Connection]:
        """A connection in a read-write transaction, committed on exit.

        Each thread reuses one connection for its writes (a pool checkout
        and check-in per transaction cost as much as the statements of a
        small one); a nested writer gets a connection of its own.

        :raises: oslo.db's DBError family (DBDeadlock, DBDuplicateEntry,
            DBConnectionError ...) translated from the driver's errors, or
            a :mod:`pci_vgpu.db.exception` error an operator can act on
            (DatabaseReadOnly, LockWaitTimedOut, DatabaseUnreachable ...).
        """
        conn = self._thread_connection()
        if conn.in_transaction():
            with self.engine.begin() as other:
                yield other
            return
        with conn.begin():
            yield conn

    def _thread_connection(self) -> sa.Connection:
        held = getattr(self._local, "held", None)
        if held is not None and held[0] == os.getpid() and not held[1].closed:
            return ty.cast(sa.Connection, held[1])
        # None yet, or inherited from the parent of a fork: the parent
        # still uses that one (it stays referenced in _held, never closed
        # here, so no ROLLBACK reaches the parent's session).
        conn = self.engine.connect()
        self._local.held = (os.getpid(), conn)
        self._held.append((os.getpid(), conn))
        return conn

    @contextlib.contextmanager
    def reader(self) -> ty.Iterator[sa.Connection]:
        """A connection in a read-only transaction.

        :raises: as :meth:`writer`.
        """
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{db_engine.READ_ONLY: True})
            with conn.begin():
                yield conn

    def sync(self) -> None:
        """Bring the schema to the newest revision (see ``migration``).

        Runs on an engine of its own without a statement limit (a DDL may
        be slow on a big table); its lock waits are still bounded.

        :raises: SchemaError naming the masked URL and the revision; the
            errors of :meth:`writer` for an unusable database.
        """
        if db_engine.sqlite_path(self.url) is None:
            # In-memory: a second engine would be a second, empty database.
            migration.upgrade(self.engine, safe_url=self.safe_url,
                              lock_wait_timeout=self.settings.lock_wait_timeout)
            return
        migrate = db_engine.create_engine(self.url,
                                          self.settings.for_migration())
        try:
            migration.upgrade(migrate, safe_url=self.safe_url,
                              lock_wait_timeout=self.settings.lock_wait_timeout)
        finally:
            migrate.dispose()

    def dispose(self) -> None:
        """Close every pooled connection (and those writers hold)."""
        for pid, conn in self._held:
            if pid != os.getpid() or conn.closed:
                continue
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                conn.close()
        self._held = []
        self._local = threading.local()
        if self._engine is not None:
            self._engine.dispose()


# --- statements --------------------------------------------------------------
# Built once: a reused statement keeps its cache key, so executing it costs a
# dictionary look-up in the engine's compiled cache, not a compilation.

_NODES = ty.cast(sa.Table, models.ComputeNode.__table__)
_DEVICES = ty.cast(sa.Table, models.PciDevice.__table__)
_INSTANCES = ty.cast(sa.Table, models.Instance.__table__)
_ID: sa.BindParameter[int] = sa.bindparam("b_id")
_SEEN: sa.BindParameter[int] = sa.bindparam("b_seen")
_NODE: sa.BindParameter[int] = sa.bindparam("b_node")
_KEY: sa.BindParameter[str] = sa.bindparam("b_key")
_UUID: sa.BindParameter[str] = sa.bindparam("b_uuid")

_LIVE_NODE = sa.and_(_NODES.c.id == _ID, _NODES.c.deleted == 0)
# SELECT id, generation FROM compute_nodes
#  WHERE hypervisor_hostname=:host AND deleted=0
_SELECT_NODE = sa.select(_NODES.c.id, _NODES.c.generation).where(
    _NODES.c.hypervisor_hostname == sa.bindparam("b_host"),
    _NODES.c.deleted == 0)
_SELECT_GENERATION = sa.select(_NODES.c.generation).where(_LIVE_NODE)
# SELECT generation FROM compute_nodes WHERE id=:id AND deleted=0 FOR UPDATE
_LOCK_NODE = _SELECT_GENERATION.with_for_update()
# UPDATE compute_nodes SET generation=generation+1
#  WHERE id=:id AND generation=:seen AND deleted=0
_BUMP_GENERATION = sa.update(_NODES).where(
    _LIVE_NODE, _NODES.c.generation == _SEEN).values(
        generation=_NODES.c.generation + 1)

_LIVE_DEVICE = sa.and_(_DEVICES.c.compute_node_id == _NODE,
                       _DEVICES.c.device_key == _KEY, _DEVICES.c.deleted == 0)
_SELECT_DEVICES = sa.select(_DEVICES).where(
    _DEVICES.c.compute_node_id == _NODE,
    _DEVICES.c.deleted == 0).order_by(_DEVICES.c.id)
_INSERT_DEVICE = sa.insert(_DEVICES).values(deleted=0, created_at=sa.func.now())
# UPDATE pci_devices SET updated_at=now(), <the changed columns>
#  WHERE compute_node_id=:node AND device_key=:key AND deleted=0
_UPDATE_DEVICE = sa.update(_DEVICES).where(_LIVE_DEVICE).values(
    updated_at=sa.func.now())
# UPDATE pci_devices SET deleted=id, deleted_at=now(), status=:status,
#  instance_uuid=NULL, request_id=NULL
#  WHERE compute_node_id=:node AND device_key=:key AND deleted=0
_SOFT_DELETE_DEVICE = sa.update(_DEVICES).where(_LIVE_DEVICE).values(
    deleted=_DEVICES.c.id, deleted_at=sa.func.now(), instance_uuid=None,
    request_id=None)

_SELECT_INSTANCES = sa.select(_INSTANCES).where(
    _INSTANCES.c.compute_node_id == _NODE).order_by(_INSTANCES.c.id)
_INSERT_INSTANCE = sa.insert(_INSTANCES).values(created_at=sa.func.now())
_UPDATE_INSTANCE = sa.update(_INSTANCES).where(
    _INSTANCES.c.uuid == _UUID).values(updated_at=sa.func.now())
_DELETE_INSTANCE = sa.delete(_INSTANCES).where(_INSTANCES.c.uuid == _UUID)


def _write(conn: sa.Connection, statement: sa.Executable,
           params: dict[str, ty.Any]) -> sa.CursorResult[ty.Any]:
    """Execute an INSERT/UPDATE/DELETE through SQLAlchemy (typed for keys)."""
    return conn.execute(statement, params)


_RUNNERS: dict[type, direct.Runner] = {}


def _dml(conn: sa.Connection, statement: sa.Executable,
         params: dict[str, ty.Any]) -> int:
    """Execute a hot-path INSERT/UPDATE/DELETE directly; rows matched."""
    return _runner(conn).execute(conn, statement, params)


def _runner(conn: sa.Connection) -> direct.Runner:
    """The runner of ``conn``'s dialect class (one per DBAPI driver)."""
    dialect = conn.dialect
    runner = _RUNNERS.get(type(dialect))
    if runner is None:
        runner = _RUNNERS[type(dialect)] = direct.Runner(dialect)
    return runner


# --- compute nodes -----------------------------------------------------------

def find_compute_node(conn: sa.Connection, hostname: str) -> int | None:
    """The id of the live node ``hostname``, None if there is none."""
    row = conn.execute(_SELECT_NODE, {"b_host": hostname}).first()
    return None if row is None else int(row.id)


def get_or_create_compute_node(conn: sa.Connection, hostname: str) -> tuple[int, int]:
    """Return (id, generation) of the live node ``hostname``, creating it."""
    row = conn.execute(_SELECT_NODE, {"b_host": hostname}).first()
    if row is not None:
        return row.id, row.generation
    result = _write(conn, sa.insert(_NODES).values(created_at=sa.func.now()),
                    {"hypervisor_hostname": hostname, "generation": 0,
                     "deleted": 0})
    return int(ty.cast(tuple[int], result.inserted_primary_key)[0]), 0


def get_generation(conn: sa.Connection, node_id: int) -> int:
    """:raises: ComputeNodeNotFound."""
    gen = conn.execute(_SELECT_GENERATION, {"b_id": node_id}).scalar()
    if gen is None:
        raise db_exc.ComputeNodeNotFound(name="id=%d" % node_id)
    return int(gen)


def lock_node(conn: sa.Connection, node_id: int) -> int:
    """Lock the node row until commit and return its generation.

    MariaDB/PostgreSQL: a row lock every writer of the node also takes (its
    UPDATE of the generation), so the node cannot change until commit.
    SQLite ignores FOR UPDATE: BEGIN IMMEDIATE already holds the write lock.

    :raises: ComputeNodeNotFound.
    """
    gen = conn.execute(_LOCK_NODE, {"b_id": node_id}).scalar()
    if gen is None:
        raise db_exc.ComputeNodeNotFound(name="id=%d" % node_id)
    return int(gen)


def bump_generation(conn: sa.Connection, node_id: int, seen: int) -> int:
    """Compare-and-swap the node's generation from ``seen`` to ``seen + 1``.

    :raises: ConcurrentUpdateDetected when ``seen`` is no longer current.
    """
    if _dml(conn, _BUMP_GENERATION, {"b_id": node_id, "b_seen": seen}) != 1:
        raise db_exc.ConcurrentUpdateDetected(node=node_id, generation=seen)
    return seen + 1


# --- devices -----------------------------------------------------------------

def get_devices(conn: sa.Connection, node_id: int) -> list[sa.Row[ty.Any]]:
    """Every live device row of the node, oldest first."""
    return list(conn.execute(_SELECT_DEVICES, {"b_node": node_id}).all())


def insert_device(conn: sa.Connection, node_id: int,
                  values: dict[str, ty.Any]) -> int:
    """Insert a live device row; returns its id."""
    return _runner(conn).insert(conn, _INSERT_DEVICE,
                                dict(values, compute_node_id=node_id))


def update_device(conn: sa.Connection, node_id: int, device_key: str,
                  values: dict[str, ty.Any]) -> None:
    """Update the live row ``device_key`` of the node.

    :raises: DatabaseError if no such live row exists (the caller's view
        of the node is wrong; the transaction must not commit).
    """
    matched = _dml(conn, _UPDATE_DEVICE,
                   dict(values, b_node=node_id, b_key=device_key))
    if matched != 1:
        raise db_exc.DatabaseError(
            reason="device %s of node %d matched %d live rows, expected 1"
            % (device_key, node_id, matched))


def soft_delete_device(conn: sa.Connection, node_id: int, device_key: str,
                       status: str) -> None:
    """Mark the live row ``device_key`` deleted (``deleted = id``)."""
    _dml(conn, _SOFT_DELETE_DEVICE,
         {"b_node": node_id, "b_key": device_key, "status": status})


# --- instances ---------------------------------------------------------------

def get_instances(conn: sa.Connection, node_id: int) -> list[sa.Row[ty.Any]]:
    """Every instance holding devices on the node."""
    return list(conn.execute(_SELECT_INSTANCES, {"b_node": node_id}).all())


def insert_instance(conn: sa.Connection, node_id: int,
                    values: dict[str, ty.Any]) -> None:
    _dml(conn, _INSERT_INSTANCE, dict(values, compute_node_id=node_id))


# SELECT uuid FROM instances WHERE compute_node_id=:node AND server_name=:name
_SELECT_NAME_HOLDER = sa.select(_INSTANCES.c.uuid).where(
    _INSTANCES.c.compute_node_id == _NODE,
    _INSTANCES.c.server_name == sa.bindparam("b_name"))


def get_server_name_holder(conn: sa.Connection, node_id: int,
                           name: str) -> str | None:
    """The UUID of the instance holding server name ``name`` on the node."""
    return conn.execute(_SELECT_NAME_HOLDER,
                        {"b_node": node_id, "b_name": name}).scalar()


def set_instance_status(conn: sa.Connection, instance_uuid: str,
                        status: str) -> None:
    _dml(conn, _UPDATE_INSTANCE, {"b_uuid": instance_uuid, "status": status})


def delete_instance(conn: sa.Connection, instance_uuid: str) -> None:
    _dml(conn, _DELETE_INSTANCE, {"b_uuid": instance_uuid})
