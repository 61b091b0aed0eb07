"""Sessions (oslo.db enginefacade) and the SQL of the device tracker.

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
SQLite every transaction starts with ``BEGIN IMMEDIATE`` (the database-wide
write lock, waited for up to ``busy_timeout``) and WAL journalling lets
readers run meanwhile.  Deadlocks the server reports anyway (MariaDB gap
locks between nodes) are retried separately by ``oslo_db.api.wrap_db_retry``
around the whole writer function.

Passwords: :attr:`Database.safe_url` is the URL to log, rendered with
``hide_password=True``; the raw URL is never logged.
"""

from __future__ import annotations

import contextlib
import typing as ty

from oslo_config import cfg
from oslo_db.sqlalchemy import enginefacade
from oslo_log import log as logging
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import orm

from pci_vgpu.db import exception as db_exc
from pci_vgpu.db import migration
from pci_vgpu.db import models

LOG = logging.getLogger(__name__)

_SUPPORTED_DRIVERS = ("sqlite", "mysql", "postgresql")
_SQLITE_BUSY_TIMEOUT_MS = 60000


@enginefacade.transaction_context_provider
class _Context:
    """The minimal request context enginefacade attaches sessions to."""


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
    """One database: an enginefacade transaction context and its engine.

    Not the process-global facade: tests and the benchmark open several
    databases in one process.  A forked child must build its own.
    """

    def __init__(self, connection: str) -> None:
        """:raises: InvalidConnectionUrl for a URL of another backend."""
        self.url = _validate_url(connection)
        self.safe_url = mask_url(self.url)
        self._tcm = enginefacade.transaction_context()
        # thread_checkin=False: oslo.db's default time.sleep(0) at every
        # connection check-in exists for eventlet; pci_vgpu does not use
        # green threads and on a loaded host that yield costs ~1 ms.
        self._tcm.configure(connection=connection, sqlite_fk=True,
                            max_retries=3, thread_checkin=False)
        self._engine: sa.Engine | None = None
        self._keeper: ty.Any = None

    @classmethod
    def from_config(cls, conf: cfg.ConfigOpts) -> Database:
        """Open ``[database] connection`` (SQLite in the state dir if unset)."""
        from pci_vgpu.conf import database as db_conf
        return cls(db_conf.connection_url(conf))

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            engine = self._tcm.writer.get_engine()
            if engine.dialect.name == "sqlite":
                _tune_sqlite(engine)
                self._keeper = _keep_open(engine)
            LOG.debug("Opened device tracker database %s", self.safe_url)
            self._engine = engine
        return self._engine

    @contextlib.contextmanager
    def writer(self) -> ty.Iterator[orm.Session]:
        """A session in a read-write transaction, committed on exit."""
        _ = self.engine
        with self._tcm.writer.using(_Context()) as session:
            yield session

    @contextlib.contextmanager
    def reader(self) -> ty.Iterator[orm.Session]:
        """A session in a read-only transaction."""
        _ = self.engine
        with self._tcm.reader.using(_Context()) as session:
            yield session

    def sync(self) -> None:
        """Upgrade the schema to the newest revision."""
        migration.upgrade(self.engine)

    def dispose(self) -> None:
        """Close every pooled connection."""
        if self._engine is not None:
            self._engine.dispose()
        if self._keeper is not None:
            self._keeper.close()
            self._keeper = None


def _tune_sqlite(engine: sa.Engine) -> None:
    """WAL, a long busy timeout and BEGIN IMMEDIATE on every transaction.

    A deferred BEGIN that later writes fails at once with "database is
    locked" when another process committed in between; IMMEDIATE takes the
    write lock up front and waits for it instead.
    """

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_con: ty.Any, _record: ty.Any) -> None:
        dbapi_con.execute("PRAGMA busy_timeout = %d" % _SQLITE_BUSY_TIMEOUT_MS)
        if engine.url.database not in (None, "", ":memory:"):
            dbapi_con.execute("PRAGMA journal_mode = WAL")
            dbapi_con.execute("PRAGMA synchronous = NORMAL")

    # oslo.db installs a "begin" listener emitting a plain (deferred) BEGIN;
    # replace it by ours, which keeps its transaction marker protocol.
    for listener in list(engine.dispatch.begin):
        if getattr(listener, "__name__", "") == "_sqlite_emit_begin":
            event.remove(engine, "begin", listener)

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: sa.Connection) -> None:
        if "in_transaction" not in conn.info:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            conn.info["in_transaction"] = True

    engine.dispose()


def _keep_open(engine: sa.Engine) -> ty.Any:
    """Hold one raw connection to a file database for the Database's life.

    oslo.db gives SQLite file databases a NullPool, so each transaction
    opens and closes its own connection; when the *last* connection to a
    WAL database closes, SQLite checkpoints and deletes the WAL, which costs
    milliseconds per transaction.  One idle connection held open avoids it.
    """
    if engine.url.database in (None, "", ":memory:"):
        return None
    return engine.raw_connection()


# --- compute nodes -----------------------------------------------------------

_NODES = ty.cast(sa.Table, models.ComputeNode.__table__)
_DEVICES = ty.cast(sa.Table, models.PciDevice.__table__)
_INSTANCES = ty.cast(sa.Table, models.Instance.__table__)


def _write(session: orm.Session, statement: sa.Executable) -> sa.CursorResult[ty.Any]:
    """Execute an INSERT/UPDATE/DELETE (typed for rowcount and keys)."""
    return ty.cast(sa.CursorResult[ty.Any], session.execute(statement))


