"""The test-only fault hook: free when unset, strict about point names.

That an armed point really kills is what ``tests/fault`` relies on (every
kill at a named point there is one).
"""

from __future__ import annotations

import pathlib
import re

import pytest

from pci_vgpu import fault

PACKAGE = pathlib.Path(fault.__file__).parent


def test_unset_it_does_nothing(monkeypatch):
    monkeypatch.delenv(fault.ENV, raising=False)
    fault.point("create:claimed")
    fault.point("not a point at all")  # not even checked: one dict lookup


def test_armed_an_unknown_point_is_a_bug(monkeypatch):
    monkeypatch.setenv(fault.ENV, "delete:destroyed")
    with pytest.raises(fault.UnknownFaultPoint, match="typo:point"):
        fault.point("typo:point")
    fault.point("create:claimed")  # known, not armed: returns


def test_every_point_the_code_names_is_listed_and_every_listed_point_is_used():
    used = set()
    for path in PACKAGE.rglob("*.py"):
        used.update(re.findall(r'fault\.point\(\s*"([^"]+)"', path.read_text()))
    assert used <= set(fault.POINTS)
    # service._prepare_all gets its point as an argument
    assert set(fault.POINTS) - used == {"create:vgpu-prepared"}
