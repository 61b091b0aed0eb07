"""Every functional test keeps state in a private directory.

A command run before a runner loaded its configuration would otherwise use
``[host] state_dir``'s real default (``~/.local/state/pci-vgpu``) and leave an
embedded host and a database in the developer's home.
"""

from __future__ import annotations

import typing as ty

import pytest

from pci_vgpu import conf as pci_conf


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory: ty.Any) -> ty.Iterator[None]:
    path = str(tmp_path_factory.mktemp("default-state"))
    pci_conf.CONF.set_default("state_dir", path, group="host")
    yield
    pci_conf.CONF.set_default("state_dir", pci_conf.host.OPTS[2].default, group="host")
