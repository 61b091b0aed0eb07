"""SQLAlchemy models of the device tracker's tables.

``pci_devices`` keeps every column of Nova 34's table with the same name,
type and index, so rows move between the two without translation.  Three
changes make room for vGPUs:

* ``address`` is nullable: an mdev or a XAPI VGPU has no PCI address;
* ``mdev_uuid`` holds the mediated device's UUID (Nova's ``uuid`` stays the
  row's own id);
* ``device_key`` is the row's identity on its compute node: the address of
  a PCI device, ``"mdev:<uuid>"`` for a vGPU.  Nova's unique key
  (compute_node_id, address, deleted) cannot tell two mdevs apart because
  NULL is never equal to NULL in a unique constraint on SQLite, MariaDB or
  PostgreSQL; (compute_node_id, device_key, deleted) can, and it is NOT NULL.

``compute_nodes.generation`` is the optimistic-concurrency counter every
writer bumps (see :mod:`pci_vgpu.db.api`); ``instances`` records who holds
claims and allocations, with the requests that made them, and
``instances.server_name`` keeps server names unique per compute node (a
database constraint, not a read-then-write check).

The models and :mod:`migrations` must agree: ``tests/unit/db/test_migrations``
compares them with oslo.db's ``ModelsMigrationsSync`` on all three databases.
"""

from __future__ import annotations

import datetime

import sqlalchemy as sa
from sqlalchemy import orm


class Base(orm.DeclarativeBase):
    """Declarative base shared by every pci_vgpu table."""


class _Timestamps:
    """Nova's ``created_at``/``updated_at`` pair, kept for compatibility."""

    created_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column(
        sa.DateTime, nullable=True)
    updated_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column(
        sa.DateTime, nullable=True)


class _SoftDelete:
    """Nova's soft delete: ``deleted`` is 0 for a live row, its id once gone.

    Setting ``deleted`` to the row id (not 1) keeps unique constraints that
    include ``deleted`` satisfiable by any number of deleted rows.
    """

    deleted_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column(
        sa.DateTime, nullable=True)
    deleted: orm.Mapped[int | None] = orm.mapped_column(
        sa.Integer, nullable=True, default=0)


class ComputeNode(_Timestamps, _SoftDelete, Base):
    """A host whose devices are tracked; the unit of concurrency control."""

    __tablename__ = "compute_nodes"
    __table_args__ = (
        sa.UniqueConstraint(
            "hypervisor_hostname", "deleted",
            name="uniq_compute_nodes0hypervisor_hostname0deleted"),
    )

    id: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True)
    uuid: orm.Mapped[str | None] = orm.mapped_column(sa.String(36), nullable=True)
    hypervisor_hostname: orm.Mapped[str | None] = orm.mapped_column(
        sa.String(255), nullable=True)
    #: Bumped by every write to this node's devices or instances.
    generation: orm.Mapped[int] = orm.mapped_column(
        sa.Integer, nullable=False, default=0, server_default="0")


