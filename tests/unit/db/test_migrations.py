"""Migration walk, model/migration agreement and the Nova 34 upgrade.

Each test runs on SQLite, and on MariaDB and PostgreSQL when their servers
are up (see ``tests/fixtures/db.py``).
"""

from __future__ import annotations

import typing as ty
import unittest

from oslo_db.sqlalchemy import test_migrations
import pytest
import sqlalchemy as sa

from pci_vgpu.db import exception as db_exc
from pci_vgpu.db import migration
from pci_vgpu.db import models
from tests.fixtures import db as db_fixtures
from tests.fixtures.db import db_url  # noqa: F401  (pytest fixture)

# Nova 34 nova/db/main/models.py PciDevice: column -> (type, length, nullable).
NOVA34_PCI_DEVICES = {
    "created_at": ("DATETIME", None, True),
    "updated_at": ("DATETIME", None, True),
    "deleted_at": ("DATETIME", None, True),
    "deleted": ("INTEGER", None, True),
    "id": ("INTEGER", None, False),
    "uuid": ("VARCHAR", 36, True),
    "compute_node_id": ("INTEGER", None, False),
    "address": ("VARCHAR", 12, False),
    "vendor_id": ("VARCHAR", 4, False),
    "product_id": ("VARCHAR", 4, False),
    "dev_type": ("VARCHAR", 8, False),
    "dev_id": ("VARCHAR", 255, True),
    "label": ("VARCHAR", 255, False),
    "status": ("VARCHAR", 36, False),
    "extra_info": ("TEXT", None, True),
    "instance_uuid": ("VARCHAR", 36, True),
    "request_id": ("VARCHAR", 36, True),
    "numa_node": ("INTEGER", None, True),
    "parent_addr": ("VARCHAR", 12, True),
}
NOVA34_INDEXES = {
    "ix_pci_devices_compute_node_id_deleted": ["compute_node_id", "deleted"],
    "ix_pci_devices_instance_uuid_deleted": ["instance_uuid", "deleted"],
    "ix_pci_devices_compute_node_id_parent_addr_deleted":
        ["compute_node_id", "parent_addr", "deleted"],
}


def _engine(url: str) -> ty.Iterator[sa.Engine]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def engine(db_url: str) -> ty.Iterator[sa.Engine]:  # noqa: F811
    yield from _engine(db_url)


def _columns(engine: sa.Engine, table: str) -> dict[str, dict[str, ty.Any]]:
    return {c["name"]: c for c in sa.inspect(engine).get_columns(table)}


def _type_name(col_type: sa.types.TypeEngine[ty.Any]) -> tuple[str, int | None]:
    if isinstance(col_type, sa.String) and not isinstance(col_type, sa.Text):
        return "VARCHAR", col_type.length
    if isinstance(col_type, sa.Text):
        return "TEXT", None
    if isinstance(col_type, sa.DateTime):
        return "DATETIME", None
    if isinstance(col_type, sa.Integer):
        return "INTEGER", None
    return str(col_type), None


def test_walk_up_and_down_one_revision_at_a_time(engine: sa.Engine) -> None:
    full = {"compute_nodes", "pci_devices", "instances"}
    expected_tables = {"0001": {"compute_nodes", "pci_devices"},
                       "0002": {"compute_nodes", "pci_devices"},
                       "0003": full, "0004": full}
    revs = migration.revisions()
    assert revs == ["0001", "0002", "0003", "0004"]
    for rev in revs:
        migration.upgrade(engine, rev)
        assert migration.current(engine) == rev
        tables = set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
        assert tables == expected_tables[rev]
    assert "device_key" in _columns(engine, "pci_devices")
    assert "generation" in _columns(engine, "compute_nodes")
    assert "server_name" in _columns(engine, "instances")
    for rev in reversed(revs[:-1]):
        migration.downgrade(engine, rev)
        assert migration.current(engine) == rev
        if rev == "0003":
            assert "server_name" not in _columns(engine, "instances")
    assert "device_key" not in _columns(engine, "pci_devices")
    migration.downgrade(engine, "base")
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}


def test_0001_is_nova34_pci_devices(engine: sa.Engine) -> None:
    migration.upgrade(engine, "0001")
    cols = _columns(engine, "pci_devices")
    got = {name: _type_name(c["type"]) + (c["nullable"],) for name, c in cols.items()}
    assert got == NOVA34_PCI_DEVICES
    indexes = {i["name"]: i["column_names"]
               for i in sa.inspect(engine).get_indexes("pci_devices")
               if i["name"] in NOVA34_INDEXES}
    assert indexes == NOVA34_INDEXES
    uniques = sa.inspect(engine).get_unique_constraints("pci_devices")
    assert {"name": "uniq_pci_devices0compute_node_id0address0deleted",
            "column_names": ["compute_node_id", "address", "deleted"]} in [
        {"name": u["name"], "column_names": u["column_names"]} for u in uniques]


