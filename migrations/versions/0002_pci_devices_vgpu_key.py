"""pci_devices for vGPUs: nullable address, mdev_uuid, device_key identity.

Every existing row is a PCI device, so its ``device_key`` is its address;
the column becomes NOT NULL and unique per (compute node, deleted) once
filled.  Downgrade refuses while live address-less rows exist: Nova's
schema cannot hold them, and dropping them would forget a guest's vGPU.

Repeatable (``pci_vgpu.db.schema_ops``): each step is skipped when done,
and the data step only fills rows still without a key.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa

from pci_vgpu.db import exception as db_exc
from pci_vgpu.db import schema_ops

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_KEY_UNIQUE = "uniq_pci_devices0compute_node_id0device_key0deleted"
steps = schema_ops.Steps(revision)


def upgrade() -> None:
    add = [name for name in ("mdev_uuid", "device_key")
           if steps.missing_column("pci_devices", name)]
    with op.batch_alter_table("pci_devices") as batch:
        # Repeating this ALTER is harmless: it sets what is already set.
        batch.alter_column("address", existing_type=sa.String(12),
                           nullable=True)
        for name in add:
            batch.add_column(sa.Column(
                name, sa.String(36 if name == "mdev_uuid" else 64),
                nullable=True))
    op.execute("UPDATE pci_devices SET device_key = address "
               "WHERE device_key IS NULL")
    add_unique = steps.missing_unique("pci_devices", _KEY_UNIQUE)
    with op.batch_alter_table("pci_devices") as batch:
        batch.alter_column("device_key", existing_type=sa.String(64),
                           nullable=False)
        if add_unique:
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
    drop_unique = steps.has_unique("pci_devices", _KEY_UNIQUE)
    columns = steps.columns("pci_devices")
    with op.batch_alter_table("pci_devices") as batch:
        if drop_unique:
            batch.drop_constraint(_KEY_UNIQUE, type_="unique")
        for name in ("device_key", "mdev_uuid"):
            if name in columns:
                batch.drop_column(name)
        batch.alter_column("address", existing_type=sa.String(12),
                           nullable=False)
