"""Fixtures of the libvirt driver tests: real test-driver hosts, fake sysfs.

Hosts are the files bundled in ``pci_vgpu/virt/libvirt/hosts/`` (each draws
its topology in a comment); every test gets a fresh private connection.
"""

from __future__ import annotations

import os
import typing as ty

import libvirt
import pytest
from oslo_config import cfg

from pci_vgpu import conf as conf_mod
from pci_vgpu.objects import pci_device
from pci_vgpu.virt.libvirt import driver as driver_mod
from pci_vgpu.virt.libvirt import testseam
from tests.fixtures import sysfs as fake_sysfs

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "data", "libvirt")
REGEN = "PCI_VGPU_REGEN_GOLDEN"

T4 = "0000:41:00.0"
V100 = "0000:06:00.0"
UUID1 = "4b20d080-1b54-4048-85b3-a6a62d165c01"
UUID2 = "9f579710-6ffc-4201-987b-4b9e7d0e8d1a"
GUEST = "0b6f1c1e-aaaa-4c5b-8e7f-9a0b1c2d3e4f"


def golden(case: str, text: str) -> None:
    """Compare ``text`` with ``tests/data/libvirt/<case>``; regenerate with
    PCI_VGPU_REGEN_GOLDEN=1 and review the diff."""
    path = os.path.normpath(os.path.join(GOLDEN_DIR, case))
    if os.environ.get(REGEN):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)
    with open(path) as handle:
        assert text == handle.read(), "differs from golden file %s" % path


@pytest.fixture
def conf(tmp_path: ty.Any) -> cfg.ConfigOpts:
    """Fresh options; embedded hosts keep their state under ``tmp_path``."""
    opts = cfg.ConfigOpts()
    conf_mod.register_opts(opts)
    opts([], project="pci_vgpu", default_config_files=[])
    opts.set_override("state_dir", str(tmp_path / "state"), group="host")
    return opts


@pytest.fixture
def sysfs(tmp_path: ty.Any) -> fake_sysfs.FakeSysfs:
    return fake_sysfs.FakeSysfs(str(tmp_path / "root"))


def open_host(name: str) -> testseam.TestDriverSeam:
    return testseam.TestDriverSeam(libvirt.open(driver_mod.host_uri(name)))


@pytest.fixture
def make_driver(conf: cfg.ConfigOpts, sysfs: fake_sysfs.FakeSysfs
                ) -> ty.Callable[..., driver_mod.LibvirtDriver]:
    def make(host: str = "two-socket-t4-v100", backend: str = "nodedev",
             **overrides: ty.Any) -> driver_mod.LibvirtDriver:
        conf.set_override("mdev_backend", backend, group="libvirt")
        for key, value in overrides.items():
            conf.set_override(key, value, group="libvirt")
        return driver_mod.LibvirtDriver(conf=conf, connection=open_host(host),
                                        sysfs=sysfs.root)
    return make


def mdev_device(parent: str = T4, vgpu_type: str = "nvidia-222",
                mdev_uuid: str = UUID1) -> pci_device.PciDevice:
    """A claimed vGPU as the pools hand it out (a new mdev record)."""
    return pci_device.PciDevice.create(None, {
        "dev_id": None, "address": None, "vendor_id": "10de", "product_id": "1eb8",
        "numa_node": 1, "label": "label_10de_1eb8", "dev_type": "mdev",
        "parent_addr": parent, "mdev_uuid": mdev_uuid, "vgpu_type": vgpu_type})


def from_inventory(dev: dict[str, ty.Any]) -> pci_device.PciDevice:
    return pci_device.PciDevice.create(None, dev)