def _nova_row(node: int, address: str, status: str,
              instance: str | None = None) -> dict[str, ty.Any]:
    return {"compute_node_id": node, "address": address, "vendor_id": "10de",
            "product_id": "1eb8", "dev_type": "type-PCI",
            "dev_id": "pci_" + address.replace(":", "_").replace(".", "_"),
            "label": "label_10de_1eb8", "status": status, "deleted": 0,
            "extra_info": "{}", "instance_uuid": instance, "numa_node": 1,
            "uuid": None, "parent_addr": None, "request_id": None}


def test_upgrade_keeps_every_nova34_row(engine: sa.Engine) -> None:
    migration.upgrade(engine, "0001")
    rows = [_nova_row(1, "0000:41:00.%d" % fn, "available") for fn in range(6)]
    rows.append(_nova_row(1, "0000:81:00.0", "allocated",
                          "3f1c4e1a-0000-4000-8000-000000000001"))
    rows.append(_nova_row(2, "0000:41:00.0", "claimed",
                          "3f1c4e1a-0000-4000-8000-000000000002"))
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO compute_nodes (id, hypervisor_hostname, deleted) "
            "VALUES (1, 'cn1', 0), (2, 'cn2', 0)"))
        conn.execute(sa.insert(sa.table("pci_devices", *[
            sa.column(k) for k in rows[0]])), rows)
        before = conn.execute(sa.text(
            "SELECT id, compute_node_id, address, status, instance_uuid "
            "FROM pci_devices ORDER BY id")).all()
    migration.upgrade(engine)
    with engine.connect() as conn:
        after = conn.execute(sa.text(
            "SELECT id, compute_node_id, address, status, instance_uuid, "
            "device_key, mdev_uuid FROM pci_devices ORDER BY id")).all()
        generations = conn.execute(sa.text(
            "SELECT generation FROM compute_nodes")).scalars().all()
    assert [tuple(r[:5]) for r in after] == [tuple(r) for r in before]
    assert all(r.device_key == r.address and r.mdev_uuid is None for r in after)
    assert len(after) == 8 and generations == [0, 0]


def _insert_mdev(conn: sa.Connection, mdev_uuid: str, deleted: int = 0) -> None:
    conn.execute(sa.insert(models.PciDevice.__table__).values(
        compute_node_id=1, address=None, vendor_id="10de", product_id="1eb8",
        dev_type="mdev", label="label_10de_1eb8", status="available",
        parent_addr="0000:41:00.0", mdev_uuid=mdev_uuid,
        device_key="mdev:" + mdev_uuid, deleted=deleted))


def test_device_key_identifies_address_less_rows(engine: sa.Engine) -> None:
    migration.upgrade(engine)
    uuid_a = "4b20d080-1b54-4048-85b3-a6a62d165c01"
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO compute_nodes (id, deleted, generation)"
                             " VALUES (1, 0, 0)"))
        _insert_mdev(conn, uuid_a)
        _insert_mdev(conn, "4b20d080-1b54-4048-85b3-a6a62d165c02")
        # A soft-deleted row of the same vGPU coexists with the live one.
        _insert_mdev(conn, uuid_a, deleted=99)
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as conn:
            _insert_mdev(conn, uuid_a)
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT COUNT(*) FROM pci_devices")).scalar()
    assert count == 3


def test_downgrade_refuses_to_drop_live_vgpus(engine: sa.Engine) -> None:
    migration.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO compute_nodes (id, deleted, generation)"
                             " VALUES (1, 0, 0)"))
        _insert_mdev(conn, "4b20d080-1b54-4048-85b3-a6a62d165c01")
    with pytest.raises(db_exc.DowngradeBlocked, match="1 live pci_devices"):
        migration.downgrade(engine, "0001")
    # Refused before any DDL ran (MariaDB would not roll DDL back).
    assert migration.current(engine) == "0004"
    assert "instances" in sa.inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT COUNT(*) FROM pci_devices WHERE address IS NULL")).scalar() == 1


class _ModelsMigrationsSync(test_migrations.ModelsMigrationsSync):
    """oslo.db's comparison of models.Base.metadata with the migrated DB."""

    BACKEND = "sqlite"

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        db = db_fixtures.Database(self.BACKEND)
        db.setUp()
        self.addCleanup(db.cleanUp)  # type: ignore[attr-defined]
        self.engine = sa.create_engine(db.url, poolclass=sa.pool.NullPool)
        self.addCleanup(self.engine.dispose)  # type: ignore[attr-defined]

    def db_sync(self, engine: sa.Engine) -> None:
        migration.upgrade(engine)

    def get_engine(self) -> sa.Engine:
        return self.engine

    def get_metadata(self) -> sa.MetaData:
        return models.Base.metadata

    def include_object(self, object_: ty.Any, name: str, type_: str,
                       reflected: bool, compare_to: ty.Any) -> bool:
        return not (type_ == "table" and name == "alembic_version")


class TestModelsSyncSQLite(_ModelsMigrationsSync, unittest.TestCase):
    BACKEND = "sqlite"


@pytest.mark.mysql
class TestModelsSyncMySQL(_ModelsMigrationsSync, unittest.TestCase):
    BACKEND = "mysql"


@pytest.mark.postgresql
class TestModelsSyncPostgreSQL(_ModelsMigrationsSync, unittest.TestCase):
    BACKEND = "postgresql"
