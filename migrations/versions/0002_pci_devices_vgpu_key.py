"""pci_devices for vGPUs: nullable address, mdev_uuid, device_key identity.

Every existing row is a PCI device, so its ``device_key`` is its address;
the column becomes NOT NULL and unique per (compute node, deleted) once
filled.  Downgrade refuses while live address-less rows exist: Nova's
schema cannot hold them, and dropping them would forget a guest's vGPU.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa

from pci_vgpu.db import exception as db_exc

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_KEY_UNIQUE = "uniq_pci_devices0compute_node_id0device_key0deleted"


def upgrade() -> None:
    with op.batch_alter_table("pci_devices") as batch:
        batch.alter_column("address", existing_type=sa.String(12),
                           nullable=True)
        batch.add_column(sa.Column("mdev_uuid", sa.String(36), nullable=True))
        batch.add_column(sa.Column("device_key", sa.String(64), nullable=True))
    op.execute("UPDATE pci_devices SET device_key = address")
    with op.batch_alter_table("pci_devices") as batch:
        batch.alter_column("device_key", existing_type=sa.String(64),
                           nullable=False)
        batch.create_unique_constraint(
            _KEY_UNIQUE, ["compute_node_id", "device_key", "deleted"])


def downgrade() -> None:
    bind = op.get_bind()
    live = bind.execute(sa.text(
        "SELECT COUNT(*) FROM pci_devices "
        "WHERE address IS NULL AND deleted = 0")).scalar_one()
    if live:
        raise db_exc.DowngradeBlocked(
            revision=revision,
            reason="%d live pci_devices rows have no PCI address (vGPUs); "
                   "free them first" % live)
    op.execute("DELETE FROM pci_devices WHERE address IS NULL")
    with op.batch_alter_table("pci_devices") as batch:
        batch.drop_constraint(_KEY_UNIQUE, type_="unique")
        batch.drop_column("device_key")
        batch.drop_column("mdev_uuid")
        batch.alter_column("address", existing_type=sa.String(12),
                           nullable=False)
