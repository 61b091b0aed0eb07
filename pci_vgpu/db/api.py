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

Passwords: :attr:`Database.safe_url` is the URL to log, rendered with
``hide_password=True``; the raw URL is never logged.
"""

from __future__ import annotations

import contextlib
import os
import threading
import typing as ty

from oslo_config import cfg
from oslo_db.sqlalchemy import exc_filters
from oslo_log import log as logging
import sqlalchemy as sa
from sqlalchemy import event

from pci_vgpu.db import direct
from pci_vgpu.db import exception as db_exc
from pci_vgpu.db import migration
from pci_vgpu.db import models

LOG = logging.getLogger(__name__)

_SUPPORTED_DRIVERS = ("sqlite", "mysql", "postgresql")
_SQLITE_BUSY_TIMEOUT_MS = 60000
#: Execution option marking a read-only transaction (a deferred BEGIN on
#: SQLite, so readers never take the write lock).
_READ_ONLY = "pci_vgpu_read_only"


def mask_url(url: str | sa.URL) -> str:
    """Render ``url`` with its password replaced by ``***``."""
    return sa.make_url(url).render_as_string(hide_password=True)


def _validate_url(connection: str) -> sa.URL:
    try:
        url = sa.make_url(connection)
    except sa.exc.ArgumentError as exc:
        raise db_exc.InvalidConnectionUrl(url="<unparsable>", reason=str(exc))
    if url.get_backend_name() not in _SUPPORTED_DRIVERS:
        raise db_exc.InvalidConnectionUrl(
            url=mask_url(url),
            reason="backend %r is not supported" % url.get_backend_name())
    return url


class Database:
    """One database: its engine, opened on first use.

    Not a process-global facade: tests and the benchmark open several
    databases in one process.  A forked child must build its own.
    """

    def __init__(self, connection: str) -> None:
        """:raises: InvalidConnectionUrl for a URL of another backend."""
        self.url = _validate_url(connection)
        self.safe_url = mask_url(self.url)
        self._engine: sa.Engine | None = None
        #: Per thread: (pid, the connection writers of that thread reuse).
        self._local = threading.local()
        #: Every connection a writer thread held, with its process id.
        self._held: list[tuple[int, sa.Connection]] = []

    @classmethod
    def from_config(cls, conf: cfg.ConfigOpts) -> Database:
        """Open ``[database] connection`` (SQLite in the state dir if unset)."""
        from pci_vgpu.conf import database as db_conf
        return cls(db_conf.connection_url(conf))

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = _create_engine(self.url)
            LOG.debug("Opened device tracker database %s", self.safe_url)
        return self._engine

    @contextlib.contextmanager
    def writer(self) -> ty.Iterator[sa.Connection]:
        """A connection in a read-write transaction, committed on exit.

        Each thread reuses one connection for its writes (a pool checkout
        and check-in per transaction cost as much as the statements of a
        small one); a nested writer gets a connection of its own.

        :raises: oslo.db's DBError family (DBDeadlock, DBDuplicateEntry,
            DBConnectionError ...) translated from the driver's errors.
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
        """A connection in a read-only transaction."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{_READ_ONLY: True})
            with conn.begin():
                yield conn

    def sync(self) -> None:
        """Upgrade the schema to the newest revision."""
        migration.upgrade(self.engine)

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


def _create_engine(url: sa.URL) -> sa.Engine:
    """An engine with oslo.db's error translation and per-backend settings.

    Built here rather than by oslo.db's enginefacade, which gives SQLite
    file databases a NullPool (a new connection, and its pragmas, per
    transaction) and pings every connection at checkout (one more round
    trip per transaction on MariaDB/PostgreSQL).
    """
    backend = url.get_backend_name()
    if backend == "sqlite":
        engine = _sqlite_engine(url)
    elif backend == "mysql":
        engine = _mysql_engine(url)
    else:
        engine = sa.create_engine(url, pool_recycle=3600,
                                  client_encoding="utf8")
    _add_fork_guard(engine)
    exc_filters.register_engine(engine)
    return engine


def _mysql_engine(url: sa.URL) -> sa.Engine:
    connect_args = {} if "charset" in url.query else {"charset": "utf8"}
    engine = sa.create_engine(url, pool_recycle=3600,
                              connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _sql_mode(dbapi_con: ty.Any, _record: ty.Any) -> None:
        # Strict mode: a too-long value is an error, never truncated.
        with dbapi_con.cursor() as cursor:
            cursor.execute("SET SESSION sql_mode = 'TRADITIONAL'")

    return engine


def _sqlite_engine(url: sa.URL) -> sa.Engine:
    """One pooled connection per thread, WAL, BEGIN IMMEDIATE for writes.

    pysqlite's own transaction handling is switched off
    (``isolation_level = None``) and the BEGIN emitted here: a deferred
    BEGIN that later writes fails at once with "database is locked" when
    another process committed in between; IMMEDIATE takes the write lock up
    front and waits for it instead.  ``synchronous = NORMAL`` in WAL mode
    keeps the database consistent after a crash; a power cut may lose the
    last transactions (acceptable for an embedded, single-host default;
    production deployments use MariaDB/PostgreSQL).
    """
    memory = url.database in (None, "", ":memory:")
    pool: dict[str, ty.Any] = (
        {"poolclass": sa.pool.StaticPool} if memory
        else {"poolclass": sa.pool.QueuePool, "pool_size": 2,
              "max_overflow": 8})
    engine = sa.create_engine(
        url, connect_args={"check_same_thread": False}, **pool)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_con: ty.Any, _record: ty.Any) -> None:
        dbapi_con.isolation_level = None
        dbapi_con.execute("PRAGMA busy_timeout = %d" % _SQLITE_BUSY_TIMEOUT_MS)
        dbapi_con.execute("PRAGMA foreign_keys = ON")
        if not memory:
            dbapi_con.execute("PRAGMA journal_mode = WAL")
            dbapi_con.execute("PRAGMA synchronous = NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        read_only = conn.get_execution_options().get(_READ_ONLY)
        sql = "BEGIN" if read_only else "BEGIN IMMEDIATE"
        try:
            # Straight to the driver: this runs once per transaction.
            conn.connection.dbapi_connection.execute(sql)  # type: ignore[union-attr]
        except Exception as exc:
            conn._handle_dbapi_exception(exc, sql, None, None, None)

    return engine


def _add_fork_guard(engine: sa.Engine) -> None:
    """Never hand a parent process's pooled connection to a forked child."""

    @event.listens_for(engine, "connect")
    def _connect(_dbapi_con: ty.Any, record: ty.Any) -> None:
        record.info["pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def _checkout(_dbapi_con: ty.Any, record: ty.Any, proxy: ty.Any) -> None:
        if record.info.get("pid") != os.getpid():
            record.dbapi_connection = proxy.dbapi_connection = None
            raise sa.exc.DisconnectionError(
                "connection belongs to process %s, not %s"
                % (record.info.get("pid"), os.getpid()))


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


def set_instance_status(conn: sa.Connection, instance_uuid: str,
                        status: str) -> None:
    _dml(conn, _UPDATE_INSTANCE, {"b_uuid": instance_uuid, "status": status})


def delete_instance(conn: sa.Connection, instance_uuid: str) -> None:
    _dml(conn, _DELETE_INSTANCE, {"b_uuid": instance_uuid})
