"""Nova 34's compute_nodes (the columns we use) and pci_devices, unchanged.

Each step is skipped when its object exists (``pci_vgpu.db.schema_ops``):
a MariaDB upgrade killed half-way through this revision is completed by
the next run.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa

from pci_vgpu.db import schema_ops

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

steps = schema_ops.Steps(revision)
_INDEXES = {
    "ix_pci_devices_compute_node_id_deleted": ["compute_node_id", "deleted"],
    "ix_pci_devices_instance_uuid_deleted": ["instance_uuid", "deleted"],
    "ix_pci_devices_compute_node_id_parent_addr_deleted":
        ["compute_node_id", "parent_addr", "deleted"],
}


def _timestamps() -> list[sa.Column[object]]:
    return [sa.Column("created_at", sa.DateTime),
            sa.Column("updated_at", sa.DateTime),
            sa.Column("deleted_at", sa.DateTime),
            sa.Column("deleted", sa.Integer)]


def upgrade() -> None:
    if steps.missing_table("compute_nodes"):
        _create_compute_nodes()
    if steps.missing_table("pci_devices"):
        _create_pci_devices()
    for name, columns in _INDEXES.items():
        if steps.missing_index("pci_devices", name):
            op.create_index(name, "pci_devices", columns)


def _create_compute_nodes() -> None:
    op.create_table(
        "compute_nodes",
        *_timestamps(),
        sa.Column("id", sa.Integer, primary_key=True, nullable=False),
        sa.Column("uuid", sa.String(36)),
        sa.Column("hypervisor_hostname", sa.String(255)),
        sa.UniqueConstraint(
            "hypervisor_hostname", "deleted",
            name="uniq_compute_nodes0hypervisor_hostname0deleted"),
    )


def _create_pci_devices() -> None:
    # Nova 34 nova/db/main/migrations/versions/8f2f1571d55b: same names,
    # types, nullability, indexes and unique key.
    op.create_table(
        "pci_devices",
        *_timestamps(),
        sa.Column("id", sa.Integer, primary_key=True, nullable=False),
        sa.Column("uuid", sa.String(36)),
        sa.Column("compute_node_id", sa.Integer,
                  sa.ForeignKey("compute_nodes.id",
                                name="pci_devices_compute_node_id_fkey"),
                  nullable=False),
        sa.Column("address", sa.String(12), nullable=False),
        sa.Column("vendor_id", sa.String(4), nullable=False),
        sa.Column("product_id", sa.String(4), nullable=False),
        sa.Column("dev_type", sa.String(8), nullable=False),
        sa.Column("dev_id", sa.String(255)),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("status", sa.String(36), nullable=False),
        sa.Column("extra_info", sa.Text),
        sa.Column("instance_uuid", sa.String(36)),
        sa.Column("request_id", sa.String(36)),
        sa.Column("numa_node", sa.Integer),
        sa.Column("parent_addr", sa.String(12)),
        sa.UniqueConstraint(
            "compute_node_id", "address", "deleted",
            name="uniq_pci_devices0compute_node_id0address0deleted"),
    )


def downgrade() -> None:
    for table in ("pci_devices", "compute_nodes"):
        if steps.has_table(table):
            op.drop_table(table)
