"""Run the tracker's prebuilt DML statements straight on the DBAPI cursor.

Why: a claim round trip is three transactions of four small statements
each, and SQLAlchemy's per-execution machinery (execution context,
parameter processing, result wrapping, events) cost more CPU than the
database itself did.  Here each (statement, parameter names) pair is
compiled once per dialect into SQL with *named* placeholders; executing it
is one ``cursor.execute(sql, params)``.

What is kept from SQLAlchemy:

* the SQL, from the same Core statements (``pci_vgpu.db.api``), so the
  two paths cannot drift apart;
* the transaction: the statement runs on the DBAPI connection of the
  caller's ``sa.Connection``, inside its transaction;
* error handling: a DBAPI error is handed to the connection's own
  handler, so oslo.db's filters still turn it into ``DBDeadlock``,
  ``DBDuplicateEntry``, ``DBConnectionError`` ... and a dropped connection
  still invalidates the pool (``wrap_db_retry`` relies on both).

Limits, checked when a statement is compiled: DML only (no result rows
are read back but ``rowcount`` and a new row's ``id``), parameters are plain ``str``/``int``/
``bool``/``None`` values (no type processing is applied, and none is needed
for them).  Literals and column defaults are constants: they are bind-
processed once, when their statement is compiled.
"""

from __future__ import annotations

import typing as ty

import sqlalchemy as sa
from sqlalchemy.engine import interfaces

#: The named paramstyle of each driver pci_vgpu supports.
_NAMED_STYLES = {"sqlite": "named", "mysql": "pyformat",
                 "postgresql": "pyformat"}
_PLAIN = (str, int, type(None))
_Compiled = tuple[str, dict[str, ty.Any]]


class UnsupportedStatement(TypeError):
    """A statement or parameter this runner must not execute."""


class Runner:
    """Compiled SQL for one dialect, cached by statement and parameter names."""

    def __init__(self, dialect: interfaces.Dialect) -> None:
        style = _NAMED_STYLES[dialect.name]
        # A second dialect object of the same class, only to render SQL with
        # named placeholders; the engine's own one stays as configured.
        dialect_class: ty.Any = type(dialect)
        self._render: interfaces.Dialect = dialect_class(paramstyle=style)
        self._cache: dict[tuple[int, tuple[str, ...]], _Compiled] = {}
        self._returning: dict[int, sa.Insert] = {}

    def compiled(self, statement: sa.Executable,
                 names: tuple[str, ...]) -> _Compiled:
        """SQL text and the fixed parameter values it needs besides ``names``."""
        key = (id(statement), names)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._compile(statement, names)
        return found

    def _compile(self, statement: sa.Executable,
                 names: tuple[str, ...]) -> _Compiled:
        if not isinstance(statement, (sa.Update, sa.Delete, sa.Insert)):
            raise UnsupportedStatement("only INSERT/UPDATE/DELETE run directly")
        if isinstance(statement, sa.Update) and any(
                getattr(c, "onupdate", None) is not None
                for c in statement.table.c):
            raise UnsupportedStatement("%s has an onupdate default"
                                       % statement.table)
        returning = getattr(statement, "_returning", ())
        if returning and [c.name for c in returning] != ["id"]:
            raise UnsupportedStatement("only RETURNING id is read back")
        compiled = statement.compile(dialect=self._render,
                                     column_keys=list(names))
        fixed = {}
        for name, value in compiled.params.items():
            if name in names:
                continue
            if isinstance(statement, sa.Insert) and value is None:
                value = _column_default(statement, name)
            # A literal or a column default: constant, so its bind
            # processing (SQLite's Boolean -> 0/1 ...) is done here, once.
            process = compiled.binds[name].type._cached_bind_processor(
                self._render)
            fixed[name] = process(value) if process is not None else value
        return str(compiled), fixed

    def execute(self, conn: sa.Connection, statement: sa.Executable,
                params: dict[str, ty.Any]) -> int:
        """Execute ``statement`` with ``params`` in ``conn``'s transaction.

        :returns: the number of rows matched.
        :raises: UnsupportedStatement for a parameter that is not a plain
            value; oslo.db's DBError family for a database failure.
        """
        return self._run(conn, statement, params, lambda cursor: cursor.rowcount)

    def insert(self, conn: sa.Connection, statement: sa.Insert,
               params: dict[str, ty.Any]) -> int:
        """Insert one row and return its generated ``id``.

        PostgreSQL's driver has no ``lastrowid``: there ``statement`` gets
        ``RETURNING id`` (compiled once, like every statement here).

        :raises: as :meth:`execute`.
        """
        if self._render.name == "postgresql":
            returning = self._returning.get(id(statement))
            if returning is None:
                returning = self._returning[id(statement)] = \
                    statement.returning(statement.table.c.id)
            return self._run(conn, returning, params,
                             lambda cursor: cursor.fetchone()[0])
        return self._run(conn, statement, params,
                         lambda cursor: cursor.lastrowid)

    def _run(self, conn: sa.Connection, statement: sa.Executable,
             params: dict[str, ty.Any],
             outcome: ty.Callable[[ty.Any], ty.Any]) -> int:
        for name, value in params.items():
            if not isinstance(value, _PLAIN):
                raise UnsupportedStatement(
                    "parameter %s is a %s" % (name, type(value).__name__))
        sql, fixed = self.compiled(statement, tuple(sorted(params)))
        values = dict(fixed, **params) if fixed else params
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, values)
            return int(outcome(cursor))
        except Exception as exc:
            # Private, but the one entry point that applies the engine's
            # handle_error listeners (oslo.db) and disconnect handling.
            conn._handle_dbapi_exception(exc, sql, values, cursor, None)
        finally:
            cursor.close()


def _column_default(statement: sa.Insert, name: str) -> ty.Any:
    """The Python-side scalar default SQLAlchemy would have applied.

    :raises: UnsupportedStatement for a callable or SQL default.
    """
    column = statement.table.c.get(name)
    default = getattr(column, "default", None)
    if default is None:
        return None
    if not default.is_scalar:
        raise UnsupportedStatement("column %s has a non-constant default"
                                   % name)
    return default.arg
