"""Tests for pci_vgpu.vgpu_types, the objects-free vGPU type rules."""

from __future__ import annotations

import json
import subprocess
import sys
import typing as ty

import hypothesis
from hypothesis import strategies as st
import pytest

from pci_vgpu import exception
from pci_vgpu import request
from pci_vgpu import vgpu_types


def test_importable_without_objects_or_versionedobjects() -> None:
    # The Nova series imports this module inside Nova, where a second
    # oslo.versionedobjects registry (pci_vgpu.objects) would clash.
    code = ("import sys, pci_vgpu.vgpu_types; "
            "print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], check=True,
                         capture_output=True, text=True).stdout.split()
    assert "pci_vgpu.vgpu_types" in out
    assert not [m for m in out if m.startswith("pci_vgpu.objects")]
    assert not [m for m in out if m.startswith("oslo_versionedobjects")]


def test_request_reexports_the_same_functions() -> None:
    # One implementation: pci_vgpu.request must not keep its own copy.
    for name in ("validate_vgpu_type_name", "encode_vgpu_types",
                 "vgpu_types_of", "VGPU_TYPES_TAG"):
        assert getattr(request, name) is getattr(vgpu_types, name)


@pytest.mark.parametrize("top,nested,expected", [
    (None, None, set()),
    ("nvidia-222", None, {"nvidia-222"}),
    (["nvidia-223", "nvidia-222"], None, {"nvidia-222", "nvidia-223"}),
    (None, ["nvidia-222", "nvidia-222"], {"nvidia-222"}),
    (None, "GRID T4-2Q", {"GRID T4-2Q"}),
    ("nvidia-222", ["nvidia-222"], {"nvidia-222"}),
    (["b", "a"], ["a", "b", "a"], {"a", "b"}),
])
def test_merge_spellings(top: ty.Any, nested: ty.Any,
                         expected: set[str]) -> None:
    assert vgpu_types.merge_alias_vgpu_types(top, nested) == expected


def test_merge_disagreeing_spellings_names_both() -> None:
    with pytest.raises(vgpu_types.VgpuTypesConflict) as err:
        vgpu_types.merge_alias_vgpu_types("nvidia-222", ["nvidia-223"])
    assert err.value.key == "capabilities.vgpu_types"
    assert err.value.value == ["nvidia-223"]
    assert "'nvidia-222'" in str(err.value)
    assert "'nvidia-223'" in str(err.value)
    assert "give the types once" in str(err.value)


@pytest.mark.parametrize("top,nested,key,bad", [
    ("../x", None, "vgpu_types", "../x"),
    (["nvidia-222", "a/b"], None, "vgpu_types", "a/b"),
    (None, ["ok", "nvidia..1"], "capabilities.vgpu_types", "nvidia..1"),
    (None, "bad\nname", "capabilities.vgpu_types", "bad\nname"),
    (["ok", 7], None, "vgpu_types", 7),
    # a bad name is reported even when the spellings also disagree
    ("x", ["..y"], "capabilities.vgpu_types", "..y"),
])
def test_merge_refuses_bad_names(top: ty.Any, nested: ty.Any, key: str,
                                 bad: ty.Any) -> None:
    with pytest.raises(vgpu_types.VgpuTypeNameInvalid) as err:
        vgpu_types.merge_alias_vgpu_types(top, nested)
    assert (err.value.key, err.value.value) == (key, bad)
    assert repr(bad) in str(err.value)
    assert "allowed:" in err.value.reason
    assert isinstance(err.value.__cause__, exception.InvalidVgpuTypeName)


@pytest.mark.parametrize("top,nested", [
    ([], None), (None, []), (5, None), (None, {"a": 1}), (("a",), None),
])
def test_merge_refuses_malformed_values(top: ty.Any, nested: ty.Any) -> None:
    with pytest.raises(vgpu_types.VgpuTypesMalformed) as err:
        vgpu_types.merge_alias_vgpu_types(top, nested)
    assert "non-empty list" in str(err.value)
    assert repr(top if top is not None else nested) in str(err.value)


def test_errors_are_one_invalid_family() -> None:
    for cls in (vgpu_types.VgpuTypesMalformed,
                vgpu_types.VgpuTypeNameInvalid,
                vgpu_types.VgpuTypesConflict):
        assert issubclass(cls, vgpu_types.VgpuTypesInvalid)
    assert issubclass(vgpu_types.VgpuTypesInvalid, exception.Invalid)


def test_encode_is_sorted_and_deduplicated() -> None:
    assert vgpu_types.encode_vgpu_types(["b", "a", "b"]) == '["a", "b"]'
    assert vgpu_types.encode_vgpu_types([]) == "[]"


_NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 _:,+\-@()]{0,20}",
                       fullmatch=True)


@hypothesis.given(st.lists(_NAMES, min_size=1, max_size=6))
def test_encode_then_decode_round_trips(names: list[str]) -> None:
    for name in names:
        assert vgpu_types.validate_vgpu_type_name(name) == name
    spec = {"vgpu_types": vgpu_types.encode_vgpu_types(names)}
    assert vgpu_types.vgpu_types_of(spec) == frozenset(names)
    assert json.loads(spec["vgpu_types"]) == sorted(set(names))
    assert vgpu_types.merge_alias_vgpu_types(
        names, list(reversed(names))) == frozenset(names)


@pytest.mark.parametrize("raw", ["nvidia-222", '{"a": 1}', "[1]", "null"])
def test_decode_refuses_non_lists(raw: str) -> None:
    with pytest.raises(exception.InvalidVgpuTypesSpec) as err:
        vgpu_types.vgpu_types_of({"vgpu_types": raw})
    assert repr(raw) in str(err.value)


def test_decode_of_non_vgpu_spec_is_empty() -> None:
    assert vgpu_types.vgpu_types_of({"vendor_id": "10de"}) == frozenset()