class PciDevice(_Timestamps, _SoftDelete, Base):
    """One assignable device: a PCI function or a vGPU (mdev, XAPI VGPU)."""

    __tablename__ = "pci_devices"
    __table_args__ = (
        sa.Index("ix_pci_devices_compute_node_id_deleted",
                 "compute_node_id", "deleted"),
        sa.Index("ix_pci_devices_instance_uuid_deleted",
                 "instance_uuid", "deleted"),
        sa.Index("ix_pci_devices_compute_node_id_parent_addr_deleted",
                 "compute_node_id", "parent_addr", "deleted"),
        sa.UniqueConstraint(
            "compute_node_id", "address", "deleted",
            name="uniq_pci_devices0compute_node_id0address0deleted"),
        sa.UniqueConstraint(
            "compute_node_id", "device_key", "deleted",
            name="uniq_pci_devices0compute_node_id0device_key0deleted"),
    )

    id: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True)
    uuid: orm.Mapped[str | None] = orm.mapped_column(sa.String(36), nullable=True)
    compute_node_id: orm.Mapped[int] = orm.mapped_column(
        sa.Integer,
        sa.ForeignKey("compute_nodes.id",
                      name="pci_devices_compute_node_id_fkey"),
        nullable=False)
    #: PCI address; NULL for an mdev / XAPI VGPU (Nova: NOT NULL).
    address: orm.Mapped[str | None] = orm.mapped_column(sa.String(12), nullable=True)
    vendor_id: orm.Mapped[str] = orm.mapped_column(sa.String(4), nullable=False)
    product_id: orm.Mapped[str] = orm.mapped_column(sa.String(4), nullable=False)
    dev_type: orm.Mapped[str] = orm.mapped_column(sa.String(8), nullable=False)
    dev_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(255), nullable=True)
    label: orm.Mapped[str] = orm.mapped_column(sa.String(255), nullable=False)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(36), nullable=False)
    extra_info: orm.Mapped[str | None] = orm.mapped_column(sa.Text, nullable=True)
    instance_uuid: orm.Mapped[str | None] = orm.mapped_column(
        sa.String(36), nullable=True)
    request_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(36), nullable=True)
    numa_node: orm.Mapped[int | None] = orm.mapped_column(sa.Integer, nullable=True)
    parent_addr: orm.Mapped[str | None] = orm.mapped_column(
        sa.String(12), nullable=True)
    #: The mediated device's UUID (new; NULL for PCI devices).
    mdev_uuid: orm.Mapped[str | None] = orm.mapped_column(sa.String(36), nullable=True)
    #: Identity on the node: address, or "mdev:<mdev_uuid>" (new, NOT NULL).
    device_key: orm.Mapped[str] = orm.mapped_column(sa.String(64), nullable=False)
    #: The hypervisor stopped reporting it while in use: remove when freed.
    pending_removal: orm.Mapped[bool] = orm.mapped_column(
        sa.Boolean(), nullable=False, default=False, server_default=sa.false())


class Instance(_Timestamps, Base):
    """A guest holding claims or allocations on one compute node.

    Rows are deleted (not soft-deleted) when the instance's devices are
    freed: the devices' own rows keep the history that matters, and a
    freed server name can be taken again at once.
    """

    __tablename__ = "instances"
    __table_args__ = (
        sa.UniqueConstraint("uuid", name="uniq_instances0uuid"),
        sa.UniqueConstraint(
            "compute_node_id", "server_name",
            name="uniq_instances0compute_node_id0server_name"),
        sa.Index("ix_instances_compute_node_id", "compute_node_id"),
    )

    id: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True)
    uuid: orm.Mapped[str] = orm.mapped_column(sa.String(36), nullable=False)
    compute_node_id: orm.Mapped[int] = orm.mapped_column(
        sa.Integer,
        sa.ForeignKey("compute_nodes.id", name="instances_compute_node_id_fkey"),
        nullable=False)
    name: orm.Mapped[str | None] = orm.mapped_column(sa.String(255), nullable=True)
    #: ``name`` for a server's own claim, unique on its compute node; NULL
    #: for rows that share their server's name (hot-plug attachments) and
    #: for unnamed claims.  NULLs never collide in a unique key.
    server_name: orm.Mapped[str | None] = orm.mapped_column(
        sa.String(255), nullable=True)
    #: "claimed" or "allocated".
    status: orm.Mapped[str] = orm.mapped_column(sa.String(16), nullable=False)
    #: JSON list of InstancePCIRequest primitives (Nova's to_json shape).
    pci_requests: orm.Mapped[str] = orm.mapped_column(sa.Text, nullable=False)
    #: JSON list of guest NUMA cell ids, or NULL.
    numa_cells: orm.Mapped[str | None] = orm.mapped_column(sa.Text, nullable=True)
