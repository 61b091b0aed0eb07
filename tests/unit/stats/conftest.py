"""Shared builders for the stats tests."""

from __future__ import annotations

import typing as ty

import pytest

from pci_vgpu import stats
from tests.fixtures import inventory as inv


def build(dev_dicts: ty.Iterable[dict[str, ty.Any]],
          policy: str = "pack", **kwargs: ty.Any
          ) -> tuple[stats.PciDeviceStats, list[ty.Any]]:
    """Stats over PciDevice objects made from ``dev_dicts`` (all free)."""
    s = stats.PciDeviceStats(placement_policy=policy, **kwargs)
    devs = inv.to_devices(dev_dicts)
    for d in devs:
        s.add_device(d)
    return s, devs


def counts(s: stats.PciDeviceStats) -> dict[tuple[ty.Any, ...], int]:
    """{(address, vgpu_type or dev_type): count} of every pool."""
    return {(p["address"], p.get("vgpu_type") or p["dev_type"]): p["count"]
            for p in s}


@pytest.fixture
def host() -> tuple[stats.PciDeviceStats, list[ty.Any]]:
    return build(inv.default_host())
