"""Exceptions of the persistence layer and the device tracker."""

from __future__ import annotations

from pci_vgpu import exception


class DatabaseError(exception.PciVgpuException):
    """Base of the tracker's database failures."""

    msg_fmt = "Device tracker database error: %(reason)s"


class InvalidConnectionUrl(exception.Invalid):
    msg_fmt = ("Database connection %(url)s is not usable: %(reason)s; use "
               "sqlite:///<file>, mysql+pymysql://... or "
               "postgresql+psycopg2://...")


class DowngradeBlocked(DatabaseError):
    msg_fmt = ("Cannot downgrade below revision %(revision)s: %(reason)s")


class ComputeNodeNotFound(exception.NotFound):
    msg_fmt = "Compute node %(name)s is not in the device tracker database"


class ConcurrentUpdateDetected(DatabaseError):
    msg_fmt = ("Compute node %(node)s changed while it was being updated "
               "(generation %(generation)d is no longer current); reload "
               "and retry")


class TooManyConcurrentUpdates(DatabaseError):
    msg_fmt = ("Gave up %(operation)s on compute node %(node)s after "
               "%(attempts)d attempts: other workers kept changing it")


class InvalidDeviceReport(exception.Invalid):
    msg_fmt = ("Invalid pci_passthrough_devices report: %(reason)s; expected "
               "a JSON list of device dicts with 'address' or 'mdev_uuid'")


class InstanceAlreadyTracked(exception.Invalid):
    msg_fmt = ("Instance %(instance_uuid)s already holds devices on %(node)s "
               "(status %(status)s); free it before claiming again")


class InstanceNotTracked(exception.NotFound):
    msg_fmt = ("Instance %(instance_uuid)s holds no %(what)s on compute "
               "node %(node)s")
