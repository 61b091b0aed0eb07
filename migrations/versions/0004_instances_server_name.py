"""instances.server_name: a server's name, unique on its compute node.

Two ``server create same1`` started together both passed the service's
name check (a read) before either claim was written.  The database now
refuses the second: ``uniq_instances0compute_node_id0server_name`` on
``(compute_node_id, server_name)``, inserted in the claim's transaction,
so the losing claim rolls back whole.

``server_name`` rather than a key on ``name``: a hot-plug attachment is an
``instances`` row of its own that carries its server's ``name``; it leaves
``server_name`` NULL, and NULL never equals NULL in a unique key on SQLite,
MariaDB or PostgreSQL, so a server may have any number of attachments (and
unnamed claims, as Nova makes, are never refused).  ``instances`` rows are
deleted, not soft-deleted, when freed, so a freed name is free at once;
there is no ``deleted`` column to add to the key.

Existing rows: each server gets ``server_name = name``; an attachment
(``uuid = uuid5(<its server's uuid>, "attachment:<first request_id>")``,
the rule of ``pci_vgpu.service_tracker``, frozen here) keeps NULL.  Servers
that already share a name on a node (made before this revision) keep it
for the oldest; each later one, with its attachments, is renamed
``<name>-<uuid>`` and a warning says so.  The data step only touches rows
still without ``server_name``, so it is repeatable like every step here.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import collections
import json
import typing as ty
import uuid as uuidlib

from alembic import op
from oslo_log import log as logging
import sqlalchemy as sa

from pci_vgpu.db import schema_ops

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LOG = logging.getLogger(__name__)
steps = schema_ops.Steps(revision)
_NAME_UNIQUE = "uniq_instances0compute_node_id0server_name"
_NAME_LENGTH = 255


def upgrade() -> None:
    if steps.missing_column("instances", "server_name"):
        op.add_column("instances", sa.Column(
            "server_name", sa.String(_NAME_LENGTH), nullable=True))
    _fill_server_names(op.get_bind())
    if steps.missing_unique("instances", _NAME_UNIQUE):
        with op.batch_alter_table("instances") as batch:
            batch.create_unique_constraint(
                _NAME_UNIQUE, ["compute_node_id", "server_name"])


def downgrade() -> None:
    if steps.has_unique("instances", _NAME_UNIQUE):
        with op.batch_alter_table("instances") as batch:
            batch.drop_constraint(_NAME_UNIQUE, type_="unique")
    if steps.has_column("instances", "server_name"):
        with op.batch_alter_table("instances") as batch:
            batch.drop_column("server_name")


# --- the data step -----------------------------------------------------------

_Row = ty.Any


def _fill_server_names(bind: sa.Connection) -> None:
    rows = bind.execute(sa.text(
        "SELECT id, uuid, compute_node_id, name, server_name, pci_requests "
        "FROM instances ORDER BY id")).all()
    taken = {(r.compute_node_id, r.server_name) for r in rows if r.server_name}
    groups: dict[tuple[int, str], list[_Row]] = collections.defaultdict(list)
    for row in rows:
        if row.name is not None:
            groups[(row.compute_node_id, row.name)].append(row)
    for (node, name), group in groups.items():
        for server in [r for r in group if not _attachment(r, group)]:
            if server.server_name is not None:
                continue
            new_name = name
            if (node, name) in taken:
                new_name = "%s-%s" % (name[:_NAME_LENGTH - 37], server.uuid)
                LOG.warning("Server name %(name)s was held by several servers "
                            "on compute node %(node)s; %(uuid)s is now named "
                            "%(new)s", {"name": name, "node": node,
                                        "uuid": server.uuid, "new": new_name})
                for row in group:
                    if _attachment_of(row, server):
                        _set_names(bind, row.id, new_name, None)
            _set_names(bind, server.id, new_name, new_name)
            taken.add((node, new_name))


def _set_names(bind: sa.Connection, row_id: int, name: str,
               server_name: str | None) -> None:
    bind.execute(sa.text(
        "UPDATE instances SET name = :name, server_name = :server_name "
        "WHERE id = :id"),
        {"name": name, "server_name": server_name, "id": row_id})


def _attachment(row: _Row, group: list[_Row]) -> bool:
    return any(_attachment_of(row, other) for other in group)


def _attachment_of(row: _Row, server: _Row) -> bool:
    if row.id == server.id:
        return False
    try:
        request_id = json.loads(row.pci_requests)[0]["request_id"]
        expected = uuidlib.uuid5(uuidlib.UUID(server.uuid),
                                 "attachment:%s" % request_id)
    except (ValueError, LookupError, TypeError):
        return False
    return row.uuid == str(expected)
