"""Building the compute service from configuration, once per process.

The database (``[database] connection``, SQLite in ``[host] state_dir`` by
default) is upgraded to the newest schema the first time it is opened, so a
fresh state directory just works; it stays open for the process.  Each
command builds its tracker anew: the tracker reloads what other processes
wrote (its generation check), so nothing is cached here but the engine.
"""

from __future__ import annotations

import typing as ty

from oslo_db import exception as oslo_db_exc

from pci_vgpu import conf as pci_conf
from pci_vgpu import devspec
from pci_vgpu import exception
from pci_vgpu import manager
from pci_vgpu import request
from pci_vgpu import service as svc
from pci_vgpu import service_tracker
from pci_vgpu.db import api as db_api
from pci_vgpu.virt import driver as virt_driver
from pci_vgpu.virt import embedded

_DATABASES: dict[str, db_api.Database] = {}


class DatabaseUnavailable(exception.PciVgpuException):
    msg_fmt = ("Database %(url)s cannot be used: %(reason)s.  Check [database] "
               "connection (or [host] state_dir for the embedded SQLite).")


def database(conf: ty.Any = None) -> db_api.Database:
    """The configured database, schema upgraded on first use.

    :raises: DatabaseUnavailable; StateDirUnusable when the embedded
        SQLite's directory cannot be made.
    """
    conf = conf or pci_conf.CONF
    from pci_vgpu.conf import database as db_conf
    try:
        url = db_conf.connection_url(conf)
    except OSError as exc:  # the embedded SQLite's directory
        raise embedded.StateDirUnusable(path=conf.host.state_dir, reason=(
            "creating it failed (%s)" % (exc.strerror or exc))) from exc
    if url not in _DATABASES:
        db = db_api.Database.from_config(conf)
        try:
            db.sync()
        except exception.PciVgpuException:
            # Already one line naming the option, the masked URL and the fix.
            db.dispose()
            raise
        except oslo_db_exc.DBError as exc:
            db.dispose()
            raise DatabaseUnavailable(url=db.safe_url,
                                      reason=str(exc).strip().splitlines()[0]) from exc
        _DATABASES[url] = db
    return _DATABASES[url]


def node_name(conf: ty.Any, driver_name: str) -> str:
    """The compute node's name in the database: ``<[host] hostname>:<driver>``.

    One state directory can then hold the embedded libvirt host and the XAPI
    simulator side by side, and switching ``--connection`` never makes one
    host's devices look vanished to the other.
    """
    return "%s:%s" % (conf.host.hostname, driver_name)


def tracker(driver_name: str, conf: ty.Any = None) -> service_tracker.ServiceTracker:
    """A tracker of this host and driver, filtered by ``[pci] device_spec``."""
    conf = conf or pci_conf.CONF
    raw = manager.PciDevTracker(
        database(conf), node_name(conf, driver_name),
        dev_filter=devspec.Whitelist(conf.pci.device_spec),
        placement_policy=conf.pci.placement_policy)
    return service_tracker.ServiceTracker(raw)


def service(driver: virt_driver.VirtDriver, conf: ty.Any = None,
            sync: bool = False) -> svc.ComputeService:
    """The compute service for ``driver`` on the configured database.

    With ``sync`` the inventory is synced now; otherwise only when the
    database knows no device of the node yet, so a first ``pool list`` or
    ``server create`` on a fresh state directory sees the host instead of
    empty pools.
    """
    result = svc.ComputeService(driver, tracker(driver.describe().name, conf))
    if sync or not result.tracker.devices():
        result.sync_inventory()
    return result


def requests_for(flavor: ty.Any, conf: ty.Any = None) -> ty.Any:
    """The ``InstancePCIRequests`` a flavor makes (see pci_vgpu.request)."""
    return request.get_pci_requests_from_flavor(
        {"extra_specs": flavor.extra_specs}, conf or pci_conf.CONF)


def close_all() -> None:
    """Dispose every opened database (tests reuse the process)."""
    while _DATABASES:
        _, db = _DATABASES.popitem()
        db.dispose()
