"""Tracker state: generation, pci_devices.pending_removal, instances.

``generation`` is the compare-and-swap counter of claims (see
``pci_vgpu.db.api``); ``instances`` records each guest's requests, NUMA
cells and whether its devices are claimed or allocated;
``pci_devices.pending_removal`` marks a device the hypervisor stopped
reporting while it was in use: it is removed when freed (Nova keeps that in
memory only, which a second worker process would not see).

Repeatable: each step is skipped when done (``pci_vgpu.db.schema_ops``).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa

from pci_vgpu.db import schema_ops

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

steps = schema_ops.Steps(revision)


def upgrade() -> None:
    if steps.missing_column("compute_nodes", "generation"):
        with op.batch_alter_table("compute_nodes") as batch:
            batch.add_column(sa.Column("generation", sa.Integer,
                                       nullable=False, server_default="0"))
    if steps.missing_column("pci_devices", "pending_removal"):
        with op.batch_alter_table("pci_devices") as batch:
            batch.add_column(sa.Column("pending_removal", sa.Boolean(),
                                       nullable=False,
                                       server_default=sa.false()))
    if steps.missing_table("instances"):
        _create_instances()
    if steps.missing_index("instances", "ix_instances_compute_node_id"):
        op.create_index("ix_instances_compute_node_id", "instances",
                        ["compute_node_id"])


def _create_instances() -> None:
    op.create_table(
        "instances",
        sa.Column("created_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime),
        sa.Column("id", sa.Integer, primary_key=True, nullable=False),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("compute_node_id", sa.Integer,
                  sa.ForeignKey("compute_nodes.id",
                                name="instances_compute_node_id_fkey"),
                  nullable=False),
        sa.Column("name", sa.String(255)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("pci_requests", sa.Text, nullable=False),
        sa.Column("numa_cells", sa.Text),
        sa.UniqueConstraint("uuid", name="uniq_instances0uuid"),
    )


def downgrade() -> None:
    if steps.has_table("instances"):
        op.drop_table("instances")
    if steps.has_column("pci_devices", "pending_removal"):
        with op.batch_alter_table("pci_devices") as batch:
            batch.drop_column("pending_removal")
    if steps.has_column("compute_nodes", "generation"):
        with op.batch_alter_table("compute_nodes") as batch:
            batch.drop_column("generation")
