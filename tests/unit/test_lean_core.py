"""Nova depends on a lean pci_vgpu core.

The patch series makes pci_vgpu a Nova requirement, so ``pip install
pci_vgpu`` lands on every Nova node (API, conductor, scheduler, compute).
The core requirements are libraries Nova already has; hypervisor clients,
the database stack and the CLI are extras.  The modules the series imports
load without any extra and without registering pci_vgpu's versioned objects
(oslo.versionedobjects keeps one registry per process, Nova's).
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import tomllib
import typing as ty

ROOT = pathlib.Path(__file__).resolve().parents[2]
SERIES_DIR = ROOT / "patches" / "nova-34.0.0"

#: import name -> distribution, for what must stay out of the core.
EXTRAS_ONLY = {
    "libvirt": "libvirt-python",
    "lxml": "lxml",
    "XenAPI": "xenapi",
    "cliff": "cliff",
    "stevedore": "stevedore",
    "oslo_db": "oslo.db",
    "sqlalchemy": "sqlalchemy",
    "alembic": "alembic",
    "oslo_privsep": "oslo.privsep",
}

_BLOCKER = """
import importlib.abc, sys
BLOCKED = %r
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError('%%s is not in the lean core' %% name)
        return None
sys.meta_path.insert(0, Block())
"""


def _project() -> dict[str, object]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def _dist_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[;\s]", requirement, maxsplit=1)[0].lower()


def _series_imports() -> set[str]:
    """The pci_vgpu modules the patch series imports (added lines)."""
    modules = set()
    for patch in sorted(SERIES_DIR.glob("*.patch")):
        text = patch.read_text()
        for package, name in re.findall(
                r"^\+\s*from (pci_vgpu[\w.]*) import (\w+)", text, re.M):
            candidate = "%s.%s" % (package, name)
            path = ROOT / candidate.replace(".", "/")
            modules.add(candidate if path.with_suffix(".py").exists()
                        else package)
        modules.update(re.findall(r"^\+\s*import (pci_vgpu[\w.]*)", text, re.M))
    return modules


def test_series_imports_only_the_shared_rules() -> None:
    assert _series_imports() == {
        "pci_vgpu.capacity", "pci_vgpu.fragmentation",
        "pci_vgpu.vgpu_types", "pci_vgpu.virt.libvirt.sharing"}


def test_core_requirements_leave_hypervisor_db_and_cli_to_extras() -> None:
    project = _project()
    core = {_dist_name(r)
            for r in ty.cast(list[str], project["dependencies"])}
    assert not core & set(EXTRAS_ONLY.values()), core
    extras = ty.cast(dict[str, list[str]], project["optional-dependencies"])
    in_extras = {_dist_name(r) for reqs in extras.values() for r in reqs}
    assert set(EXTRAS_ONLY.values()) <= in_extras
    assert {"db", "libvirt", "xenserver", "cli", "all"} <= set(extras)


def test_nova_imports_load_without_extras_or_object_registration() -> None:
    modules = sorted(_series_imports())
    code = _BLOCKER % (tuple(EXTRAS_ONLY),) + "\n".join(
        "import %s" % m for m in modules) + """
assert 'oslo_versionedobjects' not in sys.modules, 'registers objects'
assert not [m for m in sys.modules if m.startswith('pci_vgpu.objects')]
print('lean core ok')
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "lean core ok" in result.stdout


def test_the_blocker_does_block() -> None:
    """The check above can fail: a module needing an extra is refused."""
    code = _BLOCKER % (tuple(EXTRAS_ONLY),) + "import pci_vgpu.db.api\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "is not in the lean core" in result.stderr


def test_pci_vgpu_conf_loads_without_the_db_extra() -> None:
    code = _BLOCKER % (("oslo_db", "sqlalchemy", "alembic"),) + """
import pci_vgpu.conf
(group, opts), = pci_vgpu.conf.database.list_opts()
assert [o.name for o in opts] == [
    'connect_timeout', 'statement_timeout', 'lock_wait_timeout'], opts
print('conf ok')
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
