"""What the Debian kernel-lab guest gives its tests, and small helpers.

``tools/kernel-lab-debian test`` boots a Debian bookworm guest (systemd,
libvirtd 9.0, mdevctl 1.2, QEMU 7.2) under TCG and runs these tests in a
chroot of the host's userland, against the guest's real ``/sys`` and its
libvirtd at ``qemu:///system``::

    guest
      /sys/class/mdev_bus/mtty     libvirt node device mtty_mtty (no PCI):
                                   mtty-1 (1 port), mtty-2 (2 ports), 24 ports
      /sys/class/mdev_bus/mdpy, mbochs   invisible to libvirt 9.0
      0000:01:00.0                 NVMe PF 1b36:0010, sriov_totalvfs 4,
                                   behind intel-iommu (one group per VF)
      /var/lib/pci-vgpu-lab        kept across guest reboots ($PCI_VGPU_LAB_STATE)

The suite runs in two boots of one disk: ``boot1/`` (everything, and the
mdevs the reboot tests need), ``boot2/`` (after the reboot, with Debian's
mdevctl as shipped, then with the workaround).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import subprocess
import time
import typing as ty

from oslo_config import cfg

from pci_vgpu import conf as conf_mod
from pci_vgpu import devspec
from pci_vgpu.virt.libvirt import driver as libvirt_driver

URI = "qemu:///system"
MTTY = "mtty"
#: libvirt's node-device name of the mtty parent.
MTTY_NODE = "mtty_mtty"
NVME_PF = "0000:01:00.0"


def in_debian_guest() -> bool:
    """True inside the Debian lab guest, with the mtty driver loaded."""
    return (os.environ.get("PCI_VGPU_LAB_GUEST") == "debian"
            and os.path.isdir("/sys/class/mdev_bus/" + MTTY))


def state_dir() -> str:
    """A directory on the guest's disk: survives the guest reboots."""
    return os.environ["PCI_VGPU_LAB_STATE"]


def guest_root() -> str:
    """The guest's own / (its /etc/mdevctl.d, its /usr/bin/mdevctl)."""
    return os.environ["PCI_VGPU_LAB_GUEST_ROOT"]


def make_conf(state: str, remove_orphans: bool = False) -> cfg.ConfigOpts:
    opts = cfg.ConfigOpts()
    conf_mod.register_opts(opts)
    opts([], project="pci_vgpu", default_config_files=[])
    opts.set_override("connection_uri", URI, group="libvirt")
    opts.set_override("mdev_backend", "nodedev", group="libvirt")
    opts.set_override("remove_orphan_mdevs", remove_orphans, group="libvirt")
    opts.set_override("state_dir", state, group="host")
    return opts


def make_driver(state: str, specs: ty.Sequence[str] = (),
                remove_orphans: bool = False) -> libvirt_driver.LibvirtDriver:
    """The production libvirt driver on the guest's libvirtd."""
    return libvirt_driver.LibvirtDriver(
        conf=make_conf(state, remove_orphans),
        dev_filter=devspec.Whitelist(list(specs)) if specs else None)


@dataclasses.dataclass
class AllocatedMdev:
    """An mdev device as the tracker hands it to the driver.

    The driver reads only these fields (``devices.view``).  The driver
    tests hand it these rather than tracker records so that they need no
    database; the tracker's own path (``[pci] device_spec`` naming ``mtty``,
    ``server create``) is ``boot1/test_cli_reconcile.py``.
    """

    mdev_uuid: str
    vgpu_type: str
    parent_addr: str = MTTY
    dev_type: str = "mdev"
    extra_info: dict[str, ty.Any] = dataclasses.field(default_factory=dict)


def save_allocated(path: str, devices: ty.Sequence[AllocatedMdev]) -> None:
    with open(path, "w") as out:
        json.dump([dataclasses.asdict(d) for d in devices], out)


def load_allocated(path: str) -> list[AllocatedMdev]:
    with open(path) as src:
        return [AllocatedMdev(**d) for d in json.load(src)]


def sysfs_types(parent: str) -> dict[str, tuple[str, int]]:
    """``{type: (name, available_instances)}`` as the kernel says."""
    base = "/sys/class/mdev_bus/%s/mdev_supported_types" % parent
    found = {}
    for type_id in sorted(os.listdir(base)):
        with open(os.path.join(base, type_id, "name")) as f:
            name = f.read().strip()
        with open(os.path.join(base, type_id, "available_instances")) as f:
            found[type_id] = (name, int(f.read()))
    return found


def sysfs_mdev_type(mdev_uuid: str) -> str | None:
    """The type of a live mdev, None when the kernel has no such mdev."""
    link = "/sys/bus/mdev/devices/%s/mdev_type" % mdev_uuid
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def mdev_node_name(mdev_uuid: str, parent: str = MTTY) -> str:
    """libvirt >= 7.7's node-device name of an mdev.

    Measured on libvirt 9.0: the suffix is the parent's *kernel* name with
    ``:`` and ``.`` as ``_`` (``mdev_<uuid>_mtty``, ``..._0000_41_00_0``),
    not its node-device name (``mtty_mtty``).
    """
    return "mdev_%s_%s" % (mdev_uuid.replace("-", "_"),
                           parent.replace(":", "_").replace(".", "_"))


_SYS_DELETE_MODULE = 176  # x86_64
_SYS_FINIT_MODULE = 313


def reload_module(name: str) -> None:
    """rmmod + insmod of a sample driver kept on the guest's disk.

    Straight system calls: the chroot has the guest's /proc but not its kmod.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_SYS_DELETE_MODULE, name.encode(), os.O_NONBLOCK) != 0:
        raise OSError(ctypes.get_errno(), "delete_module(%s)" % name)
    fd = os.open(os.path.join(state_dir(), "modules", name + ".ko"), os.O_RDONLY)
    try:
        if libc.syscall(_SYS_FINIT_MODULE, fd, b"", 0) != 0:
            raise OSError(ctypes.get_errno(), "finit_module(%s)" % name)
    finally:
        os.close(fd)


def udev_settled() -> bool:
    """systemd-udevd keeps /run/udev/queue while it has events to run."""
    return not os.path.exists("/run/udev/queue")


def mdevctl(*args: str) -> str:
    """Run the guest's own mdevctl (its binary, its /etc/mdevctl.d)."""
    done = subprocess.run(["chroot", guest_root(), "/usr/bin/mdevctl", *args],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, "mdevctl %s: %s" % (" ".join(args), done.stderr)
    return done.stdout


def defined_uuids() -> set[str]:
    """UUIDs mdevctl has a definition of (``mdevctl list --defined``)."""
    return {line.split()[0] for line in mdevctl("list", "--defined").splitlines()
            if line and not line[0].isspace()}


def wait_for(predicate: ty.Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate``; the seconds it took.  :raises: AssertionError."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("%s: not within %.0f s" % (what, timeout))
        time.sleep(0.2)
    return time.monotonic() - start
