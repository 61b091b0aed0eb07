"""Golden JSON of the listings scripts consume: ``pool list``, ``flavor explain``.

Regenerate with ``PCI_VGPU_REGEN_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import typing as ty

import pytest

from tests.functional.cli_runner import Cli
from tests.functional.test_cli_inventory import compare_to_golden


@pytest.fixture
def cli(tmp_path: ty.Any) -> ty.Iterator[Cli]:
    runner = Cli(tmp_path)
    yield runner
    runner.close()


@pytest.mark.parametrize("connection", ["libvirt", "xenserver"])
def test_pool_list(cli, connection):
    pools = cli.json("pool", "list", "--connection", connection)
    compare_to_golden("pool-list-%s.json" % connection, pools)


def test_pool_list_with_guests(cli):
    cli("server", "create", "vm1", "--flavor", "t4-small", "--connection", "libvirt")
    cli("server", "create", "vm2", "--flavor", "v100-medium", "--connection", "libvirt")
    compare_to_golden("pool-list-libvirt-two-guests.json",
                      cli.json("pool", "list", "--connection", "libvirt"))


@pytest.mark.parametrize("flavor, numa, connection", [
    ("v100-medium", "1", "libvirt"),
    ("k2-k280q-x5", None, "xenserver"),
])
def test_flavor_explain_that_does_not_fit(cli, flavor, numa, connection):
    argv = ["flavor", "explain", flavor, "--connection", connection]
    argv += ["--numa-node", numa] if numa else []
    rows = cli.json(*argv, expect=1)
    compare_to_golden("flavor-explain-%s.json" % flavor, rows)