def get_or_create_compute_node(session: orm.Session, hostname: str) -> tuple[int, int]:
    """Return (id, generation) of the live node ``hostname``, creating it."""
    row = session.execute(
        sa.select(_NODES.c.id, _NODES.c.generation).where(
            _NODES.c.hypervisor_hostname == hostname,
            _NODES.c.deleted == 0)).first()
    if row is not None:
        return row.id, row.generation
    result = _write(session, sa.insert(_NODES).values(
        hypervisor_hostname=hostname, generation=0, deleted=0,
        created_at=sa.func.now()))
    return int(ty.cast(tuple[int], result.inserted_primary_key)[0]), 0


def get_generation(session: orm.Session, node_id: int) -> int:
    """:raises: ComputeNodeNotFound."""
    gen = session.execute(sa.select(_NODES.c.generation).where(
        _NODES.c.id == node_id, _NODES.c.deleted == 0)).scalar()
    if gen is None:
        raise db_exc.ComputeNodeNotFound(name="id=%d" % node_id)
    return int(gen)


def lock_node(session: orm.Session, node_id: int) -> int:
    """Lock the node row until commit and return its generation.

    MariaDB/PostgreSQL: a row lock every writer of the node also takes (its
    UPDATE of the generation), so the node cannot change until commit.
    SQLite ignores FOR UPDATE: BEGIN IMMEDIATE already holds the write lock.

    :raises: ComputeNodeNotFound.
    """
    # SELECT generation FROM compute_nodes WHERE id=:id AND deleted=0 FOR UPDATE
    gen = session.execute(
        sa.select(_NODES.c.generation)
        .where(_NODES.c.id == node_id, _NODES.c.deleted == 0)
        .with_for_update()).scalar()
    if gen is None:
        raise db_exc.ComputeNodeNotFound(name="id=%d" % node_id)
    return int(gen)


def bump_generation(session: orm.Session, node_id: int, seen: int) -> int:
    """Compare-and-swap the node's generation from ``seen`` to ``seen + 1``.

    :raises: ConcurrentUpdateDetected when ``seen`` is no longer current.
    """
    # UPDATE compute_nodes SET generation=generation+1
    #  WHERE id=:id AND generation=:seen AND deleted=0
    result = _write(
        session,
        sa.update(_NODES)
        .where(_NODES.c.id == node_id, _NODES.c.generation == seen,
               _NODES.c.deleted == 0)
        .values(generation=_NODES.c.generation + 1))
    if result.rowcount != 1:
        raise db_exc.ConcurrentUpdateDetected(node=node_id, generation=seen)
    return seen + 1


# --- devices -----------------------------------------------------------------

def get_devices(session: orm.Session, node_id: int) -> list[sa.Row[ty.Any]]:
    """Every live device row of the node, oldest first."""
    return list(session.execute(
        sa.select(_DEVICES).where(_DEVICES.c.compute_node_id == node_id,
                                  _DEVICES.c.deleted == 0)
        .order_by(_DEVICES.c.id)).all())


def insert_device(session: orm.Session, node_id: int,
                  values: dict[str, ty.Any]) -> int:
    """Insert a live device row; returns its id."""
    row = dict(values, compute_node_id=node_id, deleted=0,
               created_at=sa.func.now())
    result = _write(session, sa.insert(_DEVICES).values(**row))
    return int(ty.cast(tuple[int], result.inserted_primary_key)[0])


def update_device(session: orm.Session, node_id: int, device_key: str,
                  values: dict[str, ty.Any]) -> None:
    """Update the live row ``device_key`` of the node.

    :raises: DatabaseError if no such live row exists (the caller's view
        of the node is wrong; the transaction must not commit).
    """
    result = _write(
        session,
        sa.update(_DEVICES)
        .where(_DEVICES.c.compute_node_id == node_id,
               _DEVICES.c.device_key == device_key, _DEVICES.c.deleted == 0)
        .values(updated_at=sa.func.now(), **values))
    if result.rowcount != 1:
        raise db_exc.DatabaseError(
            reason="device %s of node %d matched %d live rows, expected 1"
            % (device_key, node_id, result.rowcount))


def soft_delete_device(session: orm.Session, node_id: int, device_key: str,
                       status: str) -> None:
    """Mark the live row ``device_key`` deleted (``deleted = id``)."""
    # UPDATE pci_devices SET deleted=id, deleted_at=now(), status=:status
    #  WHERE compute_node_id=:node AND device_key=:key AND deleted=0
    session.execute(
        sa.update(_DEVICES)
        .where(_DEVICES.c.compute_node_id == node_id,
               _DEVICES.c.device_key == device_key, _DEVICES.c.deleted == 0)
        .values(deleted=_DEVICES.c.id, deleted_at=sa.func.now(),
                status=status, instance_uuid=None, request_id=None))


# --- instances ---------------------------------------------------------------

def get_instances(session: orm.Session, node_id: int) -> list[sa.Row[ty.Any]]:
    """Every instance holding devices on the node."""
    return list(session.execute(
        sa.select(_INSTANCES).where(_INSTANCES.c.compute_node_id == node_id)
        .order_by(_INSTANCES.c.id)).all())


def insert_instance(session: orm.Session, node_id: int,
                    values: dict[str, ty.Any]) -> None:
    session.execute(sa.insert(_INSTANCES).values(
        compute_node_id=node_id, created_at=sa.func.now(), **values))


def set_instance_status(session: orm.Session, instance_uuid: str,
                        status: str) -> None:
    session.execute(sa.update(_INSTANCES)
                    .where(_INSTANCES.c.uuid == instance_uuid)
                    .values(status=status, updated_at=sa.func.now()))


def delete_instance(session: orm.Session, instance_uuid: str) -> None:
    session.execute(sa.delete(_INSTANCES).where(_INSTANCES.c.uuid == instance_uuid))
