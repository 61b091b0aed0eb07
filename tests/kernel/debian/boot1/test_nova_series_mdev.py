"""The Nova series' own libvirt mdev code against libvirtd + mdevctl.

``nova_mdev_harness.py`` runs in the Nova check venv (the patched Nova
34.0.0 tree, ``tools/check-nova-series --prepare-only``) with this
process's libvirt-python added to its path (the check venv has none: Nova's
unit tests use their fake libvirt).  Every step must succeed, names
included: the mdev is found by the UUID-only name Nova keeps in guest XML,
although libvirt 9.0 calls it ``mdev_<uuid>_mtty``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import libvirt
import pytest

from tests.kernel.debian import lab

pytestmark = pytest.mark.kernel

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))))
HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "nova_mdev_harness.py")


def _nova_python() -> str:
    check_dir = os.environ.get("NOVA_CHECK_DIR", os.path.join(REPO, ".nova-check"))
    python = os.path.join(check_dir, "venv", "bin", "python")
    assert os.path.exists(python), (
        "%s is missing: run tools/check-nova-series --prepare-only first" % python)
    return python


def _libvirt_path(tmp_path) -> str:
    """A directory holding only this venv's libvirt-python modules."""
    site = os.path.dirname(libvirt.__file__)
    path = tmp_path / "libvirt-python"
    path.mkdir()
    for name in os.listdir(site):
        if name.startswith(("libvirt", "libvirtmod")) and not name.endswith("dist-info"):
            (path / name).symlink_to(os.path.join(site, name))
    return str(path)


@pytest.fixture
def steps(tmp_path):
    env = dict(os.environ, PYTHONPATH=_libvirt_path(tmp_path), HOME=str(tmp_path))
    done = subprocess.run([_nova_python(), HARNESS, "mtty-1", lab.MTTY_NODE], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    sys.stderr.write(json.dumps(result, indent=1))
    assert result["uri"] == lab.URI
    return {s["step"]: s for s in result["steps"]}, result["mdev_uuid"]


def test_patched_nova_creates_finds_restarts_and_deletes_an_mdev(steps):
    by_step, mdev_uuid = steps
    failed = {k: v["error"] for k, v in by_step.items() if "error" in v}
    assert failed == {}, failed
    assert by_step["capable"]["value"] == [
        {"dev_id": lab.MTTY_NODE, "types": {"mtty-1": 24, "mtty-2": 12}}]
    assert by_step["names"]["value"] == [lab.mdev_node_name(mdev_uuid)]
    info = by_step["lookup_by_uuid"]["value"]
    assert (info["uuid"], info["parent"], info["type"], info["dev_id"]) == (
        mdev_uuid, lab.MTTY_NODE, "mtty-1", lab.mdev_node_name(mdev_uuid))
    assert by_step["not_assigned"]["value"] == [mdev_uuid]
    assert by_step["nodedev"]["value"] == {
        "name": lab.mdev_node_name(mdev_uuid), "active": 1, "persistent": 1, "autostart": 1}
    assert by_step["start_inactive"]["value"] == 1
    assert (by_step["gone"]["value"], by_step["left"]["value"]) == (True, [])
    assert mdev_uuid not in lab.defined_uuids()
