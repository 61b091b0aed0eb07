"""The package type-checks with ``mypy --strict`` (configuration in
pyproject.toml, with oslo.versionedobjects' plugin), as os-vif does."""

from __future__ import annotations

import pathlib

from mypy import api

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_mypy_strict_is_clean() -> None:
    stdout, stderr, status = api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--no-incremental",
         str(ROOT / "pci_vgpu")])
    assert status == 0, stdout + stderr
