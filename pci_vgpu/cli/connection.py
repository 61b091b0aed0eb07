"""Choosing and loading the virt driver for a command.

``--connection`` names the hypervisor the way an operator knows it:

* a libvirt URI (``qemu:///system``, ``test:///path/host.xml``) -> ``libvirt``;
* an ``http://`` or ``https://`` URL -> ``xenserver`` (XAPI);
* a bare driver name (``libvirt``, ``xenserver``, ``noop``) -> that driver on
  its configured (by default: embedded) connection.

Without ``--connection`` the driver is ``[host] driver``.  Drivers are
stevedore plugins of namespace ``pci_vgpu.virt_drivers``.  Loaded drivers are
kept for the life of the process, keyed by their connection, so commands
chained in one process (the demo, cliff's interactive mode, in-process
tests) reuse one connection; the embedded test hosts keep their state in
``[host] state_dir`` (``pci_vgpu.virt.embedded``), so separate processes see
each other's guests too.
"""

from __future__ import annotations

import atexit
import dataclasses
import inspect
import typing as ty

from oslo_config import cfg
from oslo_log import log as logging
from stevedore import driver as sd_driver
from stevedore import exception as sd_exc

from pci_vgpu import exception
from pci_vgpu import redact
from pci_vgpu.virt import driver as virt_driver

LOG = logging.getLogger(__name__)

NAMESPACE = "pci_vgpu.virt_drivers"
DRIVER_NAMES = ("libvirt", "xenserver", "noop")

_LOADED: dict[tuple[str, str], virt_driver.VirtDriver] = {}


class InvalidConnection(exception.Invalid):
    msg_fmt = ("Connection %(connection)r is not understood: give a libvirt URI "
               "(e.g. test:///path/host.xml, qemu:///system), an http(s):// XenServer "
               "URL or one of the driver names %(names)s.")


class DriverLoadFailed(exception.PciVgpuException):
    msg_fmt = "Virt driver %(name)s (namespace %(namespace)s) cannot be loaded: %(reason)s"


@dataclasses.dataclass(frozen=True)
class Connection:
    """Which driver to load and the connection it should use ("" = embedded)."""

    driver: str
    uri: str = ""


def parse(value: str | None, default_driver: str) -> Connection:
    """Turn a ``--connection`` value into a :class:`Connection`.

    :raises: InvalidConnection for anything that is neither a URI nor a name.
    """
    if not value:
        return Connection(driver=default_driver)
    if value in DRIVER_NAMES:
        return Connection(driver=value)
    if value.startswith(("http://", "https://")):
        return Connection(driver="xenserver", uri=value)
    if "://" in value or value.split(":", 1)[0] in ("test", "qemu", "xen", "lxc"):
        return Connection(driver="libvirt", uri=value)
    raise InvalidConnection(connection=redact.mask_url(value), names=", ".join(DRIVER_NAMES))


def apply(conn: Connection, conf: cfg.ConfigOpts) -> None:
    """Point ``conf`` at ``conn`` (drivers read their connection from it)."""
    conf.set_override("driver", conn.driver, group="host")
    if conn.driver == "libvirt" and conn.uri:
        conf.set_override("connection_uri", conn.uri, group="libvirt")
    elif conn.driver == "xenserver" and conn.uri:
        conf.set_override("connection_url", conn.uri, group="xenserver")


def _current_uri(conn: Connection, conf: cfg.ConfigOpts) -> str:
    if conn.driver == "libvirt":
        return str(conf.libvirt.connection_uri)
    if conn.driver == "xenserver":
        return str(conf.xenserver.connection_url)
    return conn.uri


def _instantiate(plugin: type[virt_driver.VirtDriver], conf: cfg.ConfigOpts) -> virt_driver.VirtDriver:
    """Build a driver with ``conf`` and the ``[pci] device_spec`` filter.

    The filter makes the driver report only assignable devices, with the
    vGPU types each spec offers (the driver contract); it is passed only to
    constructors that take it.
    """
    from pci_vgpu import devspec

    params = inspect.signature(plugin).parameters
    kwargs: dict[str, ty.Any] = {}
    if "conf" in params:
        kwargs["conf"] = conf
    if "dev_filter" in params:
        kwargs["dev_filter"] = devspec.Whitelist(conf.pci.device_spec)
    return plugin(**kwargs)


def load(conn: Connection, conf: cfg.ConfigOpts) -> virt_driver.VirtDriver:
    """Return the (cached) driver for ``conn``, applying it to ``conf`` first.

    :raises: DriverLoadFailed naming the driver and why.
    """
    apply(conn, conf)
    key = (conn.driver, _current_uri(conn, conf))
    if key in _LOADED:
        return _LOADED[key]
    try:
        manager: sd_driver.DriverManager[ty.Any] = sd_driver.DriverManager(
            NAMESPACE, conn.driver, invoke_on_load=False)
        drv = _instantiate(ty.cast(type[virt_driver.VirtDriver], manager.driver), conf)
    except exception.PciVgpuException:
        raise
    except (sd_exc.NoMatches, ImportError, AttributeError) as exc:
        raise DriverLoadFailed(name=conn.driver, namespace=NAMESPACE,
                               reason=str(exc) or type(exc).__name__) from exc
    _LOADED[key] = drv
    return drv


def register(conn_key: tuple[str, str], drv: virt_driver.VirtDriver) -> None:
    """Install an already-built driver under a key (demo and tests use it)."""
    _LOADED[conn_key] = drv


def close_all() -> None:
    """Close every loaded driver (log out of XAPI, stop simulators)."""
    while _LOADED:
        _, drv = _LOADED.popitem()
        try:
            drv.close()
        except Exception as exc:  # noqa: BLE001 - closing must never mask the real error
            LOG.warning("Closing driver %s failed: %s", drv.describe().name, exc)


atexit.register(close_all)

__all__: ty.Sequence[str] = ("Connection", "parse", "load", "close_all")
