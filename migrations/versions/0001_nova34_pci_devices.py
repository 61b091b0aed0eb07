"""Nova 34's compute_nodes (the columns we use) and pci_devices, unchanged.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column[object]]:
    return [sa.Column("created_at", sa.DateTime),
            sa.Column("updated_at", sa.DateTime),
            sa.Column("deleted_at", sa.DateTime),
            sa.Column("deleted", sa.Integer)]


def upgrade() -> None:
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
    op.create_index("ix_pci_devices_compute_node_id_deleted",
                    "pci_devices", ["compute_node_id", "deleted"])
    op.create_index("ix_pci_devices_instance_uuid_deleted",
                    "pci_devices", ["instance_uuid", "deleted"])
    op.create_index("ix_pci_devices_compute_node_id_parent_addr_deleted",
                    "pci_devices", ["compute_node_id", "parent_addr", "deleted"])


def downgrade() -> None:
    op.drop_table("pci_devices")
    op.drop_table("compute_nodes")
